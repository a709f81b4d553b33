"""Late fusion of per-modality classifiers (the MVSA-Single late-fusion paper), weights from validation only.

Each modality's classifier gives probabilities P_m (N, C); a weighting W (M, C) fuses them into
P = sum_m W[m, c] * P_m[:, c], renormalised per row (argmax unchanged). The weightings are pure functions of
validation probabilities and labels, registered in LATE_FUSIONS:
- `late-average`: W = 1/M (soft voting).
- `late-detection-rate`: DR[m, c] = TP[m, c] / N (one class against the rest; the paper's
  TP / (TP + TN + FP + FN)), W = 1 - DR + alpha_c with alpha_c the class prior (optional), normalised over
  the classes of each modality as in the paper's equation (sum over j) and the authors' code
  (`normalise="classes"`), or over the modalities of each class as ../shared/seed-notes.md reads it
  (`normalise="modalities"`). The authors compute DR on the TEST set and take the priors from all 4,511 posts;
  here DR comes from validation data and the priors from the training labels.
- `late-min-loss`: W_m = s_m / sum s, s_m each modality's validation accuracy (or F1, `score`) at its
  lowest-validation-loss epoch (the classifier keeps those weights, so it is its validation score).
- `late-stacking`: a multinomial logistic regression on the concatenated validation probabilities (the
  meta-classifier the paper names as the fourth kind).
`fit_late`, the registered trainer `late-fusion`, is the orchestration: it trains (or finds) one classifier
run per store, predicts the validation and test rows joined by id, fits every weighting on validation data only
and writes one run JSON per weighting with its weights and test metrics. Test labels are read after all
fitting, for the metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedcache.errors import BadInputError
from embedcache.fusion.classify import evaluate_probs, find_val_split, fit_classifier, load_labelled, predict_proba
from embedcache.fusion.jobs import TRAINERS, DataSpec, Trainer, TrainJob
from embedcache.fusion.runs import Run, make_run_id, runs_dir, write_record
from embedcache.fusion.train import check_stores
from embedcache.fusion.views import PairData
from embedcache.registry import Registry
from embedcache.store import open_store

# ---------------------------------------------------------------- pure weightings


def fuse(probs: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """sum_m W[m, c] P_m[:, c] for probabilities P_m (N, C) and weights (M,) or (M, C); rows renormalised."""
    p = np.stack([np.asarray(x, np.float64) for x in probs])  # (M, N, C)
    w = np.asarray(weights, np.float64)
    w = w[:, None] if w.ndim == 1 else w  # (M, 1) or (M, C)
    if w.shape[0] != p.shape[0] or w.shape[1] not in (1, p.shape[2]):
        raise BadInputError(f"weights {w.shape} do not fit {p.shape[0]} modalities of {p.shape[2]} classes")
    fused = (w[:, None, :] * p).sum(axis=0)  # (N, C)
    return fused / np.clip(fused.sum(axis=1, keepdims=True), 1e-12, None)


def class_priors(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class frequencies (C,) of single labels (N,) (rows with -1 ignored)."""
    y = np.asarray(labels).ravel()
    y = y[y >= 0]
    return np.bincount(y, minlength=num_classes)[:num_classes] / max(1, len(y))


def detection_rates(probs: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """DR[m, c] = TP[m, c] / N: items of class c that modality m predicts as c, over all N items."""
    y = np.asarray(labels).ravel()
    classes = np.arange(np.asarray(probs[0]).shape[1])
    out = []
    for p in probs:
        pred = np.asarray(p).argmax(axis=1)
        tp = ((pred[None, :] == classes[:, None]) & (y[None, :] == classes[:, None])).sum(axis=1)  # (C,)
        out.append(tp / len(y))
    return np.stack(out)  # (M, C)


NORMALISATIONS: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("detection-rate normalisation")
NORMALISATIONS.register("classes", lambda raw: raw / raw.sum(axis=1, keepdims=True))  # paper eq. and code
NORMALISATIONS.register("modalities", lambda raw: raw / raw.sum(axis=0, keepdims=True))  # seed-notes reading


def detection_rate_weights(probs: Sequence[np.ndarray], labels: np.ndarray, priors: np.ndarray | None = None,
                           normalise: str = "classes") -> np.ndarray:
    """W (M, C) = normalise(1 - DR + alpha) with alpha the class priors (C,) or 0 when None."""
    raw = 1.0 - detection_rates(probs, labels)
    if priors is not None:
        raw = raw + np.asarray(priors, np.float64)[None, :]
    return NORMALISATIONS.get(normalise)(raw)


def min_loss_weights(scores: Sequence[float]) -> np.ndarray:
    """W_m = s_m / sum_m s_m from each modality's validation score at its lowest-validation-loss epoch."""
    s = np.asarray(scores, np.float64)
    if s.ndim != 1 or (s < 0).any() or s.sum() <= 0:
        raise BadInputError(f"min-loss weighting needs one non-negative validation score per modality, not all 0; "
                            f"got {s.tolist()}")
    return s / s.sum()


def score_at_best_epoch(history: Sequence[dict[str, float]], score_key: str, loss_key: str = "val_loss") -> float:
    """The `score_key` value of the history row with the lowest `loss_key` (the first such row on ties)."""
    rows = [r for r in history if loss_key in r and score_key in r]
    if not rows:
        raise BadInputError(f"no history row holds both {loss_key!r} and {score_key!r}")
    return float(min(rows, key=lambda r: r[loss_key])[score_key])


# ---------------------------------------------------------------- fitted fusions


@dataclass(frozen=True)
class FusionInputs:
    """Everything a weighting may use: validation probabilities and labels, and training-side facts."""

    val_probs: tuple[np.ndarray, ...]  # per modality (N_val, C)
    val_labels: np.ndarray  # (N_val,) int
    val_scores: tuple[float, ...] = ()  # per modality: validation score at its lowest-validation-loss epoch
    priors: np.ndarray | None = None  # (C,) class priors from the TRAINING labels; None: no alpha
    normalise: str = "classes"
    seed: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.val_probs), int(np.asarray(self.val_probs[0]).shape[1])


@dataclass
class FittedFusion:
    """A fitted weighting: (M, C) weights, or a meta-classifier for stacking."""

    method: str
    weights: np.ndarray | None = None
    stacker: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        """Fused probabilities (N, C) of per-modality probabilities (N, C) each."""
        if self.stacker is not None:
            return self.stacker.predict_proba(np.hstack([np.asarray(p, np.float64) for p in probs]))
        return fuse(probs, self.weights)

    def describe(self) -> dict[str, Any]:
        """JSON-able weights (or meta-classifier coefficients) and fitting facts."""
        out: dict[str, Any] = {"method": self.method, **self.info}
        if self.weights is not None:
            out["weights"] = np.asarray(self.weights).tolist()
        if self.stacker is not None:
            out["coef"], out["intercept"] = self.stacker.coef_.tolist(), self.stacker.intercept_.tolist()
        return out


LATE_FUSIONS: Registry[Callable[[FusionInputs], FittedFusion]] = Registry("late fusion")


@LATE_FUSIONS.register("late-average")
def _average(x: FusionInputs) -> FittedFusion:
    """Soft voting: every modality weighs 1/M."""
    m, c = x.shape
    return FittedFusion("late-average", np.full((m, c), 1.0 / m))


@LATE_FUSIONS.register("late-detection-rate")
def _detection_rate(x: FusionInputs) -> FittedFusion:
    """Weights 1 - detection rate (+ class prior) per modality and class, from validation."""
    w = detection_rate_weights(x.val_probs, x.val_labels, x.priors, x.normalise)
    info = {"detection_rates": detection_rates(x.val_probs, x.val_labels).tolist(), "normalise": x.normalise,
            "priors": None if x.priors is None else np.asarray(x.priors).tolist()}
    return FittedFusion("late-detection-rate", w, info=info)


@LATE_FUSIONS.register("late-min-loss")
def _min_loss(x: FusionInputs) -> FittedFusion:
    """Weights each modality's validation score at its lowest-validation-loss epoch."""
    m, c = x.shape
    if len(x.val_scores) != m:
        raise BadInputError(f"late-min-loss needs {m} validation scores (one per modality); got {len(x.val_scores)}")
    w = min_loss_weights(x.val_scores)
    return FittedFusion("late-min-loss", np.repeat(w[:, None], c, axis=1), info={"scores": list(x.val_scores)})


@LATE_FUSIONS.register("late-stacking")
def _stacking(x: FusionInputs) -> FittedFusion:
    """A logistic regression on the concatenated validation probabilities."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=2000, random_state=x.seed)
    model.fit(np.hstack([np.asarray(p, np.float64) for p in x.val_probs]), np.asarray(x.val_labels).ravel())
    if len(model.classes_) != x.shape[1]:
        raise BadInputError(f"late-stacking saw {len(model.classes_)} of {x.shape[1]} classes in the validation "
                            "labels; every class must occur there")
    return FittedFusion("late-stacking", stacker=model)


def fit_fusion(method: str, inputs: FusionInputs) -> FittedFusion:
    """Fit the registered weighting `method` on validation data only."""
    return LATE_FUSIONS.get(method)(inputs)


# ---------------------------------------------------------------- orchestration


DEFAULT_HEADS = {"image": "mlp-image", "text": "mlp-text"}  # per-modality classifier by store modality
DEFAULT_SETTING = "shapes-text-image"  # MiniLM captions + EfficientNet-Lite0 images of the generated `shapes`


@dataclass(frozen=True)
class LateOptions:
    """A late-fusion job's own options. methods: the weightings to fit (default: all of LATE_FUSIONS, or the
    one the command names); heads: one classifier per store (default mlp-image / mlp-text by the store's
    modality); score: the component validation metric of late-min-loss (`acc`, `macro_f1`, `weighted_f1`);
    priors: add the training class priors in late-detection-rate; normalise: see NORMALISATIONS."""

    methods: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    score: str = "acc"
    priors: bool = True
    normalise: str = "classes"

    @classmethod
    def of(cls, job: TrainJob) -> LateOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(job.options) - known):
            raise BadInputError(f"unknown late-fusion options {unknown}; known: {', '.join(sorted(known))}")
        opts = {k: tuple(v) if k in ("methods", "heads") else v for k, v in job.options.items() if v is not None}
        methods = opts.pop("methods", None) or ((job.head,) if job.head in LATE_FUSIONS else LATE_FUSIONS.names())
        for method in methods:
            LATE_FUSIONS.get(method)
        return cls(methods=tuple(methods), **opts)


def _component_runs(job: TrainJob, data: DataSpec, heads: Sequence[str], modalities: list[str]) -> list[Run]:
    """One classifier run per store of `data`, each on its own store with the job's training settings; the
    components take their own default settings (pairing, tokens), as a classifier trained alone would."""
    names = list(heads) if heads else [DEFAULT_HEADS.get(m, "mlp-text") for m in modalities]
    if len(names) != len(data.backbones):
        raise BadInputError(f"one classifier head per store: {len(data.backbones)} stores, {len(names)} heads {names}")
    own = {"setting": None, "dataset": data.dataset, "val_split": data.val_split}
    return [fit_classifier(dataclasses.replace(job, head=h, options={},
                                               data=dataclasses.replace(job.data, backbones=(b,), **own)))[""]
            for h, b in zip(names, data.backbones, strict=True)]


def _modality_probs(runs: list[Run], data: PairData) -> list[np.ndarray]:
    """Each component's probabilities on its own column of the joined rows (P, M)."""
    return [predict_proba(run.load_head(), PairData([data.views[m]], data.rows[:, m : m + 1], data.labels))
            for m, run in enumerate(runs)]


def _train_priors(paths: list[Path], split: str, num_classes: int) -> np.ndarray:
    for path in paths:
        with open_store(path) as store:
            labels = store.split(split).labels
        if labels is not None:
            return class_priors(labels, num_classes)
    raise BadInputError(f"no store among {paths} holds labels for split {split!r}")


def _late_data(job: TrainJob) -> tuple[DataSpec, list[Path], PairData]:
    """The resolved data of a late-fusion job (its validation split found), the store paths and the
    validation rows joined by id."""
    _, data = job.data.resolve(DEFAULT_SETTING)
    paths = check_stores("late-fusion", data.dataset, data.backbones, job.run.data_dir, None)
    val_name = find_val_split(paths, data.val_split)
    if val_name is None:
        raise BadInputError(f"late fusion fits its weights on a validation split, and the stores {paths} share none "
                            f"of {data.val_split or 'val/valid/validation/dev'}; extract a dataset with a validation "
                            "split")
    val = load_labelled(paths, val_name)
    if val.labels.ndim != 1:
        raise BadInputError("late-fusion weightings are defined for single-label classes; these stores are "
                            "multi-label")
    return dataclasses.replace(data, val_split=val_name), paths, val


def fit_late(job: TrainJob) -> dict[str, Run]:
    """Train one classifier per store (LateOptions.heads; stores from the job's data, else the setting, default
    `shapes-text-image`: MiniLM + EfficientNet-Lite0), fit each weighting in LateOptions.methods on the
    validation rows joined by id, and write one run per weighting (`<runs>/<method>-<hash>/run.json`: weights,
    component runs, val and test metrics). Test labels are read after all fitting. Returns {method: Run}.
    """
    lo = LateOptions.of(job)
    data, paths, val = _late_data(job)
    runs = _component_runs(job, data, lo.heads, [v.attrs.get("modality", "") for v in val.views])
    classes = runs[0].record["classes"]
    inputs = FusionInputs(tuple(_modality_probs(runs, val)), val.labels.numpy(),
                          tuple(float(r.metrics["val"][lo.score]) for r in runs),
                          _train_priors(paths, data.train_split, len(classes)) if lo.priors else None, lo.normalise,
                          job.cfg.seed)
    fitted = {m: fit_fusion(m, inputs) for m in lo.methods}  # everything fitted before any test label is read
    test = load_labelled(paths, data.test_split)
    test_probs, test_y = _modality_probs(runs, test), test.labels.numpy()
    singles = {f"test_{run.inputs[0]['backbone']}": evaluate_probs(p, test_y, "single", classes)
               for run, p in zip(runs, test_probs, strict=True)}  # each component on the same joined test rows
    options = {"score": lo.score, "priors": lo.priors, "normalise": lo.normalise, "val_split": data.val_split,
               "test_split": data.test_split, "val_rows": len(val), "test_rows": len(test)}
    out = {}
    for method, fusion in fitted.items():
        metrics = {"val": evaluate_probs(fusion.predict(inputs.val_probs), inputs.val_labels, "single", classes),
                   "test": evaluate_probs(fusion.predict(test_probs), test_y, "single", classes), **singles}
        record = {"method": method, "components": [r.id for r in runs], "inputs": [r.inputs[0] for r in runs],
                  "stores": [str(p) for p in paths], "classes": classes, "options": options,
                  "fusion": fusion.describe(), "metrics": metrics}
        out[method] = _save(record, job.run.runs_root)
    return out


def _save(record: dict[str, Any], runs_root: Path | None) -> Run:
    """Write `<runs>/<run_id>/run.json` (no checkpoint: the weights are in the JSON)."""
    run_id = make_run_id(record["method"], {"components": record["components"], "options": record["options"]})
    return write_record({"run_id": run_id, "task": "late-fusion", **record}, runs_dir(runs_root))


def _weighting_doc(name: str) -> str:
    doc = (LATE_FUSIONS.get(name).__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


TRAINERS.register("late-fusion", Trainer("late-fusion", fit_late, LATE_FUSIONS.names, lambda name: DEFAULT_SETTING,
                                         _weighting_doc))
