"""Evaluation tasks: glue between a trained run, the stores of an evaluation dataset and the pure metrics.

Each registered task takes a finished run and named options, finds the stores of the evaluation dataset
for the run's backbones (`<data-dir>/stores/<dataset>/<backbone>.h5`; by default the dataset the run was
trained on), passes them through the head, calls the pure metric functions of `embedcache.evaluate` and
returns flat metrics plus a small `info` dict saying how it was run. `evaluate_run` records both in the
run's JSON. Frozen-backbone baselines are computed beside the head where they are defined: the raw text
stores for STS and pair classification (keys `raw_<backbone>_...`), a linear probe on the raw image store
for the probe and fine-tuning tasks (`raw_probe_...`). For image-text retrieval and zero-shot the baseline
is a `convirt-frozen` run, evaluated like any other run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedcache import evaluate as ev
from embedcache.devices import resolve_device
from embedcache.errors import BadInputError
from embedcache.fusion.export import encode_view
from embedcache.fusion.heads import Head
from embedcache.fusion.runs import Run, open_run
from embedcache.fusion.train import capped_rows, store_splits
from embedcache.fusion.views import View, gather_two, load_view
from embedcache.paths import store_path
from embedcache.registry import Registry

TaskResult = tuple[dict[str, float], dict[str, Any]]
TASKS: Registry[Callable[..., TaskResult]] = Registry("evaluation task")


class Context:
    """A run's head plus where its evaluation stores are; loads views and head outputs on demand."""

    def __init__(self, run: Run, dataset: str | None, data_dir: str | Path | None, device: str | None,
                 ram_budget: int | None = None) -> None:
        self.run, self.data_dir, self.ram_budget = run, data_dir, ram_budget
        self.dataset = dataset or run.inputs[0]["dataset"]
        self.device = resolve_device(device)
        self.head: Head = run.load_head(self.device)

    def side(self, modality: str, nth: int = 0) -> int:
        """Index of the nth head input of this modality ('image'/'text'); text-text runs have two text sides."""
        found = [i for i, x in enumerate(self.run.inputs) if x["modality"] == modality]
        if len(found) <= nth:
            raise BadInputError(f"run {self.run.id} has no {modality} input #{nth}; its inputs are "
                                f"{[(x['backbone'], x['modality']) for x in self.run.inputs]}")
        return found[nth]

    def path(self, m: int, dataset: str | None = None) -> Path:
        return store_path(dataset or self.dataset, self.run.inputs[m]["backbone"], self.data_dir)

    def view(self, m: int, split: str, dataset: str | None = None, raw: bool = False) -> View:
        return load_view(self.path(m, dataset), split, tokens=False if raw else bool(self.run.inputs[m]["tokens"]),
                         ram_budget=self.ram_budget)

    def encode(self, m: int, view: View, rows: np.ndarray | None = None) -> torch.Tensor:
        """Head side m over the view's rows (all, or `rows` in their order) -> (N, d) fp32."""
        return encode_view(self.head, m, view, rows=rows, device=self.device)


def evaluate_run(run: str | Path | Run, task: str, *, dataset: str | None = None, data_dir: str | Path | None = None,
                 device: str | None = None, runs_root: str | Path | None = None, record: bool = True,
                 ram_budget: int | None = None, **options: Any) -> dict[str, float]:
    """Run the registered evaluation `task` on `run` (an id, a path or a Run) and record it in its run.json.

    dataset: evaluation dataset whose stores (for the run's backbones) are read; default: the training one.
    ram_budget: bytes of token arrays held whole; larger ones are streamed (embedcache.fusion.views).
    The metrics are stored under the task name, suffixed `@<dataset>` for another dataset.
    """
    run = run if isinstance(run, Run) else open_run(run, runs_root)
    ctx = Context(run, dataset, data_dir, device, ram_budget)
    fn = TASKS.get(task)
    chosen = default_split(ctx, fn) if "split" not in options else None
    metrics, info = fn(ctx, **options, **({"split": chosen} if chosen else {}))
    if chosen:
        info = {**info, "split": chosen, "split_chosen": f"no split given: {chosen!r} "
                f"({'the test split' if chosen == 'test' else 'the stores have no test split'})"}
    if record:
        run.add_metrics(metrics_key(task, ctx.dataset, run.inputs[0]["dataset"]), metrics,
                        {"task": task, "dataset": ctx.dataset, **info})
    return metrics


def default_split(ctx: Context, task: Callable[..., TaskResult]) -> str | None:
    """For a task whose `split` defaults to 'test': 'test' when every evaluation store has it, else 'val' when
    every one has that (COCO, and any layout with train/val only); None leaves the task's own default."""
    param = inspect.signature(task).parameters.get("split")
    if param is None or param.default != "test":
        return None
    paths = [ctx.path(m) for m in range(len(ctx.run.inputs))]
    if not all(p.exists() for p in paths):
        return None  # the task names the missing store
    splits = [set(store_splits(p)) for p in paths]
    for name in ("test", "val"):
        if all(name in have for have in splits):
            return name
    return None


def metrics_key(task: str, dataset: str, trained_on: str) -> str:
    """The metric group of `task` in a run's JSON: the task name, suffixed `@<dataset>` for another dataset than
    the one the run was trained on."""
    return task if dataset in ("", trained_on) else f"{task}@{dataset}"


@TASKS.register("retrieval")
def retrieval(ctx: Context, *, split: str = "test", ks: tuple[int, ...] = (1, 5, 10),
              hit_ks: tuple[int, ...] = ev.DEFAULT_HIT_KS) -> TaskResult:
    """Image->text and text->image retrieval on `split`: captions link to their image by id."""
    mi, mt = ctx.side("image"), ctx.side("text")
    images, texts = ctx.view(mi, split), ctx.view(mt, split)
    if texts.links is None:
        raise BadInputError(f"split {split!r} of {texts.path} has no caption -> image links; retrieval needs them")
    metrics, info = linked_retrieval(ctx.encode(mi, images), ctx.encode(mt, texts), images, texts, ks, hit_ks)
    return metrics, {"split": split, **info}


def linked_retrieval(ei: torch.Tensor, et: torch.Tensor, images: View, texts: View, ks: tuple[int, ...] = (1, 5, 10),
                     hit_ks: tuple[int, ...] = ev.DEFAULT_HIT_KS) -> TaskResult:
    """Retrieval both ways between image vectors ei (I, d) and caption vectors et (T, d), rows of `images` and
    `texts`, a caption's positive being the image it links to; captions whose image is absent are left out.
    The `retrieval` task on a head's outputs, and the validation headline's baseline on the raw stores."""
    keep = np.isin(texts.links, images.ids)  # captions whose image is in the image store
    et, links = et[torch.from_numpy(keep)], texts.links[keep]
    i2t = ev.retrieval_metrics(ei, et, ev.positives_by_key(list(images.ids), list(links)), "image_to_text", ks, hit_ks)
    has_caption = np.isin(images.ids, links)
    t2i = ev.retrieval_metrics(et, ei, ev.positives_by_key(list(links), list(images.ids)), "text_to_image", ks, hit_ks)
    return {**i2t, **t2i}, {"images": int(has_caption.sum()), "captions": int(keep.sum())}


@TASKS.register("retrieval-rows")
def retrieval_rows(ctx: Context, *, split: str = "all", ks: tuple[int, ...] = (1, 5, 10),
                   hit_ks: tuple[int, ...] = ev.DEFAULT_HIT_KS) -> TaskResult:
    """The CBMF authors' Fig. 4 protocol (text_image/downstream_task/image_retrieval/retrieval.py): one gallery
    row per caption holding its image (images repeated), each caption a query whose answer is its own row;
    prefix `text_to_image_rows`. On Flickr8k split `all`: 40,455 captions over 40,455 rows. The authors'
    script keeps only its last batch's accuracies (its dict is overwritten per batch of 100); every caption
    counts here."""
    mi, mt = ctx.side("image"), ctx.side("text")
    images, texts = ctx.view(mi, split), ctx.view(mt, split)
    if texts.links is None:
        raise BadInputError(f"split {split!r} of {texts.path} has no caption -> image links; retrieval needs them")
    answer = images.rows_of(texts.links)  # (T,) the image row of each caption, -1 when absent
    keep = answer >= 0  # captions whose image is in the image store
    counts = np.bincount(answer[keep], minlength=len(images.ids))  # (I,) gallery rows per image
    ei, et = ctx.encode(mi, images), ctx.encode(mt, texts)[torch.from_numpy(keep)]
    ranks = ev.repeated_gallery_ranks(et, ei, answer[keep], counts)
    metrics = ev.rank_metrics(ranks, int(keep.sum()), "text_to_image_rows", ks, hit_ks)
    info = {"split": split, "protocol": "cbmf-authors-rows", "captions": int(keep.sum()),
            "gallery_rows": int(keep.sum()), "images": int((counts > 0).sum())}
    return metrics, info


def _prompt_classes(view: View, num_classes: int) -> torch.Tensor:
    """Prompt rows grouped by their label (class index) -> (C, K, ...) index tensor; K equal for all classes."""
    labels = np.asarray(view.labels)
    groups = [np.flatnonzero(labels == c) for c in range(num_classes)]
    if len({len(g) for g in groups}) != 1 or not len(groups[0]):
        raise BadInputError(f"the prompt store {view.path} must hold the same number (>0) of prompts for each of the "
                            f"{num_classes} classes; found {[len(g) for g in groups]}")
    return torch.from_numpy(np.stack(groups))


@TASKS.register("zero-shot")
def zero_shot(ctx: Context, *, split: str = "test", prompt_store: str | Path | None = None,
              prompt_split: str = "prompts", topk: tuple[int, ...] = (1, 2, 3, 4, 5)) -> TaskResult:
    """Zero-shot classification of the images of `split` by class-name prompts through the text side.

    The prompts are a text store made by stage one (default `<data-dir>/stores/<dataset>-prompts/<text
    backbone>.h5`, split `prompts`): one item per (class, template), label = class index.
    """
    mi, mt = ctx.side("image"), ctx.side("text")
    images = ctx.view(mi, split)
    path = Path(prompt_store) if prompt_store else store_path(f"{ctx.dataset}-prompts",
                                                               ctx.run.inputs[mt]["backbone"], ctx.data_dir)
    prompts = load_view(path, prompt_split, tokens=bool(ctx.run.inputs[mt]["tokens"]), ram_budget=ctx.ram_budget)
    classes = images.attrs.get("classes") or prompts.attrs.get("classes")
    groups = _prompt_classes(prompts, len(classes))
    class_emb = ctx.encode(mt, prompts)[groups]  # (C, K, d)
    keep = np.asarray(images.labels) >= 0
    metrics = ev.zero_shot(ctx.encode(mi, images)[torch.from_numpy(keep)], class_emb, images.labels[keep], topk)
    return metrics, {"split": split, "prompt_store": str(path), "templates_per_class": int(groups.shape[1]),
                     "classes": len(classes), "images": int(keep.sum())}


def _labelled(view: View) -> np.ndarray:
    if view.labels is None or np.asarray(view.labels).ndim != 1:
        raise BadInputError(f"{view.path} split {view.split!r} needs single-label classes for a probe; "
                            f"found {None if view.labels is None else np.asarray(view.labels).shape}")
    return np.flatnonzero(np.asarray(view.labels) >= 0)


@TASKS.register("linear-probe")
def linear_probe(ctx: Context, *, train_split: str = "train", split: str = "test", epochs: int = 100,
                 log_at: tuple[int, ...] = (20, 40, 60, 80, 100), seed: int = 0, baseline: bool = True,
                 **probe_options: Any) -> TaskResult:
    """Linear probe on the frozen head outputs of the image side; baseline: the same probe on the raw store."""
    mi = ctx.side("image")
    metrics: dict[str, float] = {}
    for raw in (False, True) if baseline else (False,):
        tr, te = ctx.view(mi, train_split, raw=raw), ctx.view(mi, split, raw=raw)
        a, b = _labelled(tr), _labelled(te)
        xtr, xte = (tr.pooled, te.pooled) if raw else (ctx.encode(mi, tr), ctx.encode(mi, te))
        cfg = ev.ProbeCfg(epochs=epochs, log_at=log_at, seed=seed, prefix="raw_probe" if raw else "probe",
                          **probe_options)
        metrics.update(ev.linear_probe(xtr[a], tr.labels[a], xte[b], te.labels[b], cfg))
    return metrics, {"train_split": train_split, "split": split, "epochs": epochs, "seed": seed}


@TASKS.register("finetune")
def finetune(ctx: Context, *, train_split: str = "train", split: str = "test", epochs: int = 100,
             log_at: tuple[int, ...] = (20, 40, 60, 80, 100), seed: int = 0, baseline: bool = True,
             **finetune_options: Any) -> TaskResult:
    """Fine-tune the image side of the head (projection, context, fusion encoder) with a linear classifier;
    baseline: a linear probe on the raw image store."""
    mi = ctx.side("image")
    tr, te = ctx.view(mi, train_split), ctx.view(mi, split)
    a, b = _labelled(tr), _labelled(te)
    a = a[: capped_rows(len(a), int(finetune_options.get("batch_size", 64)))]  # all, unless under a step cap
    collate = gather_two(tr.to(ctx.device), te.to(ctx.device))  # inputs are row numbers, te's after tr's
    rows_tr = torch.from_numpy(a).to(ctx.device)
    rows_te = torch.from_numpy(b + len(tr)).to(ctx.device)
    cfg = ev.ProbeCfg(epochs=epochs, log_at=log_at, seed=seed, **{"prefix": "finetune", **finetune_options})
    metrics = ev.finetune(ctx.head.encoder(mi), rows_tr, tr.labels[a], rows_te, te.labels[b], cfg, collate=collate)
    if baseline:
        rtr, rte = ctx.view(mi, train_split, raw=True), ctx.view(mi, split, raw=True)
        raw_cfg = ev.ProbeCfg(epochs=epochs, log_at=log_at, seed=seed, prefix="raw_probe")
        metrics.update(ev.linear_probe(rtr.pooled[a], rtr.labels[a], rte.pooled[b], rte.labels[b], raw_cfg))
    return metrics, {"train_split": train_split, "split": split, "epochs": epochs, "seed": seed,
                     "train_rows": len(a)}


def _pair_scores(ctx: Context, split: str, dataset: str | None, sides: tuple[int, int] | None,
                 max_pairs: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    """Cosines of the split's text pairs through the head (a via side 0, b via side 1) and through each raw
    text store; plus the gold scores. max_pairs: a seeded sample of at most that many pairs (in split order),
    and only their texts go through the head."""
    texts = [i for i, x in enumerate(ctx.run.inputs) if x["modality"] == "text"]
    a_side, b_side = sides or (texts[0], texts[-1])
    va, vb = ctx.view(a_side, split, dataset), ctx.view(b_side, split, dataset)
    if va.pairs is None:
        raise BadInputError(f"split {split!r} of {va.path} holds no text pairs; pick a dataset/split with pairs")
    a_ids, b_ids, gold = (np.asarray(x) for x in va.pairs)
    if max_pairs is not None and len(gold) > max_pairs:
        keep = np.sort(np.random.default_rng(0).choice(len(gold), max_pairs, replace=False))
        a_ids, b_ids, gold = a_ids[keep], b_ids[keep], gold[keep]
    ra, rb = va.rows_of(a_ids), vb.rows_of(b_ids)
    if (ra < 0).any() or (rb < 0).any():
        raise BadInputError(f"{int((ra < 0).sum() + (rb < 0).sum())} pair ids are missing from the stores of {split!r}")
    scores = {"": ev.paired_cosine(ctx.encode(a_side, va, ra), ctx.encode(b_side, vb, rb)).numpy()}
    ra, rb = torch.from_numpy(ra), torch.from_numpy(rb)
    for m in dict.fromkeys((a_side, b_side)):  # raw baselines: both texts through the same frozen backbone
        raw = ctx.view(m, split, dataset, raw=True)
        scores[f"raw_{ctx.run.inputs[m]['backbone']}"] = ev.paired_cosine(
            raw.pooled[torch.from_numpy(raw.rows_of(a_ids))], raw.pooled[torch.from_numpy(raw.rows_of(b_ids))]).numpy()
    return scores, gold.astype(np.float64), {"split": split, "sides": [a_side, b_side], "pairs": len(gold)}


@TASKS.register("sts")
def sts(ctx: Context, *, split: str = "test", sides: tuple[int, int] | None = None, cosine_map: str = "unit",
        clip: bool = False, **sts_options: Any) -> TaskResult:
    """STS: cosine of each graded pair mapped to 0..5 (`cosine_map`), correlations and tolerance accuracies."""
    scores, gold, info = _pair_scores(ctx, split, None, sides)
    metrics: dict[str, float] = {}
    for name, cos in scores.items():
        pred = ev.cosine_to_sts(cos, cosine_map, clip)
        metrics.update(ev.sts_metrics(pred, gold, prefix=f"{name}_sts" if name else "sts", **sts_options))
    return metrics, {**info, "cosine_map": cosine_map, "clip": clip}


@TASKS.register("pair-classification")
def pair_classification(ctx: Context, *, split: str = "test", threshold_split: str = "train",
                        threshold_pairs: int | None = None, sides: tuple[int, int] | None = None,
                        label_threshold: float | None = None) -> TaskResult:
    """Paraphrase-style pairs: a cosine threshold chosen on `threshold_split` (never the test split), applied on
    `split`; per-class metrics and the majority-class floor. threshold_pairs: choose it on a seeded sample of
    that many pairs (QQP's 364k training pairs would otherwise all go through the head; None: every pair).
    label_threshold turns graded scores into 0/1."""
    if threshold_split == split:
        raise BadInputError(f"the threshold must come from training or validation pairs, not the evaluated split "
                            f"{split!r}; pass threshold_split='train' or 'val'")
    fit_scores, fit_gold, fit_info = _pair_scores(ctx, threshold_split, None, sides, threshold_pairs)
    scores, gold, info = _pair_scores(ctx, split, None, sides)
    fit_y, y = _binary(fit_gold, label_threshold), _binary(gold, label_threshold)
    metrics: dict[str, float] = {}
    for name, cos in scores.items():
        threshold = ev.choose_threshold(fit_scores[name], fit_y)
        metrics.update(ev.pair_classification(cos, y, threshold, prefix=f"{name}_pairs" if name else "pairs"))
    return metrics, {**info, "threshold_split": threshold_split, "threshold_pairs": fit_info["pairs"],
                     "label_threshold": label_threshold}


def _binary(gold: np.ndarray, label_threshold: float | None) -> np.ndarray:
    if label_threshold is not None:
        return (gold >= label_threshold).astype(np.int64)
    if not np.isin(gold, (0, 1)).all():
        raise BadInputError("pair scores are graded, not 0/1 labels; pass label_threshold (e.g. 4.0) to binarise them")
    return gold.astype(np.int64)
