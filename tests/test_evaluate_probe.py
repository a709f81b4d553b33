"""Linear probe and fine-tuning: real training on small synthetic tasks, determinism, no leaks."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch import nn

from embedcache.evaluate.probe import _evaluate, finetune, linear_probe


def blobs(seed: int, n: int, classes: int = 4, dim: int = 8, offset: float = 0.0):
    """Gaussian blobs, one centre per class (centres fixed across seeds), features float32."""
    centres = np.random.default_rng(123).normal(scale=3.0, size=(classes, dim))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = centres[y] + rng.normal(size=(n, dim)) + offset
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_probe_learns_separable_classes_and_reports_each_logged_epoch() -> None:
    (xtr, ytr), (xte, yte) = blobs(0, 400), blobs(1, 200)
    out = linear_probe(xtr, ytr, xte, yte, epochs=20, log_at=(5, 20), batch_size=64)
    assert set(out) == {"probe_acc@5", "probe_top5@5", "probe_acc@20", "probe_top5@20"}
    assert out["probe_acc@20"] > 0.9
    assert out["probe_top5@20"] == 1.0  # 4 classes: the true one is always in the top 5


def test_probe_on_random_labels_stays_near_chance() -> None:
    (xtr, _), (xte, _) = blobs(0, 400), blobs(1, 400)
    rng = np.random.default_rng(5)
    out = linear_probe(xtr, rng.integers(0, 4, 400), xte, rng.integers(0, 4, 400), epochs=10, log_at=(10,))
    assert out["probe_acc@10"] < 0.4


def test_probe_standardises_with_train_statistics_only() -> None:
    # The test set is shifted by +50 in every feature. With train statistics the shift survives and
    # wrecks accuracy; statistics taken from (or including) the test set would remove it.
    (xtr, ytr), (xte, yte) = blobs(0, 400), blobs(1, 200, offset=50.0)
    opts = {"epochs": 10, "log_at": (10,), "batch_size": 32, "standardize": True}
    shifted = linear_probe(xtr, ytr, xte, yte, **opts)["probe_acc@10"]
    clean = linear_probe(xtr, ytr, xte - 50.0, yte, **opts)["probe_acc@10"]
    assert clean > 0.9 and shifted < 0.6


def test_probe_defaults_are_the_authors_raw_features_batch_64() -> None:
    # The authors' linear_classification.py: SGD lr 1e-3 momentum 0.9, batch 64, no feature scaling.
    (xtr, ytr), (xte, yte) = blobs(0, 300), blobs(1, 100)
    defaults = {k: v.default for k, v in inspect.signature(linear_probe).parameters.items()}
    assert (defaults["batch_size"], defaults["lr"], defaults["standardize"], defaults["optimizer"]) == (64, 1e-3, False,
                                                                                                         "sgd")
    opts = {"epochs": 2, "log_at": (2,)}
    raw, scaled = linear_probe(xtr, ytr, xte, yte, **opts), linear_probe(xtr * 1e-3, ytr, xte * 1e-3, yte, **opts)
    assert raw != scaled  # raw features: their scale is part of the optimisation
    std = {**opts, "standardize": True}
    small = linear_probe(xtr * 1e-3, ytr, xte * 1e-3, yte, **std)
    assert linear_probe(xtr, ytr, xte, yte, **std) == pytest.approx(small, abs=1e-6)


def test_probe_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    (xtr, ytr), (xte, yte) = blobs(0, 300), blobs(1, 100)
    state = torch.get_rng_state()
    a = linear_probe(xtr, ytr, xte, yte, epochs=3, log_at=(1, 2, 3), seed=7, optimizer="adamw")
    assert torch.equal(torch.get_rng_state(), state)
    assert linear_probe(xtr, ytr, xte, yte, epochs=3, log_at=(1, 2, 3), seed=7, optimizer="adamw") == a


def test_evaluate_matches_naive_accuracy_with_pessimistic_ties() -> None:
    rng = np.random.default_rng(3)
    scores = torch.tensor(rng.integers(0, 4, size=(50, 7)).astype(np.float32))  # many ties on purpose
    y = torch.tensor(rng.integers(0, 7, size=50))
    top1, top5 = _evaluate(nn.Identity(), lambda idx: scores[idx], y)
    naive = {1: 0, 5: 0}
    for row, label in zip(scores.tolist(), y.tolist(), strict=True):
        above = sum(1 for c, s in enumerate(row) if c != label and s >= row[label])  # ties count against
        naive[1] += above < 1
        naive[5] += above < 5
    assert (top1, top5) == (naive[1] / 50, naive[5] / 50)


class TwoInputEncoder(nn.Module):
    """A tiny encoder over (features, mask) returning pooled (B, 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.1), nn.Linear(16, 16))

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.net(x * scale[:, None])


def test_finetune_trains_a_copy_with_tuple_inputs_and_collate() -> None:
    (xtr, ytr), (xte, yte) = blobs(0, 300), blobs(1, 150)
    encoder = TwoInputEncoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    seen: list[int] = []

    def collate(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        seen.append(len(batch[0]))
        return batch[0] / 3.0, batch[1]

    inputs_tr, inputs_te = (xtr, torch.ones(300)), (xte, torch.ones(150))
    out = finetune(encoder, inputs_tr, ytr, inputs_te, yte, epochs=8, log_at=(8,), lr=1e-2, seed=1,
                   collate=collate, batch_size=32)
    assert out["finetune_acc@8"] > 0.9
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # caller's copy untouched
    # one 2-row shape probe, then 300 rows as 9 x 32 + 12 per epoch, then the 150 test rows in one batch
    assert seen[:11] == [2] + [32] * 9 + [12] and seen[-1] == 150
    again = finetune(encoder, inputs_tr, ytr, inputs_te, yte, epochs=8, log_at=(8,), lr=1e-2, seed=1,
                     collate=collate, batch_size=32)
    assert again == out


def test_finetune_refuses_unpooled_encoders_and_bad_log_epochs() -> None:
    (x, y) = blobs(0, 20)
    with pytest.raises(ValueError, match=r"pooled features \(B, D\)"):
        finetune(nn.Unflatten(1, (2, 4)), x, y, x, y, epochs=1, log_at=(1,))
    with pytest.raises(ValueError, match="outside 1..3"):
        linear_probe(x, y, x, y, epochs=3, log_at=(5,))
