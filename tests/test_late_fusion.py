"""Late fusion: the weightings against hand computations, stacking, and the orchestration on generated stores,
including the proof that fitting never reads a test label."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_heads_mlp import make_task_stores

from embedcache.fusion.late_fusion import (
    LATE_FUSIONS,
    FusionInputs,
    detection_rate_weights,
    detection_rates,
    fit_fusion,
    fuse,
    min_loss_weights,
    score_at_best_epoch,
)
from embedcache.fusion.trainers import fit_flat
from embedcache.paths import store_path
from embedcache.store import ShardData, StoreWriter, open_store

FAST = {"epochs": 25, "batch_size": 64, "lr": 3e-3, "early_stop_patience": 5, "progress": False}

# six items, two modalities; argmax predictions A = [0, 0, 1, 0, 2, 1], B = [1, 0, 1, 1, 0, 2]
Y = np.array([0, 0, 1, 1, 2, 2])
PRED_A, PRED_B = [0, 0, 1, 0, 2, 1], [1, 0, 1, 1, 0, 2]
PRIORS = np.array([0.5, 0.3, 0.2])


def _probs(pred: list[int]) -> np.ndarray:
    p = np.full((len(pred), 3), 0.2)
    p[np.arange(len(pred)), pred] = 0.6
    return p


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- the weightings by hand


def test_detection_rates_are_true_positives_over_all_items() -> None:
    # A: TP per class (2, 1, 1); B: (1, 2, 1); N = 6
    np.testing.assert_allclose(detection_rates([_probs(PRED_A), _probs(PRED_B)], Y),
                               [[2 / 6, 1 / 6, 1 / 6], [1 / 6, 2 / 6, 1 / 6]])


def test_detection_rate_weights_equal_the_hand_computation() -> None:
    probs = [_probs(PRED_A), _probs(PRED_B)]
    # with priors: raw A = 1 - DR + alpha = (7/6, 17/15, 31/30), sum 10/3 -> (.35, .34, .31);
    #              raw B = (4/3, 29/30, 31/30)                   -> (.40, .29, .31)
    np.testing.assert_allclose(detection_rate_weights(probs, Y, PRIORS), [[0.35, 0.34, 0.31], [0.40, 0.29, 0.31]])
    # without priors: raw A = (2/3, 5/6, 5/6) -> (2/7, 5/14, 5/14); raw B = (5/6, 2/3, 5/6) -> (5/14, 2/7, 5/14)
    np.testing.assert_allclose(detection_rate_weights(probs, Y), [[2 / 7, 5 / 14, 5 / 14], [5 / 14, 2 / 7, 5 / 14]])
    # normalised over the modalities of each class instead: class 0 (7/6, 4/3) / 2.5, class 1 (17/15, 29/30) / 2.1
    np.testing.assert_allclose(detection_rate_weights(probs, Y, PRIORS, normalise="modalities"),
                               [[7 / 15, 34 / 63, 0.5], [8 / 15, 29 / 63, 0.5]])


def test_fusing_with_class_weights_and_modality_weights_by_hand() -> None:
    p_t, p_i = np.array([[0.6, 0.3, 0.1]]), np.array([[0.2, 0.2, 0.6]])
    np.testing.assert_allclose(fuse([p_t, p_i], min_loss_weights([0.6, 0.9])), [[0.36, 0.24, 0.40]])
    w = np.array([[0.35, 0.34, 0.31], [0.40, 0.29, 0.31]])
    raw = np.array([0.35 * 0.6 + 0.40 * 0.2, 0.34 * 0.3 + 0.29 * 0.2, 0.31 * 0.1 + 0.31 * 0.6])  # (.29, .16, .217)
    np.testing.assert_allclose(fuse([p_t, p_i], w), [raw / raw.sum()])
    with pytest.raises(ValueError, match="do not fit 2 modalities of 3 classes"):
        fuse([p_t, p_i], np.ones((3, 3)))


def test_min_loss_weights_and_the_best_epoch_score() -> None:
    np.testing.assert_allclose(min_loss_weights([0.6, 0.9]), [0.4, 0.6])
    history = [{"val_loss": 0.5, "val_acc": 0.6}, {"val_loss": 0.3, "val_acc": 0.7}, {"val_loss": 0.4, "val_acc": 0.8}]
    assert score_at_best_epoch(history, "val_acc") == 0.7  # not the best accuracy (0.8): the lowest loss's
    with pytest.raises(ValueError, match="non-negative"):
        min_loss_weights([0.0, 0.0])


def test_registered_fusions_fit_from_validation_inputs() -> None:
    inputs = FusionInputs((_probs(PRED_A), _probs(PRED_B)), Y, (0.6, 0.9), PRIORS)
    assert LATE_FUSIONS.names() == ["late-average", "late-detection-rate", "late-min-loss", "late-stacking"]
    np.testing.assert_allclose(fit_fusion("late-average", inputs).weights, np.full((2, 3), 0.5))
    np.testing.assert_allclose(fit_fusion("late-min-loss", inputs).weights, [[0.4] * 3, [0.6] * 3])
    np.testing.assert_allclose(fit_fusion("late-detection-rate", inputs).weights, [[0.35, 0.34, 0.31],
                                                                                   [0.40, 0.29, 0.31]])


def _permuted_task(seed: int, n: int = 300) -> tuple[list[np.ndarray], np.ndarray]:
    """Modality A is informative; modality B is A with its class columns rotated (a consistent confusion)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = 2.0 * np.eye(3)[y] + rng.normal(size=(n, 3))
    a = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    b = a[:, [2, 0, 1]]  # B's class c column is A's class c-1
    return [a, b], y


def test_stacking_learns_what_fixed_weights_cannot() -> None:
    val_probs, val_y = _permuted_task(0)
    test_probs, test_y = _permuted_task(1)
    inputs = FusionInputs(tuple(val_probs), val_y)
    stacked = fit_fusion("late-stacking", inputs).predict(test_probs).argmax(1)
    averaged = fit_fusion("late-average", inputs).predict(test_probs).argmax(1)
    assert (stacked == test_y).mean() > 0.75 > (averaged == test_y).mean() + 0.2


# ---------------------------------------------------------------- orchestration on stores


def _with_test_labels(path: Path, labels_fn) -> None:
    """Rewrite a store with its test labels replaced by labels_fn(labels); everything else kept."""
    splits = {}
    with open_store(path) as store:
        attrs = {k: v for k, v in store.attrs.items() if k not in ("fingerprint", "complete", "schema_version")}
        for name in store.splits:
            s = store.split(name)
            splits[name] = {"ids": list(s.ids), "pooled": s.pooled(),
                            "labels": labels_fn(s.labels) if name == "test" else s.labels,
                            "links": None if s.links is None else list(s.links)}
    os.remove(path)
    with StoreWriter(path, attrs) as writer:
        for name, arrays in splits.items():
            writer.write_shard(name, 0, ShardData(**arrays))
            writer.finish_split(name, 1)


def _late(root: Path, runs: Path) -> dict:
    return fit_flat("late-fusion", {"dataset": "task", "backbones": ("text", "image"), "data_dir": root,
                                    "runs_root": runs, **FAST})


def test_late_fusion_runs_fit_on_validation_and_help(tmp_path: Path) -> None:
    make_task_stores(tmp_path, "single", shared_ids=True)  # MVSA-like: one text per image, same post id
    runs = _late(tmp_path, tmp_path / "runs")
    assert set(runs) == set(LATE_FUSIONS.names())
    rec = runs["late-min-loss"].record
    comp_acc = [float(a) for a in rec["fusion"]["scores"]]
    np.testing.assert_allclose(rec["fusion"]["weights"], [[s / sum(comp_acc)] * 3 for s in comp_acc])
    singles = {k: v["acc"] for k, v in rec["metrics"].items() if k.startswith("test_")}
    assert set(singles) == {"test_text", "test_image"}
    for method in ("late-average", "late-stacking"):
        acc = runs[method].metrics["test"]["acc"]
        assert acc > max(singles.values()) + 0.05, (method, acc, singles)
    assert (tmp_path / "runs" / runs["late-average"].id / "run.json").exists()


def test_fitting_never_reads_a_test_label(tmp_path: Path) -> None:
    clean, garbage = tmp_path / "clean", tmp_path / "garbage"
    make_task_stores(clean, "single", shared_ids=True)
    make_task_stores(garbage, "single", shared_ids=True)
    rng = np.random.default_rng(3)
    for name in ("text", "image"):  # identical stores, except that every test label is replaced by noise
        _with_test_labels(store_path("task", name, garbage), lambda y: rng.integers(0, 3, len(y)))
    a, b = _late(clean, tmp_path / "runs-a"), _late(garbage, tmp_path / "runs-b")
    for method in LATE_FUSIONS.names():
        assert a[method].record["fusion"] == b[method].record["fusion"], method  # weights: validation only
        assert a[method].metrics["val"] == b[method].metrics["val"]
    assert a["late-average"].metrics["test"]["acc"] > 0.9 > 0.5 > b["late-average"].metrics["test"]["acc"]


def test_late_fusion_refuses_multilabel_and_missing_validation(tmp_path: Path) -> None:
    make_task_stores(tmp_path / "m", "multi", shared_ids=True, sizes={"train": 30, "val": 12, "test": 12})
    with pytest.raises(ValueError, match="single-label"):
        _late(tmp_path / "m", tmp_path / "runs")
    make_task_stores(tmp_path / "n", "single", shared_ids=True, sizes={"train": 30, "test": 12})
    with pytest.raises(ValueError, match="validation split"):
        _late(tmp_path / "n", tmp_path / "runs")


def test_stage_two_modules_never_import_transformers_or_timm() -> None:
    code = ("import sys, embedcache.fusion.classify, embedcache.fusion.heads.mlp, embedcache.fusion.heads.clfa, "
            "embedcache.fusion.late_fusion; "
            "bad = [m for m in ('transformers', 'timm') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
