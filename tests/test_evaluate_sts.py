"""STS-B metrics against naive references (loops over the definitions) and hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from embedcache.evaluate.sts import (
    DEFAULT_BANDS,
    DEFAULT_TOLERANCES,
    band_name,
    cosine_to_sts,
    sts_metrics,
    tolerance_key,
)


def naive_pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def naive_average_ranks(a: list[float]) -> list[float]:
    """1-based ranks, tied values share the mean of the positions they occupy."""
    return [sum(1 for y in a if y < x) + (sum(1 for y in a if y == x) + 1) / 2 for x in a]


def naive_accuracy(pred: list[float], gold: list[float], tol: float, lo: float = -1e9, hi: float = 1e9) -> float:
    pairs = [(p, g) for p, g in zip(pred, gold, strict=True) if lo <= g < hi]
    return sum(1 for p, g in pairs if abs(p - g) <= tol) / len(pairs)


def random_scores(seed: int, n: int = 300):
    rng = np.random.default_rng(seed)
    gold = np.round(rng.uniform(0, 5, size=n) * 5) / 5  # STS-B style: many repeated gold values
    pred = np.clip(gold + rng.normal(scale=0.8, size=n), 0, 5)
    return pred, gold


@pytest.mark.parametrize("seed", [0, 1])
def test_correlations_match_naive_reference(seed: int) -> None:
    pred, gold = random_scores(seed)
    out = sts_metrics(pred, gold)
    assert out["sts_pearson"] == pytest.approx(naive_pearson(pred.tolist(), gold.tolist()), rel=1e-9)
    spearman = naive_pearson(naive_average_ranks(pred.tolist()), naive_average_ranks(gold.tolist()))
    assert out["sts_spearman"] == pytest.approx(spearman, rel=1e-9)
    assert out["sts_spearman"] == pytest.approx(stats.spearmanr(pred, gold).statistic, rel=1e-9)
    assert out["sts_mae"] == pytest.approx(sum(abs(p - g) for p, g in zip(pred, gold, strict=True)) / len(pred))


def test_tolerance_curves_match_naive_reference_overall_and_per_band() -> None:
    pred, gold = random_scores(2)
    out = sts_metrics(pred, gold, error_scale=1.0, band_edges="left")  # the 0..5-scale reading, [lo, hi) bands
    for tol in DEFAULT_TOLERANCES[::9]:
        key = tolerance_key(tol)
        assert out[f"sts_acc@{key}"] == pytest.approx(naive_accuracy(pred.tolist(), gold.tolist(), tol))
        for lo, hi in DEFAULT_BANDS:
            expected = naive_accuracy(pred.tolist(), gold.tolist(), tol, lo, hi)
            assert out[f"sts_acc@{key}_band{band_name(lo, hi)}"] == pytest.approx(expected)
    overall = [out[f"sts_acc@{tolerance_key(t)}"] for t in DEFAULT_TOLERANCES]
    assert out["sts_acc_mean"] == pytest.approx(sum(overall) / len(overall))
    assert overall == sorted(overall) and overall[0] < overall[-1]  # wider tolerance, never fewer hits
    assert sum(out[f"sts_n_band{band_name(lo, hi)}"] for lo, hi in DEFAULT_BANDS) == len(gold)


def test_key_names_and_grid() -> None:
    assert len(DEFAULT_TOLERANCES) == 100 and DEFAULT_TOLERANCES[0] == 0.1 and DEFAULT_TOLERANCES[-1] == 1.0
    keys = {tolerance_key(t) for t in DEFAULT_TOLERANCES}
    assert len(keys) == 100  # distinct keys: 2 decimals alone would collide on this grid
    assert {"0.10", "0.50", "1.00", "0.109"} <= keys
    out = sts_metrics([3.6], [3.5])
    assert out["sts_acc@0.50_band3-4"] == 1.0 and out["sts_acc@0.10_band3-4"] == 1.0
    assert "sts_acc@0.50_band4-5" not in out and out["sts_n_band4-5"] == 0.0  # empty band: size only


def test_hand_computed_case_with_float_noise_at_the_edge() -> None:
    pred = [2.5, 0.0, 5.0, 3.0]
    gold = [2.4, 0.6, 5.0, 4.0]  # errors 0.1 (0.10000000000000009 in floats), 0.6, 0, 1.0
    out = sts_metrics(pred, gold, tolerances=(0.1, 0.5, 1.0), error_scale=1.0, band_edges="left")
    assert (out["sts_acc@0.10"], out["sts_acc@0.50"], out["sts_acc@1.00"]) == (0.5, 0.5, 1.0)
    assert out["sts_acc@0.10_band4-5"] == 0.5  # gold 4.0 (missed) and 5.0 (hit) share the band [4, 5.01)
    assert out["sts_acc@0.50_band0-1"] == 0.0 and out["sts_acc@1.00_band0-1"] == 1.0
    assert out["sts_acc_mean"] == pytest.approx(2 / 3)


def test_band_edges_left_vs_right_closed() -> None:
    gold = [0.0, 1.0, 2.0, 4.0, 5.0]
    left = sts_metrics(gold, gold, band_edges="left")
    right = sts_metrics(gold, gold, band_edges="right")
    # [lo, hi): 1.0 -> band 1-2, 2.0 -> 2-3, 4.0 -> 4-5; (lo, hi] (authors' label()): 1.0 -> 0-1, 2.0 -> 1-2
    assert [left[f"sts_n_band{b}"] for b in ("0-1", "1-2", "2-3", "3-4", "4-5")] == [1, 1, 1, 0, 2]
    assert [right[f"sts_n_band{b}"] for b in ("0-1", "1-2", "2-3", "3-4", "4-5")] == [2, 1, 0, 1, 1]
    with pytest.raises(ValueError, match="band_edges"):
        sts_metrics(gold, gold, band_edges="middle")  # type: ignore[arg-type]


def test_error_scale_reproduces_the_authors_unit_scale_protocol() -> None:
    cos = np.array([0.9, 0.5, 0.1])
    gold = np.array([4.0, 2.0, 2.0])
    # authors: |cos - gold / 5| <= e  <=>  |5 cos - gold| / 5 <= e
    out = sts_metrics(cosine_to_sts(cos, "unit"), gold, tolerances=(0.1, 0.2), error_scale=5.0)
    naive = [sum(abs(c - g / 5) <= e + 1e-12 for c, g in zip(cos, gold, strict=True)) / 3 for e in (0.1, 0.2)]
    assert (out["sts_acc@0.10"], out["sts_acc@0.20"]) == pytest.approx(tuple(naive))
    strict = sts_metrics(5 * cos, gold, tolerances=(0.1,), error_scale=1.0)["sts_acc@0.10"]
    assert naive == [2 / 3, 2 / 3] and out["sts_acc@0.10"] != strict


def test_defaults_are_the_authors_unit_scale_and_right_closed_bands() -> None:
    # text_text.ipynb: |cos - gold / 5| <= e; label(x): x <= 1 -> band 0-1, 1 < x <= 2 -> band 1-2, ...
    rng = np.random.default_rng(4)
    gold = rng.integers(0, 26, 400) / 5.0  # 0, 0.2, ..., 5: many on band edges
    cos = np.clip(gold / 5 + rng.normal(scale=0.15, size=400), -1, 1)
    out = sts_metrics(cosine_to_sts(cos, "unit"), gold)
    for e in (0.1, 0.2, 0.5):
        hit = np.abs(cos - gold / 5) <= e + 1e-9
        assert out[f"sts_acc@{tolerance_key(e)}"] == pytest.approx(hit.mean())
        for lo, hi, band in ((0, 1, "0-1"), (1, 2, "1-2"), (4, 5, "4-5")):
            mask = ((gold > lo) | (gold == 0)) & (gold <= hi) if lo == 0 else (gold > lo) & (gold <= hi)
            assert out[f"sts_acc@{tolerance_key(e)}_band{band}"] == pytest.approx(hit[mask].mean())
    assert out["sts_n_band0-1"] == float(((gold >= 0) & (gold <= 1)).sum())  # gold 1.0 is in 0-1, not 1-2


def test_cosine_to_sts_modes_and_types() -> None:
    np.testing.assert_allclose(cosine_to_sts(np.array([-1.0, 0.0, 0.5, 1.0]), "unit"), [-5.0, 0.0, 2.5, 5.0])
    np.testing.assert_allclose(cosine_to_sts([-1.0, 0.0, 1.0], "signed"), [0.0, 2.5, 5.0])
    np.testing.assert_allclose(cosine_to_sts([-0.2, 1.2], "unit", clip=True), [0.0, 5.0])
    assert isinstance(cosine_to_sts(torch.tensor([0.5])), torch.Tensor)
    with pytest.raises(KeyError, match="known: signed, unit"):
        cosine_to_sts([0.5], "percent")
