"""Classification metrics for the fusion heads: single-label, binary (MMSD) and multi-label (COCO).

Conventions follow scikit-learn with zero_division=0: a precision, recall or F1 whose denominator is
zero is 0.0. Single-label macro averages run over the classes present in the labels or predictions
(sklearn's default label set); multi-label macro averages run over all C categories.

Multi-label accuracy: the BERT+ResNet paper reports one "accuracy" per model (0.42-0.57) and one per
category (its Figure 11) without defining either. Its overall numbers rule out Hamming accuracy (which
is about 0.97 on 80 sparse COCO labels for any sensible model); they fit subset accuracy (exact match,
what `sklearn.metrics.accuracy_score` returns for multi-hot arrays), which is reported as `subset_acc`.
The example-based (Jaccard) accuracy `jaccard_acc` and `hamming_acc` are reported beside it, and the
per-category accuracy `acc/<name>` is the binary accuracy of that category's column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedcache.errors import BadInputError
from embedcache.evaluate._common import ArrayLike, as_numpy, check_rows, join, ratio


def single_label_metrics(logits_or_probs: ArrayLike, y: ArrayLike, *, prefix: str = "") -> dict[str, float]:
    """Argmax predictions of (N, C) scores against labels (N,): `acc`, `macro_precision`,
    `macro_recall`, `macro_f1` and `weighted_f1` (class F1 weighted by support)."""
    scores, true = _scores_2d(logits_or_probs), as_numpy(y, np.int64).ravel()
    check_rows("logits_or_probs", len(scores), "y", len(true))
    pred = scores.argmax(axis=1)
    labels = np.union1d(true, pred)
    p, r, f, support = _per_class(pred, true, labels)
    out = {"acc": float((pred == true).mean()), "macro_precision": float(p.mean()),
           "macro_recall": float(r.mean()), "macro_f1": float(f.mean()),
           "weighted_f1": ratio(float((f * support).sum()), float(support.sum()))}
    return {join(prefix, k): v for k, v in out.items()}


def binary_metrics(
    probs_or_logits: ArrayLike, y: ArrayLike, positive: int = 1, *, threshold: float = 0.5, prefix: str = ""
) -> dict[str, float]:
    """Binary metrics as the CLFA table reports them for MMSD: `acc`, and `precision`, `recall`, `f1` of
    the `positive` class, and `macro_precision`, `macro_recall`, `macro_f1` over both classes. Scores
    are (N, 2) (argmax) or (N,): the score of the positive class, positive when >= `threshold` (0.5 for
    probabilities; pass 0.0 for logits)."""
    true = as_numpy(y, np.int64).ravel()
    pred = _binary_predictions(as_numpy(probs_or_logits), positive, threshold)
    check_rows("probs_or_logits", len(pred), "y", len(true))
    p, r, f, _ = _per_class(pred, true, np.array([1 - positive, positive]))
    out = {"acc": float((pred == true).mean()), "precision": float(p[1]), "recall": float(r[1]), "f1": float(f[1]),
           "macro_precision": float(p.mean()), "macro_recall": float(r.mean()), "macro_f1": float(f.mean())}
    return {join(prefix, k): v for k, v in out.items()}


def multilabel_metrics(
    probs: ArrayLike, targets: ArrayLike, threshold: float = 0.5, class_names: Sequence[str] | None = None,
    *, prefix: str = "",
) -> dict[str, float]:
    """Multi-label metrics of `probs >= threshold` (N, C) against multi-hot `targets` (N, C):
    `subset_acc` (the paper's accuracy), `jaccard_acc`, `hamming_acc`, `f1_samples`, `f1_micro`,
    `f1_macro`, `precision_micro`/`recall_micro`, `precision_macro`/`recall_macro`, and per category
    `precision/<name>`, `recall/<name>`, `f1/<name>`, `acc/<name>`, `support/<name>` (names default
    to the column index)."""
    pred, true = _scores_2d(probs) >= threshold, _scores_2d(targets) > 0.5
    _check_multilabel(pred, true, class_names)
    tp, fp, fn = (pred & true).sum(0), (pred & ~true).sum(0), (~pred & true).sum(0)  # (C,) each
    p, r = _safe(tp, tp + fp), _safe(tp, tp + fn)
    f = _safe(2 * tp, 2 * tp + fp + fn)
    out = {"subset_acc": float((pred == true).all(axis=1).mean()), "hamming_acc": float((pred == true).mean()),
           "jaccard_acc": float(_safe((pred & true).sum(1), (pred | true).sum(1)).mean()),
           "f1_samples": float(_safe(2 * (pred & true).sum(1), pred.sum(1) + true.sum(1)).mean()),
           "precision_micro": ratio(tp.sum(), (tp + fp).sum()), "recall_micro": ratio(tp.sum(), (tp + fn).sum()),
           "f1_micro": ratio(2 * tp.sum(), (2 * tp + fp + fn).sum()),
           "precision_macro": float(p.mean()), "recall_macro": float(r.mean()), "f1_macro": float(f.mean())}
    names = list(class_names) if class_names is not None else [str(c) for c in range(true.shape[1])]
    column_acc = (pred == true).mean(axis=0)
    for c, name in enumerate(names):
        out.update({f"precision/{name}": float(p[c]), f"recall/{name}": float(r[c]), f"f1/{name}": float(f[c]),
                    f"acc/{name}": float(column_acc[c]), f"support/{name}": float(true[:, c].sum())})
    return {join(prefix, k): v for k, v in out.items()}


def _per_class(pred: np.ndarray, true: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1 and support (each (L,)) for each label in `labels`."""
    hit = pred[None, :] == labels[:, None]  # (L, N) predicted as label
    is_ = true[None, :] == labels[:, None]  # (L, N) truly label
    tp = (hit & is_).sum(1)
    p, r = _safe(tp, hit.sum(1)), _safe(tp, is_.sum(1))
    return p, r, _safe(2 * tp, hit.sum(1) + is_.sum(1)), is_.sum(1)


def _safe(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise num / den with 0 where den == 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _scores_2d(x: ArrayLike) -> np.ndarray:
    a = as_numpy(x)
    if a.ndim != 2:
        raise BadInputError(f"expected a (N, C) score matrix; got shape {a.shape}")
    return a


def _binary_predictions(scores: np.ndarray, positive: int, threshold: float) -> np.ndarray:
    if positive not in (0, 1):
        raise BadInputError(f"positive must be class 0 or 1; got {positive}")
    if scores.ndim == 2 and scores.shape[1] == 2:
        return scores.argmax(axis=1)
    if scores.ndim == 1:
        return np.where(scores >= threshold, positive, 1 - positive)
    raise BadInputError(f"binary scores must be (N, 2) or (N,) positive-class scores; got shape {scores.shape}")


def _check_multilabel(pred: np.ndarray, true: np.ndarray, class_names: Sequence[str] | None) -> None:
    if pred.shape != true.shape:
        raise BadInputError(f"probs {pred.shape} and targets {true.shape} must both be (N, C)")
    if class_names is not None and len(class_names) != true.shape[1]:
        raise BadInputError(f"{len(class_names)} class names for {true.shape[1]} columns")
