"""Pooling registries: how a (B, T, D) token sequence becomes one (B, D) vector, per adapter family.

Text poolings follow the libraries they imitate: `mean-l2` is sentence-transformers' mean over the
attention mask then L2 normalisation; `cls-l2` is BGE's CLS vector normalised; `pooler` is BERT's
trained tanh pooler (refused when the checkpoint has none, as roberta-base).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from embedcache.errors import BadInputError
from embedcache.registry import Registry

# fn(hidden (B, T, D) fp32, pooler_output (B, D) or None, mask (B, T) bool) -> (B, D)
TextPooling = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]
TEXT_POOLINGS: Registry[TextPooling] = Registry("text pooling")


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens only: (B, T, D), (B, T) -> (B, D) (sentence-transformers' formula)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def _pooler(hidden: torch.Tensor, pooler: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    if pooler is None:
        raise BadInputError("pooling 'pooler' needs a model with a pooler layer; use cls or mean")
    return pooler


TEXT_POOLINGS.register("cls", lambda hidden, pooler, mask: hidden[:, 0])
TEXT_POOLINGS.register("mean", lambda hidden, pooler, mask: masked_mean(hidden, mask))
TEXT_POOLINGS.register("pooler", _pooler)
TEXT_POOLINGS.register("cls-l2", lambda hidden, pooler, mask: F.normalize(hidden[:, 0], dim=-1))
TEXT_POOLINGS.register("mean-l2", lambda hidden, pooler, mask: F.normalize(masked_mean(hidden, mask), dim=-1))
