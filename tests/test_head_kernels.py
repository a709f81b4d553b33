"""The heads' CPU training kernels (embedcache.fusion.heads.kernels): 16-bit-lane dropout masks drop at the
rounded rate and stay unbiased, ReLU sharing the dropout mask and the attention with dropout compute exactly
what their definitions say (same draws), and outside training on the CPU torch's own ops are used."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from embedcache.fusion.heads import kernels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_masks_drop_at_the_rounded_rate_in_every_lane(p: float) -> None:
    torch.manual_seed(0)
    keep, scale = kernels.keep_mask((4096, 64), p)
    rate = round(p * 65536) / 65536
    assert keep.dtype == torch.bool and abs(scale - 1 / (1 - rate)) < 1e-12
    per_lane = 1 - keep.view(-1, 4).float().mean(0)  # each of the four 16-bit lanes of a 64-bit draw
    assert (per_lane - rate).abs().max() < 5 * (rate * (1 - rate) / (4096 * 16)) ** 0.5, per_lane
    assert not torch.equal(keep[:, :32], keep[:, 32:])


def test_dropout_is_unbiased_and_torchs_outside_cpu_training() -> None:
    torch.manual_seed(0)
    x = torch.ones(1 << 18)
    y = kernels.dropout(x, 0.1, True)
    assert torch.unique(y).tolist() == [0.0, pytest.approx(65536 / (65536 - 6554))]
    assert abs(y.mean().item() - 1) < 0.005
    assert torch.equal(kernels.dropout(x, 0.1, False), x)
    with kernels.torch_dropout():
        torch.manual_seed(0)
        a = kernels.dropout(x, 0.3, True)
    torch.manual_seed(0)
    assert torch.equal(a, F.dropout(x, 0.3, True))


def test_relu_dropout_linear_is_its_definition_with_the_same_draws() -> None:
    lin = nn.Linear(16, 8)
    x = torch.randn(5, 7, 16, requires_grad=True)
    torch.manual_seed(3)
    out = kernels.relu_dropout_linear(x, 0.2, True, lin)
    torch.manual_seed(3)
    keep, scale = kernels.keep_mask(x.shape, 0.2)
    ref = lin(F.relu(x) * keep * scale)
    torch.testing.assert_close(out, ref)
    w = torch.randn_like(out)
    (gx,) = torch.autograd.grad((out * w).sum(), x)
    (rx,) = torch.autograd.grad((ref * w).sum(), x)
    torch.testing.assert_close(gx, rx)


def test_attention_with_dropout_is_its_definition_with_the_same_draws() -> None:
    q, k, v = (torch.randn(3, 2, 6, 4) for _ in range(3))
    mask = torch.zeros(3, 1, 1, 6).masked_fill_(torch.arange(6).view(1, 1, 1, 6) >= 4, float("-inf"))
    torch.manual_seed(5)
    out = kernels.attention(q, k, v, mask, 0.25, True)
    torch.manual_seed(5)
    keep, scale = kernels.keep_mask((3, 2, 6, 6), 0.25)
    probs = torch.softmax(q @ k.transpose(-2, -1) / 2 + mask, dim=-1)
    torch.testing.assert_close(out, (probs * keep * scale) @ v)
    no_drop = kernels.attention(q, k, v, mask, 0.25, False)
    torch.testing.assert_close(no_drop, probs @ v)
