"""Classification metrics against scikit-learn where it has the metric, naive loops elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from embedcache.evaluate.classification import binary_metrics, multilabel_metrics, single_label_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_label_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, size=120)
    logits = rng.normal(size=(120, 7))  # class 6 never true: it enters the label set only if predicted
    logits[np.arange(120), y] += 1.0
    out = single_label_metrics(torch.tensor(logits), y, prefix="mvsa")
    pred = logits.argmax(1)
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert out["mvsa_acc"] == pytest.approx(skm.accuracy_score(y, pred))
    assert (out["mvsa_macro_precision"], out["mvsa_macro_recall"], out["mvsa_macro_f1"]) == pytest.approx((p, r, f))
    assert out["mvsa_weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted", zero_division=0))


def test_single_label_hand_case() -> None:
    probs = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]
    out = single_label_metrics(probs, [0, 1, 1, 1])
    # predictions 0 1 0 1: class 0 P=1/2 R=1 F1=2/3; class 1 P=1 R=2/3 F1=4/5
    assert out["acc"] == 0.75
    assert out["macro_precision"] == pytest.approx(0.75) and out["macro_recall"] == pytest.approx(5 / 6)
    assert out["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert out["weighted_f1"] == pytest.approx((2 / 3 * 1 + 4 / 5 * 3) / 4)


@pytest.mark.parametrize("positive", [1, 0])
def test_binary_matches_sklearn_for_both_input_forms(positive: int) -> None:
    rng = np.random.default_rng(positive)
    y = rng.integers(0, 2, size=200)
    p_pos = np.clip(0.5 + 0.25 * np.where(y == positive, 1, -1) + rng.normal(scale=0.3, size=200), 0, 1)
    two_col = np.stack([1 - p_pos, p_pos], 1) if positive == 1 else np.stack([p_pos, 1 - p_pos], 1)
    pred = np.where(p_pos >= 0.5, positive, 1 - positive)
    expected = {
        "acc": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, pos_label=positive, zero_division=0),
        "recall": skm.recall_score(y, pred, pos_label=positive, zero_division=0),
        "f1": skm.f1_score(y, pred, pos_label=positive, zero_division=0),
        "macro_precision": skm.precision_score(y, pred, average="macro", zero_division=0),
        "macro_recall": skm.recall_score(y, pred, average="macro", zero_division=0),
        "macro_f1": skm.f1_score(y, pred, average="macro", zero_division=0),
    }
    for scores in (p_pos, two_col):
        out = binary_metrics(scores, y, positive=positive, prefix="mmsd")
        assert {k[len("mmsd_"):]: v for k, v in out.items()} == pytest.approx(expected)


def test_binary_logits_use_threshold_zero() -> None:
    logits = np.array([-2.0, -0.1, 0.3, 4.0])
    out = binary_metrics(logits, [0, 1, 1, 1], threshold=0.0)
    assert out["acc"] == 0.75 and out["precision"] == 1.0 and out["recall"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        binary_metrics(np.zeros((4, 3)), [0, 1, 1, 1])


def naive_multilabel(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Subset, Jaccard and Hamming accuracy and per-category accuracy by explicit loops."""
    n, c = true.shape
    subset = sum(all(pred[i, j] == true[i, j] for j in range(c)) for i in range(n)) / n
    jacc = 0.0
    for i in range(n):
        inter = sum(pred[i, j] and true[i, j] for j in range(c))
        union = sum(pred[i, j] or true[i, j] for j in range(c))
        jacc += inter / union if union else 0.0
    hamming = sum(pred[i, j] == true[i, j] for i in range(n) for j in range(c)) / (n * c)
    per_cat = [sum(pred[i, j] == true[i, j] for i in range(n)) / n for j in range(c)]
    return {"subset_acc": subset, "jaccard_acc": jacc / n, "hamming_acc": hamming, "per_cat": per_cat}


@pytest.mark.parametrize("seed", [0, 1])
def test_multilabel_matches_sklearn_and_naive_loops(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.random(size=(80, 5)) < np.array([0.5, 0.2, 0.1, 0.05, 0.0])  # last category never present
    probs = np.clip(0.35 * true + rng.random(size=(80, 5)) * 0.7, 0, 1)
    names = ["person", "dog", "cat", "kite", "toaster"]
    out = multilabel_metrics(probs, true.astype(np.float32), class_names=names, prefix="coco")
    pred = probs >= 0.5
    assert out["coco_subset_acc"] == pytest.approx(skm.accuracy_score(true, pred))
    assert out["coco_hamming_acc"] == pytest.approx(1 - skm.hamming_loss(true, pred))
    for avg in ("samples", "micro", "macro"):
        assert out[f"coco_f1_{avg}"] == pytest.approx(skm.f1_score(true, pred, average=avg, zero_division=0))
    for avg in ("micro", "macro"):
        assert out[f"coco_precision_{avg}"] == pytest.approx(skm.precision_score(true, pred, average=avg,
                                                                                 zero_division=0))
        assert out[f"coco_recall_{avg}"] == pytest.approx(skm.recall_score(true, pred, average=avg, zero_division=0))
    p, r, f, s = skm.precision_recall_fscore_support(true, pred, zero_division=0)
    naive = naive_multilabel(pred, true)
    for j, name in enumerate(names):
        assert (out[f"coco_precision/{name}"], out[f"coco_recall/{name}"], out[f"coco_f1/{name}"]) == pytest.approx(
            (p[j], r[j], f[j]))
        assert out[f"coco_support/{name}"] == s[j]
        assert out[f"coco_acc/{name}"] == pytest.approx(naive["per_cat"][j])
    for key in ("subset_acc", "jaccard_acc", "hamming_acc"):
        assert out[f"coco_{key}"] == pytest.approx(naive[key])
    assert out["coco_jaccard_acc"] == pytest.approx(skm.jaccard_score(true, pred, average="samples", zero_division=0))


def test_multilabel_hand_case_and_default_names() -> None:
    probs = [[0.9, 0.6, 0.1], [0.2, 0.7, 0.4]]
    targets = [[1, 0, 0], [0, 1, 1]]
    out = multilabel_metrics(probs, targets)
    # row 0 predicts {0, 1} for {0}; row 1 predicts {1} for {1, 2}: no exact match
    assert out["subset_acc"] == 0.0
    assert out["jaccard_acc"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert out["hamming_acc"] == pytest.approx(4 / 6)
    assert (out["f1/0"], out["f1/1"], out["f1/2"]) == pytest.approx((1.0, 2 / 3, 0.0))
    assert out["acc/1"] == 0.5 and out["support/2"] == 1.0
    with pytest.raises(ValueError, match="2 class names for 3 columns"):
        multilabel_metrics(probs, targets, class_names=["a", "b"])
