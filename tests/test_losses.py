"""The contrastive loss against a naive per-pair reference of the CBMF paper's eq. 3-6 (both target kinds)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from embedcache.fusion.losses import (
    ContrastiveLoss,
    LogitScale,
    hard_targets,
    positive_mask,
    soft_targets,
    symmetric_info_nce,
)
from embedcache.registry import UnknownNameError


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v / (u.norm() * v.norm()))


def naive_loss(x: torch.Tensor, y: torch.Tensor, s: float, keys: torch.Tensor, kind: str) -> float:
    """Eq. 3-6 written out pair by pair in float64: l1_ij, l2_ij, t_ij and (1 / 2M) sum t_ij l1_ij + t_ji l2_ij.

    hard: t_ij = 1 / |P_i| for j in P_i, the rows sharing an item with row i (just i without duplicates).
    soft: t_ij = softmax_j(s * (<x_i, x_j> + <y_i, y_j>) / 2).
    """
    x, y = x.double(), y.double()
    m = len(x)

    def l1(i: int, j: int) -> float:
        return -math.log(math.exp(s * _cos(x[i], y[j])) / sum(math.exp(s * _cos(x[i], y[k])) for k in range(m)))

    def l2(i: int, j: int) -> float:
        return -math.log(math.exp(s * _cos(y[i], x[j])) / sum(math.exp(s * _cos(y[i], x[k])) for k in range(m)))

    def t(i: int, j: int) -> float:
        if kind == "hard":
            share = [any(keys[i, c] == keys[k, c] for c in range(keys.shape[1])) for k in range(m)]
            return float(share[j]) / sum(share)
        w = [math.exp(s * (_cos(x[i], x[k]) + _cos(y[i], y[k])) / 2) for k in range(m)]
        return w[j] / sum(w)

    total = sum(t(i, j) * l1(i, j) + t(j, i) * l2(i, j) for i in range(m) for j in range(m))
    return total / (2 * m)


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("duplicates", [False, True])
def test_loss_matches_naive_reference(kind: str, duplicates: bool) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    image_rows = torch.tensor([0, 1, 1, 2, 3, 3, 3]) if duplicates else torch.arange(7)
    if duplicates:  # the same image twice in the batch: identical image vectors
        x = x[image_rows]
    keys = torch.stack([image_rows, torch.arange(7)], dim=1)  # (B, 2): image row, caption row
    loss = ContrastiveLoss(kind, temperature_init=1.3)
    got = float(loss([x, y], keys).detach())
    assert got == pytest.approx(naive_loss(x, y, math.exp(1.3), keys, kind), rel=1e-5)


def test_hard_targets_without_duplicates_equal_the_authors_diagonal_cross_entropy() -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    ours = ContrastiveLoss("hard")([a, b], torch.arange(16).repeat(2, 1).T)
    scale = math.exp(0.07)  # the authors' t = 0.07 is the log of the logit scale
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    labels = torch.arange(16)
    theirs = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert float(ours.detach()) == pytest.approx(float(theirs), rel=1e-6)


def test_duplicate_items_are_positives_not_negatives() -> None:
    keys = torch.tensor([[0, 0], [0, 1], [1, 2]])  # rows 0 and 1: two captions of image 0
    assert positive_mask(keys).tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    z = torch.eye(3)
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert torch.equal(hard_targets(z, z, torch.tensor(1.0), keys), expected)
    assert torch.equal(hard_targets(z, z, torch.tensor(1.0), torch.arange(3).repeat(2, 1).T), torch.eye(3))


def test_logit_scale_is_clamped_and_starts_at_exp_007() -> None:
    scale = LogitScale()
    assert float(scale().detach()) == pytest.approx(math.exp(0.07))
    with torch.no_grad():
        scale.t.fill_(-3.0)
    assert float(scale().detach()) == pytest.approx(math.exp(0.01))
    with torch.no_grad():
        scale.t.fill_(50.0)
    assert float(scale().detach()) == pytest.approx(math.exp(20.0))
    scale().backward()
    assert float(scale.t.grad) == 0.0  # outside the clamp the parameter gets no gradient


def test_fixed_temperature_is_not_trained() -> None:
    loss = ContrastiveLoss(learnable=False)
    assert not loss.scale.t.requires_grad


def test_soft_targets_are_detached() -> None:
    a = F.normalize(torch.randn(5, 4), dim=-1).requires_grad_()
    b = F.normalize(torch.randn(5, 4), dim=-1).requires_grad_()
    t = soft_targets(a, b, torch.tensor(2.0), torch.zeros(5, 2))
    assert not t.requires_grad
    assert torch.allclose(t.sum(dim=1), torch.ones(5))
    symmetric_info_nce(a, b, torch.tensor(2.0), t).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_three_modalities_average_the_pairwise_losses() -> None:
    g = torch.Generator().manual_seed(3)
    z = [torch.randn(6, 4, generator=g) for _ in range(3)]
    keys = torch.arange(6).repeat(3, 1).T
    loss = ContrastiveLoss("hard")
    pairs = [loss([z[i], z[j]], keys[:, [i, j]]) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert float(loss(z, keys).detach()) == pytest.approx(float(sum(pairs).detach() / 3), rel=1e-6)


def test_unknown_target_kind_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="hard, soft"):
        ContrastiveLoss("sof")
