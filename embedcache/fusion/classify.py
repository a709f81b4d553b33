"""Stage two for classifier heads: labelled stores -> a trained classifier head -> one run with its metrics.

`fit_classifier`, the registered trainer `classify`, is the counterpart of `train.fit_alignment` and shares its loop
(`fit`: AdamW, ReduceLROnPlateau, early stopping on the validation loss, best weights kept), its store
checks and its run format. What it adds: labels read from the stores (the first input store that has
them, joined by id), `num_classes`/`label_kind` set on the head from them, the head's closed-form parts
fitted on the training rows only (`head.prepare`, e.g. PCA), two-phase heads (`head.phases`), and the
evaluation of the best weights on the validation and test splits (accuracy, P/R/F1 as the papers report
them; see `evaluate_probs`). The training never reads a test label.

Stores of several modalities are joined with the `multi-links` pairing (embedcache.fusion.views): captions
(items with links) are matched by id with the first linked store, images through the links, so one image is
repeated over its captions; stores without links (MVSA, MMSD, one image store) are matched by id. Its
default settings (`shapes-classify`, ...) are registered with the others in embedcache.fusion.settings.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedcache.devices import resolve_device
from embedcache.errors import BadInputError
from embedcache.evaluate import binary_metrics, multilabel_metrics, single_label_metrics
from embedcache.fingerprint import to_plain
from embedcache.fusion.export import ExportCfg, embed
from embedcache.fusion.heads import HEADS, HeadSpec, create_head
from embedcache.fusion.heads import clfa as _clfa  # noqa: F401  registers clfa and cross-attention
from embedcache.fusion.heads.mlp import PCA_SWEEP, ClassifierHead, PCADimsError, classifier_names
from embedcache.fusion.jobs import TRAINERS, DataSpec, TrainCfg, Trainer, TrainJob
from embedcache.fusion.pairings import join
from embedcache.fusion.runs import Run, save_run
from embedcache.fusion.settings import SettingSpec
from embedcache.fusion.train import (
    FitResult,
    check_stores,
    find_or_seed,
    fit,
    fit_summary,
    head_doc,
    holdout,
    inputs_key,
    run_inputs,
    say_streamed,
    store_splits,
)
from embedcache.fusion.views import PairData, View, load_view
from embedcache.registry import Registry

VAL_SPLITS = ("val", "valid", "validation", "dev")  # MMSD publishes `valid`
EVAL_BATCH = 1024


class LabelsMissingError(BadInputError):
    """None of the input stores holds labels for a split."""


# ---------------------------------------------------------------- loading labelled data


def find_val_split(paths: Sequence[Path], val_split: str | None) -> str | None:
    """`val_split` if every store has it, else (when not named) the first of VAL_SPLITS they all have."""
    common = set.intersection(*(set(store_splits(p)) for p in paths))
    candidates = (val_split,) if val_split else VAL_SPLITS
    return next((s for s in candidates if s in common), None)


def row_labels(views: Sequence[View], rows: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels of joined rows (P, M) from the first view that has labels, and that view's position."""
    for m, view in enumerate(views):
        if view.labels is not None:
            return np.asarray(view.labels)[rows[:, m]], m
    names = ", ".join(f"{v.path}:{v.split}" for v in views)
    raise LabelsMissingError(f"none of the stores {names} holds labels; classifier heads need a labelled dataset "
                             "(re-extract it, e.g. `embedcache extract shapes --model minilm --force`)")


def load_labelled(paths: Sequence[Path], split: str, *, pairing: str = "multi-links",
                  tokens: Sequence[bool | None] | None = None, ram_budget: int | None = None) -> PairData:
    """One split of every store in RAM, joined by id, with per-row labels; rows without a label are dropped.

    tokens: per store True/False/None (None: tokens when stored); default pooled vectors only. Token arrays
    above `ram_budget` bytes (default: a share of the free RAM) are streamed (embedcache.fusion.views).
    """
    tokens = list(tokens) if tokens is not None else [False] * len(paths)
    views = [load_view(p, split, tokens=t, ram_budget=ram_budget) for p, t in zip(paths, tokens, strict=True)]
    data = join(views, pairing)
    rows = data.rows.numpy()
    labels, _ = row_labels(views, rows)
    keep = labels >= 0 if labels.ndim == 1 else np.ones(len(labels), bool)  # -1: unlabelled item
    data = PairData(views, torch.from_numpy(np.ascontiguousarray(rows[keep])),
                    torch.from_numpy(np.ascontiguousarray(labels[keep])), dropped=data.dropped + int((~keep).sum()))
    return data


def label_info(data: PairData) -> tuple[str, list[str]]:
    """("single" or "multi", class names) of labelled data; names from the labelled store's `classes` attr."""
    _, m = row_labels(data.views, data.rows.numpy()[:1])
    kind = "multi" if data.labels.ndim == 2 else "single"
    classes = [str(c) for c in (data.views[m].attrs.get("classes") or [])]
    count = int(data.labels.shape[1]) if kind == "multi" else int(data.labels.max()) + 1
    if len(classes) < count:
        classes = [str(c) for c in range(count)]
    return kind, classes


# ---------------------------------------------------------------- prediction and evaluation


@torch.no_grad()
def predict_proba(head: ClassifierHead, data: PairData, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Class probabilities (P, C) of every row of `data`, in row order, eval mode."""
    head.eval()
    order, chunks = [], []
    for idx in data.epoch(batch_size):  # in row order, or block by block when tokens are streamed
        order.append(idx.cpu())
        chunks.append(head.predict_proba(data.batch(idx)).float().cpu())
    probs = torch.cat(chunks)
    probs[torch.cat(order)] = probs.clone()
    return probs.numpy()


def _single(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    out = single_label_metrics(probs, labels)
    if probs.shape[1] == 2:  # MMSD: precision/recall/F1 of the positive class beside the macro ones
        out.update(binary_metrics(probs, labels))
    return out


def _multi(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    return multilabel_metrics(probs, labels, class_names=list(classes))


METRICS: Registry = Registry("classification metric set")
METRICS.register("single", _single)
METRICS.register("multi", _multi)


def evaluate_probs(probs: np.ndarray, labels: np.ndarray, label_kind: str, classes: Sequence[str]
                   ) -> dict[str, float]:
    """Flat metrics of probabilities (N, C) against labels: single-label `acc`, macro P/R/F1, `weighted_f1`
    (plus positive-class `precision`/`recall`/`f1` for two classes); multi-label subset accuracy, sample/
    micro/macro F1 and the per-category scores (see embedcache.evaluate.classification)."""
    return METRICS.get(label_kind)(np.asarray(probs), np.asarray(labels), classes)


# ---------------------------------------------------------------- training


def _fit_phases(model: ClassifierHead, train: PairData, val: PairData, cfg: TrainCfg, progress: bool
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`fit` once per phase of the head; the history rows carry the phase name."""
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for phase in model.phases:
        model.set_phase(phase)
        result: FitResult = fit(model, train, val, cfg, progress=progress)
        history += [{**row, "phase": phase} for row in result.history]
        summary[phase] = {**fit_summary(result), "train_s": result.train_seconds}
    return history, summary


def _resolve(job: TrainJob) -> tuple[SettingSpec, DataSpec]:
    cls = HEADS.get(job.head)
    if getattr(cls, "task", None) != "classify":
        raise BadInputError(f"head {job.head!r} is not a classifier; train it with `embedcache train {job.head}`. "
                            f"Classifier heads: {', '.join(classifier_names())}")
    return job.data.resolve(cls.setting_for(job.head))


def _token_plan(head: str, n: int, tokens: bool | None) -> list[bool | None]:
    """Per input store: the head's wish (False: pooled), overridden by `tokens` where the head allows tokens."""
    wish = HEADS.get(head).token_inputs(n)
    return [w if w is False or tokens is None else tokens for w in wish]


@dataclasses.dataclass
class _Labelled:
    """The loaded data of a classifier job: train and validation rows, the loader of any split, and facts."""

    paths: list[Path]
    load: Any  # split name -> PairData
    train: PairData
    val: PairData
    info: dict[str, Any]  # train/val rows and splits, pairing: part of the run id
    load_seconds: float


def _load_labelled(job: TrainJob, data: DataSpec) -> _Labelled:
    plan = _token_plan(job.head, len(data.backbones), data.tokens)
    paths = check_stores(job.head, data.dataset, data.backbones, job.run.data_dir,
                         any(t is not False for t in plan) or None)
    t0 = time.perf_counter()
    load = functools.partial(load_labelled, paths, pairing=data.pairing, tokens=plan, ram_budget=data.ram_budget)
    train_data = load(data.train_split)
    val_name = find_val_split(paths, data.val_split)
    if val_name is not None:
        val_data, val_info = load(val_name), {"split": val_name}
    else:
        train_data, val_data = holdout(train_data, data.val_fraction, job.cfg.seed)
        val_info = {"held_out_from": data.train_split, "fraction": data.val_fraction}
    info = {"train": {"split": data.train_split, "rows": len(train_data), "dropped": train_data.dropped},
            "val": {**val_info, "rows": len(val_data)}, "pairing": data.pairing}
    return _Labelled(paths, load, train_data, val_data, info, time.perf_counter() - t0)


def _test_metrics(model: ClassifierHead, d: _Labelled, test_split: str | None, label: tuple[str, list[str]],
                  dev: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Metrics on the test split (read only now, after training) and what was read; None when there is none."""
    if not test_split or not all(test_split in store_splits(p) for p in d.paths):
        return None, {"split": None}
    test = d.load(test_split).to(dev)
    return evaluate_probs(predict_proba(model, test), test.labels.cpu().numpy(), *label), \
        {"split": test_split, "rows": len(test)}


def fit_classifier(job: TrainJob) -> dict[str, Run]:
    """Train the classifier head `job.head` on labelled stores and write its run: {"": Run}.

    Unset data fields come from the head's default setting (`mlp-concat`: `shapes`, effnet-lite0 + minilm).
    Labels come from the first input store that has them; `num_classes` and `label_kind` are set from them
    (override through `job.options`). val_split None: the first of val/valid/validation/dev that every store
    has, else `val_fraction` of the training groups is held out. The head's `prepare` sees the training rows
    only. Metrics of the best weights land under `metrics.val` and `metrics.test` (test_split None or absent:
    no test metrics). An identical finished run is returned without retraining unless `job.run.force`.
    """
    st, data = _resolve(job)
    d = _load_labelled(job, data)
    kind, classes = label_info(d.train)
    views = d.train.views
    spec = HeadSpec.create(job.head, [v.dim for v in views], [v.attrs.get("modality", "") for v in views],
                           **{"num_classes": len(classes), "label_kind": kind, **job.options})
    cfg = dataclasses.replace(job.cfg, drop_last=False)  # a classifier loses nothing from a small last batch
    key = {"head": spec, "train": cfg, "inputs": inputs_key(d.train), "data": d.info, "test": data.test_split}
    run_id, done = find_or_seed(job.head, key, seed=cfg.seed, force=job.run.force, runs_root=job.run.runs_root)
    if done is not None:
        return {"": done}
    dev = resolve_device(job.run.device)
    model: ClassifierHead = create_head(spec)
    model.prepare(d.train)  # closed-form parts (PCA) from the training rows, before anything moves
    model.to(dev)
    if job.run.progress:
        say_streamed(d.train, d.val)
    history, summary = _fit_phases(model, d.train.to(dev), d.val.to(dev), cfg, job.run.progress)
    metrics = {"train": _flat_summary(summary),
               "val": evaluate_probs(predict_proba(model, d.val), d.val.labels.cpu().numpy(), kind, classes)}
    test, test_info = _test_metrics(model, d, data.test_split, (kind, classes), dev)
    metrics.update({"test": test} if test is not None else {})
    record = {
        "run_id": run_id, "task": "classify", "head": spec, "head_cfg": asdict(model.cfg), "train": cfg,
        "seed": cfg.seed, "setting": st.name if job.data.setting or data.dataset == st.dataset else None,
        "inputs": run_inputs(d.train), "data": {**d.info, "test": test_info}, "classes": classes, "label_kind": kind,
        "device": str(dev), "parameters": sum(p.numel() for p in model.parameters()), "metrics": metrics,
        "history": history,
        "timings": {"load_s": d.load_seconds, "train_s": sum(s["train_s"] for s in summary.values())},
    }
    return {"": save_run(to_plain(record), model, job.run.runs_root)}


def _flat_summary(summary: dict[str, dict[str, float]]) -> dict[str, float]:
    """Phase summaries as flat floats: the last phase unprefixed, earlier ones as `<phase>_<key>`."""
    phases = list(summary)
    out = {k: float(v) for k, v in summary[phases[-1]].items()}
    for phase in phases[:-1]:
        out.update({f"{phase}_{k}": float(v) for k, v in summary[phase].items()})
    return out


def pca_sweep(job: TrainJob, dims: Sequence[int] = PCA_SWEEP) -> list[Run]:
    """One `pca-concat` run of `job` per PCA size in `dims` (sizes above an input's dimension are skipped)."""
    runs = []
    for k in dims:
        try:
            sized = dataclasses.replace(job, head="pca-concat", options={**job.options, "pca_dims": int(k)})
            runs.append(fit_classifier(sized)[""])
        except PCADimsError:
            continue  # more dimensions than an input store has
    return runs


TRAINERS.register("classify", Trainer("classify", fit_classifier, classifier_names,
                                      lambda name: HEADS.get(name).setting_for(name), head_doc))


# ---------------------------------------------------------------- a trained head's outputs as stores (teachers)


def write_head_stores(run: Run, *, names: Sequence[str], dataset: str | None = None,
                      data_dir: str | Path | None = None, splits: Sequence[str] | None = None, force: bool = False
                      ) -> list[Path]:
    """Each input modality of a trained alignment head (e.g. a CBMF run) through the head, written by
    `embedcache.fusion.export.embed` as the pooled store `<dataset>/<names[m]>.h5` (items, labels and links copied;
    model_id `run:<run id>`): an aligned teacher for `clfa` when no CLIP weights are at hand."""
    if len(names) != len(run.inputs):
        raise BadInputError(f"run {run.id} has {len(run.inputs)} inputs; got {len(names)} names {list(names)}")
    return [embed(run, store=inp["path"], data_dir=data_dir, cfg=ExportCfg(
                modality=m, name=name, dataset=dataset, splits=None if splits is None else tuple(splits), force=force))
            for m, (inp, name) in enumerate(zip(run.inputs, names, strict=True))]
