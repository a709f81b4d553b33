"""Pair classification by a similarity threshold (MRPC, QQP in CBMF's tables).

A pair is predicted positive (paraphrase / duplicate) when its score >= threshold, as in the authors'
notebook. The threshold must be chosen on training or validation pairs (`choose_threshold`) and then
applied to test pairs: the authors' RoBERTa rows equal the majority-class rate (MRPC 68.38) and the
all-positive rate (QQP 36.81), which is what a threshold fitted on nothing or on test data gives.
Every result therefore carries `majority_acc` and `all_positive_rate` beside the accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from embedcache.errors import BadInputError
from embedcache.evaluate._common import ArrayLike, as_float, as_numpy, check_rows, join, ratio


def paired_cosine(a: ArrayLike, b: ArrayLike) -> torch.Tensor:
    """Row-wise cosine similarity (N,) of two aligned embedding matrices (N, D)."""
    x, y = as_float(a), as_float(b)
    check_rows("a", x.shape[0], "b", y.shape[0])
    return (F.normalize(x, dim=-1) * F.normalize(y.to(x.device), dim=-1)).sum(dim=-1)


def choose_threshold(scores: ArrayLike, labels: ArrayLike) -> float:
    """The threshold that maximises accuracy of `score >= threshold -> 1` on these (train/val) pairs.
    Cuts fall midway between adjacent distinct scores; when several cuts tie for the best accuracy the
    middle one (lower median) is taken. All-positive and all-negative are candidates too."""
    s, y = as_numpy(scores).ravel(), _binary(labels)
    check_rows("scores", len(s), "labels", len(y))
    values, inverse = np.unique(s, return_inverse=True)  # ascending distinct scores
    pos_at = np.bincount(inverse, weights=y, minlength=len(values))  # positives at each distinct score
    neg_at = np.bincount(inverse, weights=1 - y, minlength=len(values))
    # Cut c predicts values[c:] positive: correct = negatives below the cut + positives at or above it.
    neg_below = np.concatenate([[0.0], np.cumsum(neg_at)])
    pos_above = pos_at.sum() - np.concatenate([[0.0], np.cumsum(pos_at)])
    correct = neg_below + pos_above  # (len(values) + 1,)
    best = np.flatnonzero(correct == correct.max())
    return _cut_threshold(values, int(best[(len(best) - 1) // 2]))


def _cut_threshold(values: np.ndarray, cut: int) -> float:
    if cut == 0:
        return float(values[0])  # everything >= the smallest score: all positive
    if cut == len(values):
        return float(np.nextafter(values[-1], np.inf))  # nothing reaches it: all negative
    return float((values[cut - 1] + values[cut]) / 2.0)


def pair_classification(scores: ArrayLike, labels: ArrayLike, threshold: float, prefix: str = "") -> dict[str, float]:
    """Metrics of `score >= threshold -> 1` against 0/1 labels: `acc`, per class c in {0, 1}
    `precision_c`, `recall_c`, `f1_c` (the paper's "Dissimilar" = class 0, "Similar" = class 1),
    `macro_f1`, the floors `majority_acc` (always predicting the commoner class) and `all_positive_rate`
    (always predicting 1), plus `threshold` and `predicted_positive_rate`; keys prefixed `{prefix}_`."""
    s, y = as_numpy(scores).ravel(), _binary(labels)
    check_rows("scores", len(s), "labels", len(y))
    pred = (s >= threshold).astype(np.float64)
    out = {"acc": float((pred == y).mean())}
    for c in (0, 1):
        out.update(_class_prf(pred == c, y == c, c))
    out["macro_f1"] = (out["f1_0"] + out["f1_1"]) / 2.0
    out["majority_acc"] = float(max(y.mean(), 1.0 - y.mean()))
    out["all_positive_rate"] = float(y.mean())
    out["predicted_positive_rate"] = float(pred.mean())
    out["threshold"] = float(threshold)
    return {join(prefix, k): v for k, v in out.items()}


def _class_prf(pred_c: np.ndarray, true_c: np.ndarray, c: int) -> dict[str, float]:
    """Precision, recall and F1 of one class treated as the positive one (0.0 where undefined)."""
    tp = float((pred_c & true_c).sum())
    p, r = ratio(tp, pred_c.sum()), ratio(tp, true_c.sum())
    return {f"precision_{c}": p, f"recall_{c}": r, f"f1_{c}": ratio(2 * p * r, p + r)}


def _binary(labels: ArrayLike) -> np.ndarray:
    y = as_numpy(labels).ravel()
    if not np.isin(y, (0.0, 1.0)).all():
        raise BadInputError(f"pair labels must be 0 or 1; found values {np.unique(y)[:5].tolist()}. "
                            "Graded pairs (STS-B 0..5) go to sts_metrics instead")
    return y
