"""Classifier heads over pooled embeddings: the BERT + ResNet paper's MLP, PCA and attention fusions.

Registered names (all trained by `embedcache.fusion.classify.fit_classifier`, labels from the stores):
- `mlp-text`, `mlp-image`: one store through an MLP (the paper's single-modality classifiers; the BERT vs
  BGE comparison is two `mlp-text` runs on two text stores).
- `mlp-concat`: the pooled vectors of every input store concatenated, then the MLP.
- `pca-concat`: each modality reduced by PCA (fitted on the TRAINING split only, in `prepare`; 3 dimensions
  by default as in the paper) before the concat MLP; `pca_on="fused"` reduces the concatenation instead
  (the paper's results section words it that way).
- `mlp-attention`: each modality through one hidden layer, attention weights over the modalities from their
  similarity (learned query/key maps), the weighted sum, three hidden layers, the classifier.
- `linear`: concatenated pooled inputs -> dropout -> one linear layer (CLFA's ResNet/ViT/BERT-only and
  CLIP-linear baselines).
- `mlp-supcon`: an MLP encoder trained first with the N-pair / supervised-contrastive loss, then frozen
  under a small classifier (the late-fusion paper's contrastive image encoder); two phases.

Outputs are logits (B, C): softmax + cross-entropy for single-label tasks, sigmoid + BCE for multi-label
ones (`label_kind`). The paper gives no layer sizes; defaults are ours (hidden 512 -> 256, dropout 0.1 as
in the paper). Stage two: nothing here imports transformers or timm.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from embedcache.errors import BadInputError
from embedcache.fusion.heads.base import HEADS, Batch, Head, HeadSpec, masked_mean
from embedcache.registry import Registry

if TYPE_CHECKING:  # views imports heads.base; a runtime import here would be circular
    from embedcache.fusion.views import PairData

# ---------------------------------------------------------------- losses and probabilities per label kind


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels.long())


def _bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


@dataclass(frozen=True)
class LabelKind:
    """How logits (B, C) meet labels: the training loss and the probabilities."""

    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    proba: Callable[[torch.Tensor], torch.Tensor]


LABEL_KINDS: Registry[LabelKind] = Registry("label kind")
LABEL_KINDS.register("single", LabelKind(_ce, lambda z: torch.softmax(z, dim=-1)))  # labels (B,) int64
LABEL_KINDS.register("multi", LabelKind(_bce, torch.sigmoid))  # labels (B, C) multi-hot


def make_mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int | None, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout per hidden size, then a final Linear to `out_dim` (None: no final layer)."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = h
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def pooled_inputs(batch: Batch) -> list[torch.Tensor]:
    """Every input as one vector per item: (B, T, D_m) with mask -> (B, D_m) (T is 1 for pooled stores)."""
    return [masked_mean(x, mask) for x, mask in batch.inputs]


# ---------------------------------------------------------------- the classifier base


@dataclass(frozen=True)
class MLPCfg:
    """num_classes and label_kind come from the stores (fit_classifier sets them)."""

    num_classes: int = 0
    label_kind: str = "single"  # "single" (softmax/CE) or "multi" (sigmoid/BCE)
    hidden: tuple[int, ...] = (512, 256)
    dropout: float = 0.1


class ClassifierHead(Head):
    """A head whose output is class logits (B, C); the loss comes from the label kind.

    `task`, `phases` and `prepare` are what `embedcache.fusion.classify.fit_classifier` uses beside the generic
    loop: `prepare(train)` fits anything fitted in closed form on the training rows only (PCA), and each
    name in `phases` is one `fit` after `set_phase(name)` (two-phase heads such as `mlp-supcon`).
    """

    Cfg: ClassVar[type] = MLPCfg
    task: ClassVar[str] = "classify"
    default_setting: ClassVar[str] = "shapes-classify"
    phases: ClassVar[tuple[str, ...]] = ("classify",)
    arity: ClassVar[tuple[int, int]] = (1, 64)  # allowed number of input stores (min, max)

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__(spec)
        lo, hi = self.arity
        if not lo <= len(spec.in_dims) <= hi:
            want = f"exactly {lo}" if lo == hi else f"{lo} to {hi}"
            raise BadInputError(f"head {spec.name!r} takes {want} input store(s); got {len(spec.in_dims)} "
                                f"({', '.join(spec.modalities) or spec.in_dims}). Pass that many --backbone options")
        if self.cfg.num_classes < 1:
            raise BadInputError(f"head {spec.name!r} needs num_classes >= 1; got {self.cfg.num_classes}. "
                                "fit_classifier sets it from the store's labels; pass num_classes=C otherwise")
        self.kind = LABEL_KINDS.get(self.cfg.label_kind)
        self.out_dim = self.cfg.num_classes
        self.phase = self.phases[-1]

    @classmethod
    def token_inputs(cls, num_inputs: int) -> list[bool | None]:
        """Per input: False (pooled vectors), None (tokens when the store holds them) or True (tokens required)."""
        return [False] * num_inputs

    def logits(self, batch: Batch) -> torch.Tensor:
        """Class logits (B, C) of a batch."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.logits(batch)

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.kind.loss(self.logits(batch), batch.labels)

    def predict_proba(self, batch: Batch) -> torch.Tensor:
        """Class probabilities (B, C): softmax (single-label) or per-class sigmoid (multi-label)."""
        return self.kind.proba(self.logits(batch))

    def prepare(self, train: PairData) -> None:
        """Fit closed-form parts on the training rows only, before training; nothing by default."""

    def set_phase(self, phase: str) -> None:
        """Switch the training phase (one of `phases`)."""
        if phase not in self.phases:
            raise BadInputError(f"head {self.spec.name!r} has phases {self.phases}; got {phase!r}")
        self.phase = phase


# ---------------------------------------------------------------- concat MLPs


class ConcatMLPHead(ClassifierHead):
    """Pooled inputs concatenated (B, sum D_m) -> MLP -> logits (B, C)."""

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__(spec)
        self.mlp = make_mlp(self.features_dim(), self.cfg.hidden, self.cfg.num_classes, self.cfg.dropout)

    def features_dim(self) -> int:
        return sum(self.spec.in_dims)

    def features(self, batch: Batch) -> torch.Tensor:
        """The MLP's input (B, F)."""
        return torch.cat(pooled_inputs(batch), dim=-1)

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.mlp(self.features(batch))

    def encode(self, m: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_modalities != 1:
            raise NotImplementedError(f"{self.spec.name} fuses its inputs before any layer; it has no "
                                      "per-modality encoder (use mlp-attention or a single-input head)")
        return self.mlp[:-1](masked_mean(x, mask))  # (B, last hidden): everything but the classifier


@HEADS.register("mlp-text")
class MLPTextHead(ConcatMLPHead):
    """The single text classifier of the BERT + ResNet paper (one text store)."""

    default_setting = "shapes-text"
    arity = (1, 1)


@HEADS.register("mlp-image")
class MLPImageHead(ConcatMLPHead):
    """The single image classifier of the BERT + ResNet paper (one image store)."""

    default_setting = "shapes-image"
    arity = (1, 1)


@HEADS.register("mlp-concat")
class MLPConcatHead(ConcatMLPHead):
    """The paper's `MLP multimodal model by concat`; also CLFA's BERT + ViT concat baseline."""

    arity = (2, 64)


@dataclass(frozen=True)
class LinearCfg(MLPCfg):
    hidden: tuple[int, ...] = ()


@HEADS.register("linear")
class LinearHead(ConcatMLPHead):
    """Dropout + one linear layer on the concatenated pooled inputs (one store or several)."""

    Cfg = LinearCfg

    def encode(self, m: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return masked_mean(x, mask)  # a linear head has no hidden layer: its features are the input


# ---------------------------------------------------------------- PCA then concat


@dataclass(frozen=True)
class PCACfg(MLPCfg):
    pca_dims: int = 3  # the paper's choice; sweep with embedcache.fusion.classify.pca_sweep
    pca_on: str = "modality"  # "modality": one PCA per store (the issue); "fused": one PCA of the concatenation


PCA_SWEEP: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 50, 100)


class PCADimsError(BadInputError):
    """pca_dims is outside 1..(smallest input dimension)."""


PCA_BLOCK_ROWS = 65_536  # rows per float64 block while accumulating the covariance


def fit_pca(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and the top-k principal axes (D, k) of rows x (N, D), in float64; each axis's largest
    |entry| is made positive so the result is deterministic (eigenvector signs are arbitrary).

    The axes are the top eigenvectors of the (D, D) scatter matrix, accumulated over blocks of rows: memory
    O(D^2) whatever N (a thin SVD of the centred float64 rows held N x D twice: ~14 GB for COCO's 414k
    caption rows of 2,048-d ResNet-152 vectors)."""
    n, d = x.shape
    mean = sum(x[i:i + PCA_BLOCK_ROWS].double().sum(dim=0) for i in range(0, n, PCA_BLOCK_ROWS)) / n  # (D,)
    scatter = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    for i in range(0, n, PCA_BLOCK_ROWS):
        block = x[i:i + PCA_BLOCK_ROWS].double() - mean  # (b, D)
        scatter += block.T @ block
    _, vecs = torch.linalg.eigh(scatter)  # ascending eigenvalues; columns are the axes
    comps = vecs[:, -k:].flip(1).T  # (k, D), largest variance first
    sign = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))  # (k, 1)
    return mean, (comps * sign).T.contiguous()


@HEADS.register("pca-concat")
class PCAConcatHead(ConcatMLPHead):
    """`Multimodal model after PCA`: per-modality PCA (fitted in `prepare` on training rows only) -> concat MLP.

    The PCA lives in buffers (mean_m (D_m,), axes_m (D_m, k)), so it is saved and loaded with the checkpoint.
    """

    Cfg = PCACfg
    arity = (1, 64)

    def __init__(self, spec: HeadSpec) -> None:
        cfg = self.make_cfg(spec.opts())
        if cfg.pca_on not in ("modality", "fused"):
            raise BadInputError(f"pca_on must be 'modality' or 'fused'; got {cfg.pca_on!r}")
        groups = [[d] for d in spec.in_dims] if cfg.pca_on == "modality" else [[sum(spec.in_dims)]]
        too_big = [g[0] for g in groups if cfg.pca_dims > g[0]]
        if cfg.pca_dims < 1 or too_big:
            raise PCADimsError(f"pca_dims must be in 1..{min(g[0] for g in groups)} (input dims {spec.in_dims}); "
                             f"got {cfg.pca_dims}")
        self._groups = groups
        super().__init__(spec)
        for i, (d,) in enumerate(groups):
            self.register_buffer(f"pca_mean_{i}", torch.zeros(d))
            self.register_buffer(f"pca_axes_{i}", torch.zeros(d, cfg.pca_dims))
        self.register_buffer("pca_fitted", torch.zeros((), dtype=torch.bool))

    def features_dim(self) -> int:
        return self.cfg.pca_dims * len(self._groups)

    def _blocks(self, batch_or_vectors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per PCA group, the vectors it reduces: each modality, or their concatenation."""
        if self.cfg.pca_on == "modality":
            return batch_or_vectors
        return [torch.cat(batch_or_vectors, dim=-1)]

    def features(self, batch: Batch) -> torch.Tensor:
        if not bool(self.pca_fitted):
            raise RuntimeError(f"{self.spec.name}: the PCA is not fitted. Train with "
                               "embedcache.fusion.classify.fit_classifier (it calls head.prepare(train) on the "
                               "training split), or call head.prepare(train_data) before fitting")
        reduced = [(v - getattr(self, f"pca_mean_{i}")) @ getattr(self, f"pca_axes_{i}")  # (B, k)
                   for i, v in enumerate(self._blocks(pooled_inputs(batch)))]
        return torch.cat(reduced, dim=-1)

    def prepare(self, train: PairData) -> None:
        """Fit the PCA on the training rows only: each modality on the distinct items its training rows use
        (an image repeated over its captions counts once), `fused` on the joined training rows."""
        if self.cfg.pca_on == "modality":
            blocks = [view.pooled.index_select(0, torch.unique(train.rows[:, m]))
                      for m, view in enumerate(train.views)]
        else:
            blocks = [torch.cat([view.pooled.index_select(0, train.rows[:, m]) for m, view in enumerate(train.views)],
                                dim=-1)]
        for i, x in enumerate(blocks):
            mean, axes = fit_pca(x, self.cfg.pca_dims)
            getattr(self, f"pca_mean_{i}").copy_(mean)
            getattr(self, f"pca_axes_{i}").copy_(axes)
        self.pca_fitted.fill_(True)


# ---------------------------------------------------------------- attention fusion


@dataclass(frozen=True)
class AttentionCfg(MLPCfg):
    branch_dim: int = 512  # each modality's hidden layer
    hidden: tuple[int, ...] = (512, 256, 128)  # the three hidden layers after the fusion


@HEADS.register("mlp-attention")
class AttentionMLPHead(ClassifierHead):
    """`MLP multimodal model by attention`: h_m = ReLU(W_m x_m) (B, H) per modality; the score of modality m is
    its similarity to the other modalities, s_m = g * mean_{n != m} cos(W_q h_n, W_k h_m) with a learned scale
    g (init 1); weights a = softmax_m(s); fused = sum_m a_m h_m (B, H) -> three hidden layers -> logits.
    The paper gives only "attention weights from the similarity of the text and image embeddings, then their
    weighted sum"; the learned query/key maps are our reading (one plain cosine would give both modalities
    the same score), and the cosine keeps the softmax from saturating on unnormalised features (a raw scaled
    dot product put all weight on one modality within an epoch and never recovered)."""

    Cfg = AttentionCfg
    arity = (2, 64)

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__(spec)
        h = self.cfg.branch_dim
        self.branches = nn.ModuleList(nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Dropout(self.cfg.dropout))
                                      for d in spec.in_dims)
        self.w_query, self.w_key = nn.Linear(h, h, bias=False), nn.Linear(h, h, bias=False)
        self.log_scale = nn.Parameter(torch.zeros(()))  # g = exp(log_scale), init 1
        self.mlp = make_mlp(h, self.cfg.hidden, self.cfg.num_classes, self.cfg.dropout)
        self.last_weights: torch.Tensor | None = None  # (B, M) attention weights of the last batch, detached

    def encode(self, m: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.branches[m](masked_mean(x, mask))  # (B, H)

    def attention(self, hs: torch.Tensor) -> torch.Tensor:
        """Weights (B, M) over the modalities from hs (B, M, H)."""
        q, k = F.normalize(self.w_query(hs), dim=-1), F.normalize(self.w_key(hs), dim=-1)  # (B, M, H)
        sim = torch.einsum("bnh,bmh->bnm", q, k) * self.log_scale.clamp(max=math.log(100.0)).exp()  # (B, M, M)
        others = ~torch.eye(hs.shape[1], dtype=torch.bool, device=hs.device)  # n != m
        scores = (sim * others).sum(dim=1) / (hs.shape[1] - 1)  # (B, M)
        return torch.softmax(scores, dim=-1)

    def fused(self, batch: Batch) -> torch.Tensor:
        """The attention-weighted sum (B, H) of the modality branches."""
        hs = torch.stack([self.encode(m, x, mask) for m, (x, mask) in enumerate(batch.inputs)], dim=1)  # (B, M, H)
        weights = self.attention(hs)
        self.last_weights = weights.detach()
        return torch.einsum("bm,bmh->bh", weights, hs)

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.mlp(self.fused(batch))


# ---------------------------------------------------------------- supervised contrastive (N-pair) encoder


def npairs_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """The late-fusion authors' loss (tfa.losses.npairs_loss on L2-normalised features / temperature):
    cross-entropy of the logits z z^T / t (B, B) against targets spread evenly over every item of the same
    class, the item itself included (as in TensorFlow Addons)."""
    z = F.normalize(z, dim=-1)
    logits = z @ z.T / temperature  # (B, B)
    same = (labels.unsqueeze(0) == labels.unsqueeze(1)).to(z.dtype)  # (B, B), diagonal 1
    targets = same / same.sum(dim=1, keepdim=True)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


@dataclass(frozen=True)
class SupConCfg(MLPCfg):
    hidden: tuple[int, ...] = (512,)  # the trainable encoder over the frozen features
    projection_dim: int = 64  # the paper: "a single linear dense layer of size 64" (the code: 128, ReLU)
    temperature: float = 0.05  # the authors' (Keras supervised-contrastive example)
    classifier_hidden: tuple[int, ...] = (256,)  # the authors' Dense(256, relu) before the softmax layer


@HEADS.register("mlp-supcon")
class SupConMLPHead(ClassifierHead):
    """Phase `contrastive`: encoder MLP + linear projection trained with `npairs_loss` on the labels.
    Phase `classify`: the encoder frozen (its output detached), a small classifier trained with cross-entropy."""

    Cfg = SupConCfg
    default_setting = "shapes-image"
    phases = ("contrastive", "classify")
    arity = (1, 1)

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__(spec)
        if self.cfg.label_kind != "single":
            raise BadInputError("mlp-supcon needs single-label classes (the N-pair loss groups items by class); "
                                f"got label_kind={self.cfg.label_kind!r}")
        cfg = self.cfg
        self.encoder_mlp = make_mlp(spec.in_dims[0], cfg.hidden, None, cfg.dropout)
        width = cfg.hidden[-1] if cfg.hidden else spec.in_dims[0]
        self.projection = nn.Linear(width, cfg.projection_dim)
        self.classifier = make_mlp(width, cfg.classifier_hidden, cfg.num_classes, cfg.dropout)

    def encode(self, m: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder_mlp(masked_mean(x, mask))

    def logits(self, batch: Batch) -> torch.Tensor:
        h = self.encode(0, *batch.inputs[0])
        return self.classifier(h.detach() if self.phase == "classify" else h)

    def loss(self, batch: Batch) -> torch.Tensor:
        if self.phase == "contrastive":
            z = self.projection(self.encode(0, *batch.inputs[0]))
            return npairs_loss(z, batch.labels, self.cfg.temperature)
        return super().loss(batch)


def classifier_names() -> list[str]:
    """Registered heads that are classifiers (trained by embedcache.fusion.classify.fit_classifier)."""
    return [n for n in HEADS.names() if getattr(HEADS.get(n), "task", None) == "classify"]
