"""An alignment head of your own, in one file: `embedcache train docs/examples/my_heads.py:gated-mean`.

The file is imported by path; `@HEADS.register` makes its head a registered name like the package's own
(`cbmf-add`, ...), so it trains, evaluates and enters a pipeline (`head = "my_heads.py:gated-mean"`) without
editing embedcache. See docs/own-head.md for the contract.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from embedcache.fusion.heads import HEADS, Batch, Head, HeadSpec
from embedcache.fusion.losses import ContrastiveLoss


@dataclass(frozen=True)
class GatedMeanCfg:
    """Options (`-o dim=128`); every field needs a default. The run id hashes the values that differ."""

    dim: int = 64
    targets: str = "hard"  # contrastive targets: hard (diagonal) | soft
    temperature_init: float = 0.07


@HEADS.register("gated-mean")
class GatedMeanHead(Head):
    """Per modality: a gate over the tokens, their gated mean, a linear map into a shared space; InfoNCE."""

    Cfg = GatedMeanCfg
    default_setting = "text-image"  # `embedcache train` without --dataset: shapes, effnet-lite0 + minilm

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__(spec)  # sets self.spec and self.cfg (a GatedMeanCfg)
        self.out_dim = self.cfg.dim
        self.gates = nn.ModuleList(nn.Linear(d, 1) for d in spec.in_dims)  # one per modality, D_m -> 1
        self.maps = nn.ModuleList(nn.Linear(d, self.cfg.dim) for d in spec.in_dims)
        self.criterion = ContrastiveLoss(self.cfg.targets, self.cfg.temperature_init)

    def encode(self, m: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D_m) tokens (T = 1 for pooled stores), mask (B, T) or None -> (B, dim)."""
        w = self.gates[m](x).squeeze(-1)  # (B, T)
        if mask is not None:
            w = w.masked_fill(~mask, float("-inf"))
        pooled = (w.softmax(dim=1).unsqueeze(-1) * x).sum(dim=1)  # (B, D_m)
        return self.maps[m](pooled)

    def loss(self, batch: Batch) -> torch.Tensor:
        """Symmetric InfoNCE over the modalities' outputs; equal `batch.keys` (the same image twice) are positives."""
        outputs = [self.encode(m, x, mask) for m, (x, mask) in enumerate(batch.inputs)]
        return self.criterion(outputs, batch.keys)

    def log_values(self) -> dict[str, float]:
        return {"logit_scale": float(self.criterion.scale().detach())}
