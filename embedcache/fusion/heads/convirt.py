"""`convirt-frozen`: the contrastive baseline of the CBMF tables, trained on the same frozen features.

One projection per modality (the same g_m as CBMF: Linear, GELU, Linear, Dropout, LayerNorm, no residual,
applied token-wise, then mean pooling over the real tokens), no context and no shared encoder, and the
same loss as CBMF, so the difference between the rows is the context and the Deep Fusion Encoder. The
paper's ConVIRT fine-tunes its backbones; results must call this row the frozen form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from embedcache.fusion.heads.base import HEADS, ContrastiveHead, masked_mean


@dataclass(frozen=True)
class ConVIRTCfg:
    """Projection size and loss settings (the CBMF defaults, for a like-for-like baseline)."""

    dim: int = 256
    dropout: float = 0.1
    projection_residual: bool = False  # the CBMF authors' ProjectionHead has none
    targets: str = "hard"
    temperature_init: float = 0.07
    temperature_min: float = 0.01
    temperature_max: float = 20.0
    learn_temperature: bool = True


@HEADS.register("convirt-frozen")
class ConVIRTHead(ContrastiveHead):
    """Per-modality projections into a shared space, trained with symmetric InfoNCE."""

    Cfg = ConVIRTCfg
    revision = 1  # 1: projection without residual

    def encode(self, m: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return masked_mean(self.projections[m](x), mask)  # (B, T, d) -> (B, d)
