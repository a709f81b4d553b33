"""Training kernels of the heads that are cheaper on the CPU than torch's eager ones, computing the same function.

Profiling cbmf-add's token step on a CPU (benchmarks/bench_train.py, ViT-B/16 + BERT-base tokens) showed the
matrix products at the backbones' FLOP rate and about as much time again in element-wise work, most of it
dropout: torch's CPU dropout draws one Mersenne-Twister number per element (`bernoulli_`, ~7 ns), then divides
and multiplies, on the feed-forward's (B, T, 2048) activations and the (B, h, T, T) attention weights - more time
than the matmul that made them. Here a keep mask takes 16 random bits per element (four lanes of one 64-bit
draw), ReLU and its dropout share one mask and one backward pass, and the 1 / (1 - p) scale folds into the next
weight. The drop probability is rounded to a multiple of 2^-16 (0.1 -> 0.1000061) and the scale is that rounded
rate's, so dropout stays unbiased. On a GPU torch's fused (Philox) dropout and SDPA's kernels are used as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

LANES = 1 << 16  # a keep decision from one 16-bit lane
_CHEAP: ContextVar[bool] = ContextVar("cheap_dropout", default=True)


@contextmanager
def torch_dropout() -> Iterator[None]:
    """Within the block, dropout is torch's own everywhere (benchmarks measure the two side by side)."""
    token = _CHEAP.set(False)
    try:
        yield
    finally:
        _CHEAP.reset(token)


def cheap_here(x: torch.Tensor, p: float, training: bool) -> bool:
    """Whether dropout of x takes the 16-bit-lane masks: training on the CPU with 0 < p < 1."""
    return training and 0.0 < p < 1.0 and x.device.type == "cpu" and _CHEAP.get()


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, float]:
    """A Bernoulli keep mask (bool, `shape`) dropping with probability p' = round(p * 2^16) / 2^16, and 1 / (1 - p')."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)  # all 64 bits
    lanes = words.view(torch.int16)[:n].view(shape)  # uniform over [-2^15, 2^15), independent lanes
    drop = round(p * LANES)
    return lanes >= drop - LANES // 2, LANES / (LANES - drop)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout(x, p, training) with the CPU's cheap keep mask (module docstring)."""
    if not cheap_here(x, p, training):
        return F.dropout(x, p, training)
    keep, scale = keep_mask(x.shape, p, x.device)
    return torch.where(keep, x, 0) * scale


def drop(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a dropout submodule (nn.Dropout through `dropout`; anything else, e.g. nn.Identity, as it is)."""
    if type(module) is nn.Dropout:
        return dropout(x, module.p, module.training)
    return module(x)


class _ReluKeep(torch.autograd.Function):
    """relu(x) where keep, else 0: one forward pass and one backward pass (the output's sign is the mask)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        out = torch.where(keep, x, 0).relu_()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0), None


def relu_dropout_linear(x: torch.Tensor, p: float, training: bool, linear: nn.Linear) -> torch.Tensor:
    """linear(dropout(relu(x), p)): the dropout scale folded into linear's weight, ReLU sharing dropout's mask."""
    if not cheap_here(x, p, training):
        return linear(F.dropout(F.relu(x), p, training))
    keep, scale = keep_mask(x.shape, p, x.device)
    return F.linear(_ReluKeep.apply(x, keep), linear.weight * scale, linear.bias)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, p: float,
              training: bool) -> torch.Tensor:
    """Scaled dot-product attention, q, k, v (B, h, T, hd), additive mask (B, 1, 1, T) or None -> (B, h, T, hd).
    F.scaled_dot_product_attention (fused kernels) unless attention dropout runs on the CPU, where SDPA takes its
    math path with `bernoulli_`; there the same math with the cheap mask, its scale folded into v."""
    mask = None if mask is None else mask.to(q.dtype)  # bf16 q under autocast: SDPA wants the mask's dtype to match
    if not cheap_here(q, p, training):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p if training else 0.0)
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)  # (B, h, T, T)
    if mask is not None:
        scores = scores + mask
    probs = torch.softmax(scores, dim=-1)
    keep, scale = keep_mask(probs.shape, p, probs.device)
    return torch.where(keep, probs, 0) @ (v * scale)
