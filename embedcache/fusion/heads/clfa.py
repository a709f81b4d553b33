"""CLFA (Zhang, Chang and Wu: CLIP-guided contrastive feature alignment) on frozen cached features.

Inputs, in order: the text store (BERT tokens, the queries), the image store (ViT tokens, keys and values)
and, for `clfa` only, the teacher's text and image stores (pooled CLIP embeddings, or any aligned pair of
stores such as a CBMF head's outputs when no CLIP weights are at hand). Following the authors' code
(github ChangKe123/CLFA, models.py; ../shared/seed-notes.md):
- mapping nets MLP_t, MLP_i: token-wise Linear(D, 1536) -> ReLU -> Linear(1536, 512) into the teacher's space;
- contrastive alignment per modality: the masked mean of the mapped tokens against the teacher's embedding
  of the same item, symmetric InfoNCE with a fixed temperature 0.1 (items repeated in a batch, e.g. one
  image under several captions, are positives of each other); the paper's L_con = (L_i + L_t) / 2, the
  code's L_i + L_t with `contrastive_sum=True`;
- 3 cross-attention layers (512-d, 8 heads): text self-attention, then text -> image cross-attention, each
  with residual + LayerNorm, then a GELU feed-forward 512 -> 2048 -> 512 with residual + LayerNorm (the
  authors' third, hashtag/knowledge attention is left out: the stores hold no hashtags);
- pooling over the text tokens (average by default, as the authors' runs; `max` and `cls` as in the code),
  dropout 0.1, a linear classifier; loss alpha * L_con + beta * cross-entropy (alpha, beta 1 in the code;
  the paper sweeps alpha over 0.1, 0.2, 0.5, 2, 5).
The paper fine-tunes BERT and ViT end to end; these heads train on frozen features (results must say so).
`cross-attention` is the same network without teacher inputs and contrastive loss: the CLIP + cross-attention
baseline on CLIP token stores and the no-alignment ablation on BERT + ViT stores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from embedcache.errors import BadInputError
from embedcache.fusion.heads.base import HEADS, Batch, HeadSpec, masked_mean
from embedcache.fusion.heads.mlp import ClassifierHead, MLPCfg
from embedcache.fusion.losses import hard_targets, symmetric_info_nce
from embedcache.registry import Registry


@dataclass(frozen=True)
class CrossAttentionCfg(MLPCfg):
    """The authors' sizes: 512-d (CLIP ViT-B/32's space), MLP hidden 512 * 3, 3 layers of 8 heads, FFN 2048."""

    dim: int = 512
    mlp_hidden: int = 1536
    layers: int = 3
    num_heads: int = 8
    ff_dim: int = 2048
    pooling: str = "avg"  # "avg" (the authors' runs, --pooling_type 1), "max", "cls" (BertPooler)


@dataclass(frozen=True)
class CLFACfg(CrossAttentionCfg):
    dim: int = 0  # 0: the teacher stores' dimension (512 for CLIP ViT-B/32)
    alpha: float = 1.0  # weight of the contrastive alignment loss (swept 0.1, 0.2, 0.5, 2, 5)
    beta: float = 1.0  # weight of the classification loss
    temperature: float = 0.1  # fixed, as in the code
    contrastive_sum: bool = False  # False: the paper's (L_i + L_t) / 2; True: the code's L_i + L_t


class MappingNet(nn.Module):
    """The authors' MLP(in, out, hidden): Linear -> ReLU -> Linear, token-wise: (..., D) -> (..., dim)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AttentionBlock(nn.Module):
    """Multi-head attention of queries over keys/values, dropout, residual, LayerNorm (BertCrossAttention)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor | None) -> torch.Tensor:
        pad = None if kv_mask is None else ~kv_mask  # (B, T_kv) True = padding
        out, _ = self.attn(q, kv, kv, key_padding_mask=pad, need_weights=False)
        return self.norm(q + self.drop(out))


class CrossAttentionLayer(nn.Module):
    """Text self-attention, text -> image cross-attention, feed-forward; (B, T_t, d) -> (B, T_t, d)."""

    def __init__(self, cfg: CrossAttentionCfg, dim: int) -> None:
        super().__init__()
        self.self_attn = AttentionBlock(dim, cfg.num_heads, cfg.dropout)
        self.cross_attn = AttentionBlock(dim, cfg.num_heads, cfg.dropout)
        self.ff = nn.Sequential(nn.Linear(dim, cfg.ff_dim), nn.GELU(), nn.Linear(cfg.ff_dim, dim),
                                nn.Dropout(cfg.dropout))
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor | None, image: torch.Tensor,
                image_mask: torch.Tensor | None) -> torch.Tensor:
        h = self.self_attn(text, text, text_mask)
        h = self.cross_attn(h, image, image_mask)
        return self.norm(h + self.ff(h))


def _max_pool(x: torch.Tensor, mask: torch.Tensor | None, _: nn.Module) -> torch.Tensor:
    if mask is None:
        return x.max(dim=1).values
    return x.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(dim=1).values  # (B, d) over real tokens


POOLINGS: Registry[Callable[[torch.Tensor, torch.Tensor | None, nn.Module], torch.Tensor]] = Registry("clfa pooling")
POOLINGS.register("avg", lambda x, mask, head: masked_mean(x, mask))
POOLINGS.register("max", _max_pool)
POOLINGS.register("cls", lambda x, mask, head: torch.tanh(head.cls_dense(x[:, 0])))  # BertPooler: first token


@HEADS.register("cross-attention")
class CrossAttentionHead(ClassifierHead):
    """Mapping nets -> cross-attention layers -> pooling -> dropout -> classifier; inputs (text, image)."""

    Cfg = CrossAttentionCfg
    default_setting = "shapes-text-image"
    arity = (2, 2)

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__(spec)
        cfg = self.cfg
        POOLINGS.get(cfg.pooling)  # fail early on an unknown pooling
        dim = self.width()
        if dim % cfg.num_heads:
            raise BadInputError(f"the fusion width {dim} must be a multiple of num_heads={cfg.num_heads}")
        self.map_text = MappingNet(spec.in_dims[0], cfg.mlp_hidden, dim)
        self.map_image = MappingNet(spec.in_dims[1], cfg.mlp_hidden, dim)
        self.layers = nn.ModuleList(CrossAttentionLayer(cfg, dim) for _ in range(cfg.layers))
        self.cls_dense = nn.Linear(dim, dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(dim, cfg.num_classes)

    def width(self) -> int:
        """The mapped (teacher) space's dimension: `dim`, or the teacher stores' when dim is 0."""
        return self.cfg.dim or self.spec.in_dims[2]

    @classmethod
    def token_inputs(cls, num_inputs: int) -> list[bool | None]:
        return [None, None] + [False] * (num_inputs - 2)  # tokens when stored; teachers pooled

    def mapped(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The text and image tokens in the teacher's space: (B, T_t, d), (B, T_i, d)."""
        (xt, _), (xi, _) = batch.inputs[0], batch.inputs[1]
        return self.map_text(xt), self.map_image(xi)

    def encode(self, m: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        net = (self.map_text, self.map_image)[m]
        return masked_mean(net(x), mask)  # (B, d): the aligned vector of modality m

    def fuse(self, text: torch.Tensor, image: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Cross-attention over the mapped tokens and pooling of the text side: (B, d)."""
        text_mask, image_mask = batch.inputs[0][1], batch.inputs[1][1]
        h = text
        for layer in self.layers:
            h = layer(h, text_mask, image, image_mask)
        return POOLINGS.get(self.cfg.pooling)(h, text_mask, self)

    def logits_from(self, text: torch.Tensor, image: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.classifier(self.drop(self.fuse(text, image, batch)))

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.logits_from(*self.mapped(batch), batch)


@HEADS.register("clfa")
class CLFAHead(CrossAttentionHead):
    """CrossAttentionHead plus the CLIP-guided alignment of both mapped modalities to the teacher's embeddings;
    inputs (text, image, teacher text, teacher image)."""

    Cfg = CLFACfg
    default_setting = "shapes-clfa"
    arity = (4, 4)

    def __init__(self, spec: HeadSpec) -> None:
        dims = spec.in_dims
        cfg = self.make_cfg(spec.opts())
        if len(dims) == 4 and (dims[2] != dims[3] or cfg.dim not in (0, dims[2])):
            raise BadInputError(f"clfa maps both modalities into the teacher's space: the teacher stores must have one "
                                f"dimension and dim (0 = theirs) must equal it; teacher dims are {dims[2]} and "
                                f"{dims[3]}, dim is {cfg.dim}. Pass teacher stores of one space (CLIP text + image)")
        super().__init__(spec)
        self._parts: dict[str, torch.Tensor] = {}

    def alignment_loss(self, text: torch.Tensor, image: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Symmetric InfoNCE of each mapped modality (masked mean) against its teacher embedding."""
        scale = torch.tensor(1.0 / self.cfg.temperature, device=text.device)
        losses = []
        for m, mapped in ((0, text), (1, image)):
            student = F.normalize(masked_mean(mapped, batch.inputs[m][1]), dim=-1)  # (B, d)
            teacher = F.normalize(masked_mean(*batch.inputs[m + 2]), dim=-1)  # (B, d)
            targets = hard_targets(student, teacher, scale, batch.keys[:, m : m + 1])  # repeats are positives
            losses.append(symmetric_info_nce(student, teacher, scale, targets))
        total = losses[0] + losses[1]
        return total if self.cfg.contrastive_sum else total / 2

    def loss(self, batch: Batch) -> torch.Tensor:
        text, image = self.mapped(batch)
        con = self.alignment_loss(text, image, batch)
        ce = self.kind.loss(self.logits_from(text, image, batch), batch.labels)
        self._parts = {"contrastive": con.detach(), "classification": ce.detach()}
        return self.cfg.alpha * con + self.cfg.beta * ce

    def log_values(self) -> dict[str, float]:
        return {f"last_{k}_loss": float(v) for k, v in self._parts.items()}
