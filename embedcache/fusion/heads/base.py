"""The head contract: a small trainable module over cached embeddings, registered by name in HEADS.

A head maps one or more modalities (each a store of pooled vectors or token sequences) to outputs and
supplies its own loss for a minibatch, so `embedcache.fusion.train` stays generic: contrastive alignment heads
(CBMF, ConVIRT-style) and the classifier heads of later issues share one loop, one run format and one
checkpoint format. A head is fully described by a `HeadSpec` (plain data); `create_head(spec)` rebuilds
it, which is how a checkpoint is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from embedcache.errors import BadInputError
from embedcache.fusion.heads.kernels import drop
from embedcache.fusion.losses import ContrastiveLoss
from embedcache.registry import Registry


@dataclass(frozen=True)
class HeadSpec:
    """Everything needed to rebuild a head: registered name, input dims per modality, options.

    `modalities` names each input ("image", "text", ...) in input order; `options` are the head's
    config fields that differ from its defaults, as sorted (key, value) pairs so the spec is hashable
    and its fingerprint canonical.
    """

    name: str
    in_dims: tuple[int, ...]
    modalities: tuple[str, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def create(cls, name: str, in_dims: tuple[int, ...] | list[int], modalities: tuple[str, ...] | list[str] = (),
               **options: Any) -> HeadSpec:
        """Build a spec, checking `name` against HEADS and every option against the head's Cfg fields."""
        head_cls = HEADS.get(name)
        cfg = head_cls.make_cfg(dict(options))  # raises on unknown keys / bad values
        defaults = head_cls.Cfg()
        changed = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                   if getattr(cfg, f.name) != getattr(defaults, f.name)}
        return cls(name, tuple(int(d) for d in in_dims), tuple(modalities), tuple(sorted(changed.items())))

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> HeadSpec:
        """Inverse of `embedcache.fingerprint.to_plain` (JSON lists back to tuples)."""
        opts = {k: v for k, v in plain.get("options", [])}
        return cls.create(plain["name"], plain["in_dims"], plain.get("modalities", ()), **opts)

    def opts(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass
class Batch:
    """One minibatch, gathered from in-RAM tensors.

    inputs: per modality (x (B, T, D_m) float32, mask (B, T) bool or None when every token is real).
    keys:   (B, M) int64, the row of each item in its store: equal keys mark the same item (a duplicated
            image among its captions), which contrastive losses treat as positives.
    labels: (B,) int64 or (B, C) multi-hot, for classifier heads; None for alignment.
    """

    inputs: list[tuple[torch.Tensor, torch.Tensor | None]]
    keys: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.keys.shape[0])


@dataclass(frozen=True)
class EmptyCfg:
    """A head without options."""


class Head(nn.Module):
    """Base class of every registered head. Subclasses set `Cfg` and implement `encode` and `loss`."""

    Cfg: ClassVar[type] = EmptyCfg
    # Bumped when a head's default computation changes (same options, other numbers), so a run trained by
    # the old code is never found for the new one; 0 is left out of run ids.
    revision: ClassVar[int] = 0
    default_setting: ClassVar[str] = "text-image"  # the training setting `embedcache train NAME` uses
    out_dim: int

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.cfg = self.make_cfg(spec.opts())

    @classmethod
    def make_cfg(cls, options: dict[str, Any]) -> Any:
        """The head's frozen config from plain options (JSON lists become tuples); unknown keys fail."""
        known = {f.name for f in dataclasses.fields(cls.Cfg)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise BadInputError(f"head option(s) {unknown} not understood by {cls.__name__}; "
                                f"known options: {', '.join(sorted(known)) or '(none)'}")
        return cls.Cfg(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})

    @classmethod
    def setting_for(cls, name: str) -> str:
        """The default training setting (see `embedcache.fusion.settings.SETTINGS`) of the head registered as `name`."""
        return cls.default_setting

    @property
    def num_modalities(self) -> int:
        return len(self.spec.in_dims)

    def encode(self, m: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embed modality `m`: x (B, T, D_m), mask (B, T) or None -> (B, out_dim)."""
        raise NotImplementedError

    def loss(self, batch: Batch) -> torch.Tensor:
        """The scalar training loss of one batch (the head decides what it is)."""
        raise NotImplementedError

    def log_values(self) -> dict[str, float]:
        """Scalars worth showing while training (e.g. the temperature); empty by default."""
        return {}

    def encoder(self, m: int) -> nn.Module:
        """Modality `m` as a stand-alone module (x (B, D) or (B, T, D), mask) -> (B, out_dim) for fine-tuning."""
        return ModalityEncoder(self, m)


class ModalityEncoder(nn.Module):
    """One side of a head as an nn.Module; its parameters are the head's own (fine-tuning trains them)."""

    def __init__(self, head: Head, m: int) -> None:
        super().__init__()
        self.head = head
        self.m = m
        self.out_dim = head.out_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 2:  # pooled (B, D) -> one token per item
            x = x.unsqueeze(1)
        return self.head.encode(self.m, x, mask)


HEADS: Registry[type[Head]] = Registry("head")


def create_head(spec: HeadSpec) -> Head:
    """Instantiate the head registered under `spec.name`."""
    return HEADS.get(spec.name)(spec)


# ---------------------------------------------------------------- layers shared by head families


class ProjectionHead(nn.Module):
    """g_m of CBMF and ConVIRT, token-wise: Linear, GELU, Linear, Dropout, LayerNorm, as the CBMF authors'
    ProjectionHead (text_image/baseline.py, no residual). residual=True adds the first Linear's output before
    the LayerNorm, as the common simple-CLIP projection head does."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1, residual: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_dim)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)  # (..., out_dim)
        out = drop(self.drop, self.fc2(nn.functional.gelu(h)))  # the CPU's cheap dropout (kernels)
        return self.norm(h + out if self.residual else out)


class ContrastiveHead(Head):
    """An alignment head: a projection g_m per modality into `cfg.dim`, then symmetric InfoNCE over the
    outputs of `encode_all` (embedcache.fusion.losses). Its Cfg has dim, dropout, projection_residual and the loss
    fields (targets, temperature_init/min/max, learn_temperature); subclasses add what follows the projections."""

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__(spec)
        cfg = self.cfg
        self.out_dim = cfg.dim
        self.projections = nn.ModuleList(ProjectionHead(d, cfg.dim, cfg.dropout, cfg.projection_residual)
                                         for d in spec.in_dims)
        self.criterion = ContrastiveLoss(cfg.targets, cfg.temperature_init, cfg.temperature_min,
                                         cfg.temperature_max, cfg.learn_temperature)

    def encode_all(self, inputs: list[tuple[torch.Tensor, torch.Tensor | None]]) -> list[torch.Tensor]:
        """Every modality of a batch -> [(B, out_dim)]."""
        return [self.encode(m, x, mask) for m, (x, mask) in enumerate(inputs)]

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.criterion(self.encode_all(batch.inputs), batch.keys)

    def log_values(self) -> dict[str, float]:
        return {"logit_scale": float(self.criterion.scale().detach())}


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over tokens: x (B, T, D), mask (B, T) bool (None: all real) -> (B, D)."""
    if mask is None:
        return x.mean(dim=1)
    w = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
