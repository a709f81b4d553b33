"""Pair classification: threshold choice and per-class metrics against naive loops and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from embedcache.evaluate.pairs import choose_threshold, pair_classification, paired_cosine
from embedcache.tables.reference import load_reference


def naive_best_accuracy(scores: list[float], labels: list[int]) -> float:
    """Try every score (and +inf) as the threshold of `score >= t -> 1`; return the best accuracy."""
    best = 0.0
    for t in [*scores, float("inf")]:
        acc = sum(int(s >= t) == y for s, y in zip(scores, labels, strict=True)) / len(labels)
        best = max(best, acc)
    return best


def accuracy_at(scores: np.ndarray, labels: np.ndarray, t: float) -> float:
    return float(((scores >= t).astype(int) == labels).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chosen_threshold_reaches_the_naive_best_accuracy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=200)
    scores = np.round(0.3 * labels + rng.normal(scale=0.3, size=200), 2)  # rounded: repeated scores
    t = choose_threshold(scores, labels)
    assert accuracy_at(scores, labels, t) == pytest.approx(naive_best_accuracy(scores.tolist(), labels.tolist()))


def test_threshold_sits_midway_and_takes_the_middle_of_tied_cuts() -> None:
    # sorted scores 0.1(0) 0.2(0) 0.4(1) 0.8(1): only the cut between 0.2 and 0.4 is perfect
    assert choose_threshold([0.4, 0.1, 0.8, 0.2], [1, 0, 1, 0]) == pytest.approx(0.3)
    # 0.1(0) 0.3(1) 0.5(0) 0.7(1): the five cuts score 2/4, 3/4, 2/4, 3/4, 2/4;
    # two tied best cuts (at 0.2 and 0.6): the lower median of the tied cuts, 0.2, is taken
    assert choose_threshold([0.1, 0.3, 0.5, 0.7], [0, 1, 0, 1]) == pytest.approx(0.2)
    # three tied best cuts -> the middle one
    assert choose_threshold([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0, 1, 0, 1, 0, 1]) == pytest.approx(0.35)


def test_all_positive_and_all_negative_thresholds() -> None:
    t_pos = choose_threshold([0.2, 0.5, 0.9], [1, 1, 1])
    assert accuracy_at(np.array([0.2, 0.5, 0.9]), np.array([1, 1, 1]), t_pos) == 1.0
    t_neg = choose_threshold([0.2, 0.5, 0.9], [0, 0, 0])
    assert t_neg > 0.9 and accuracy_at(np.array([0.2, 0.5, 0.9]), np.array([0, 0, 0]), t_neg) == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_pair_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=150)
    scores = 0.2 * labels + rng.normal(scale=0.3, size=150)
    out = pair_classification(scores, labels, 0.1, prefix="qqp")
    pred = (scores >= 0.1).astype(int)
    p, r, f, _ = precision_recall_fscore_support(labels, pred, labels=[0, 1], zero_division=0)
    assert out["qqp_acc"] == pytest.approx(accuracy_score(labels, pred))
    for c in (0, 1):
        assert (out[f"qqp_precision_{c}"], out[f"qqp_recall_{c}"], out[f"qqp_f1_{c}"]) == pytest.approx(
            (p[c], r[c], f[c]))
    assert out["qqp_macro_f1"] == pytest.approx(f.mean())
    assert out["qqp_majority_acc"] == pytest.approx(max(labels.mean(), 1 - labels.mean()))


def test_the_papers_roberta_rows_are_the_floors() -> None:
    # MRPC test: 279 of 408 pairs are paraphrases. A threshold below every score predicts all positive:
    # accuracy = precision_1 = 68.38 %, recall_1 = 100 %, class 0 all zeros - the paper's RoBERTa row.
    labels = np.array([1] * 279 + [0] * 129)
    scores = np.random.default_rng(0).uniform(0.9, 1.0, size=408)  # RoBERTa cosines are all ~0.99
    out = pair_classification(scores, labels, threshold=0.5)
    paper = load_reference()["cbmf-table3"]  # CBMF's MRPC table, as printed
    assert round(100 * out["acc"], 2) == 68.38 == round(100 * out["majority_acc"], 2)
    assert round(100 * out["f1_1"], 2) == 81.22 and out["recall_1"] == 1.0
    for column, ours in (("accuracy", out["acc"]), ("precision_1", out["precision_1"]), ("recall_1", out["recall_1"]),
                         ("f1_1", out["f1_1"]), ("f1_0", out["f1_0"])):
        assert round(100 * ours, 2) == paper.value("RoBERTa", column), column
    assert out["precision_0"] == out["recall_0"] == out["f1_0"] == 0.0
    assert out["all_positive_rate"] == pytest.approx(279 / 408) and out["predicted_positive_rate"] == 1.0


def test_paired_cosine_and_label_check() -> None:
    a = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [3.0, 4.0]])
    torch.testing.assert_close(paired_cosine(a, b), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="sts_metrics"):
        pair_classification([0.1, 0.2], [0, 3.5], 0.1)
    with pytest.raises(ValueError, match="same items"):
        choose_threshold([0.1, 0.2], [0])
