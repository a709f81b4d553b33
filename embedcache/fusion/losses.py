"""Contrastive losses for alignment heads: symmetric InfoNCE with a learnable, clamped log-temperature.

Two target kinds (both from the CBMF work):
- "hard": the diagonal targets of the authors' public code. When a batch holds the same item twice
  (two captions of one image bring their image twice), the duplicates are treated as POSITIVES of each
  other: the target mass of a row is split evenly over every column that shares an item with it, so no
  caption of an image is pushed away from that image. Without duplicates this is exactly the diagonal.
- "soft": the paper's eq. 5-6, t_ij = softmax_j(s * (<x_i, x_j> + <y_i, y_j>) / 2) from the intra-modal
  cosine similarities of the head outputs, with the same logit scale s as the logits. The targets are
  detached (a choice the paper leaves open: gradients through the targets would reward collapsing the
  intra-modal similarities). Duplicated items get equal target mass automatically (their similarity is 1).

The logit scale is exp(clamp(t, t_min, t_max)) with t initialised to 0.07, as in the authors' code (their
comment cites CLIP's 0.07, but their parameter is the log-scale itself, so the initial scale is ~1.07).
"""

from __future__ import annotations

import itertools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from embedcache.registry import Registry

TargetKind = Literal["hard", "soft"]


class LogitScale(nn.Module):
    """The learnable log-temperature t; forward() gives the multiplicative logit scale exp(clamp(t))."""

    def __init__(self, init: float = 0.07, t_min: float = 0.01, t_max: float = 20.0, learnable: bool = True) -> None:
        super().__init__()
        self.t = nn.Parameter(torch.tensor(float(init)), requires_grad=learnable)
        self.t_min, self.t_max = t_min, t_max

    def forward(self) -> torch.Tensor:
        return self.t.clamp(self.t_min, self.t_max).exp()


def positive_mask(keys: torch.Tensor) -> torch.Tensor:
    """keys (B, M) item rows per modality -> (B, B) bool: True where two batch rows share any item."""
    return (keys.unsqueeze(1) == keys.unsqueeze(0)).any(dim=-1)


def hard_targets(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Diagonal targets, with rows sharing an item as extra positives; rows sum to 1. (B, B)."""
    pos = positive_mask(keys).to(a.dtype)
    return pos / pos.sum(dim=1, keepdim=True)


def soft_targets(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Eq. 5: softmax over j of s * (a_i.a_j + b_i.b_j) / 2 for L2-normalised a, b (B, d); detached."""
    with torch.no_grad():
        return torch.softmax(scale * (a @ a.T + b @ b.T) / 2, dim=1)


TARGETS: Registry = Registry("contrastive target kind")
TARGETS.register("hard", hard_targets)
TARGETS.register("soft", soft_targets)


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 6: mean of the a->b and b->a cross-entropies of scale * a b^T against targets (B, B) and its
    transpose. `a`, `b` (B, d) must already be L2-normalised."""
    logits = scale * (a @ b.T)  # (B, B): row i = item i of a against every b
    loss_ab = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_ba = -(targets.T * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (loss_ab + loss_ba) / 2


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE over every pair of modalities (mean over pairs), with its own logit scale."""

    def __init__(self, targets: TargetKind = "hard", temperature_init: float = 0.07, t_min: float = 0.01,
                 t_max: float = 20.0, learnable: bool = True) -> None:
        super().__init__()
        self.make_targets = TARGETS.get(targets)
        self.targets = targets
        self.scale = LogitScale(temperature_init, t_min, t_max, learnable)

    def forward(self, embs: list[torch.Tensor], keys: torch.Tensor) -> torch.Tensor:
        """embs: per modality (B, d) head outputs (normalised here); keys (B, M) item rows -> scalar loss."""
        z = [F.normalize(e, dim=-1) for e in embs]
        s = self.scale()
        losses = []
        for i, j in itertools.combinations(range(len(z)), 2):
            t = self.make_targets(z[i], z[j], s, keys)
            losses.append(symmetric_info_nce(z[i], z[j], s, t))
        return torch.stack(losses).mean()
