"""CBMF: context-based multimodal fusion (Faye et al.), trained from cached embeddings.

Per modality m: a token-wise projection g_m (D_m -> d: Linear, GELU, Linear, Dropout, LayerNorm, no residual),
a learned context vector c_m (3-d) through a shared MLP g (3 -> 64 -> 128 -> d, LayerNorm; the concat fusion
has its own 3 -> 10 + LayerNorm(10), as in the authors' code), a fusion of the projected tokens with g(c_m), and ONE
Deep Fusion Encoder shared by all modalities: LayerNorm on the fused tokens, one
nn.TransformerEncoderLayer (d 256, 4 heads, feed-forward 2048, dropout 0.1; `OneTokenEncoderLayer`, with
an exact shortcut for one-token inputs), residual, mean pooling over the real tokens. Defaults follow the
authors' code (github b-faye/lightweightCRL), see ../shared/seed-notes.md. Six fusions, registered as
`cbmf-<fusion>`. Unlike the authors' code, padding tokens are masked everywhere (attention fusions, the
transformer and the pooling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from embedcache.fusion.heads import kernels
from embedcache.fusion.heads.base import HEADS, ContrastiveHead, HeadSpec, masked_mean
from embedcache.registry import Registry


@dataclass(frozen=True)
class CBMFCfg:
    """CBMF options; defaults are the authors' (projection 256, context 3 -> 64 -> 128 -> 256, one block)."""

    dim: int = 256
    projection_residual: bool = False  # the authors' ProjectionHead has none (True: the simple-CLIP form)
    context_dim: int = 3
    context_hidden: tuple[int, ...] = (64, 128)
    concat_context: int = 10  # the concat fusion's own context width (authors: Linear(3, 10), LayerNorm(10))
    context_std: tuple[float, float] = (0.1, 0.6)  # each context ~ N(0, sigma), sigma ~ U(0.1, 0.6)
    num_heads: int = 4
    ff_dim: int = 2048
    layers: int = 1
    dropout: float = 0.1
    targets: str = "hard"  # "hard" (authors' code) or "soft" (paper eq. 5-6), see embedcache.fusion.losses
    temperature_init: float = 0.07
    temperature_min: float = 0.01
    temperature_max: float = 20.0
    learn_temperature: bool = True


class Fusion(nn.Module):
    """Fuses projected tokens x (B, T, d) with one context vector c -> (B, T, d); c is (d,) from the shared
    context MLP unless the fusion names its own context layers (`context_layers`)."""

    default_setting: ClassVar[str] = "text-image"

    def __init__(self, cfg: CBMFCfg) -> None:
        super().__init__()
        self.dim = cfg.dim

    @classmethod
    def context_layers(cls, cfg: CBMFCfg) -> tuple[tuple[int, ...], int]:
        """(hidden widths, output width) of the context MLP this fusion reads: the shared 3 -> 64 -> 128 -> d."""
        return cfg.context_hidden, cfg.dim


FUSIONS: Registry[type[Fusion]] = Registry("cbmf fusion")


@FUSIONS.register("add")
class AddFusion(Fusion):
    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return x + c


@FUSIONS.register("mul")
class MulFusion(Fusion):
    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return x * c


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """The authors' concatenation fusion (text_image/concatenation/fusion.py): its own context 3 -> 10 with
    LayerNorm(10) (no hidden layers), concatenated to every d-token, MLP (d + 10) -> (d + 10) -> d with ReLU, added
    back to x: x + MLP([x; c]). With d = 256 that is 266 -> 266 -> 256."""

    def __init__(self, cfg: CBMFCfg) -> None:
        super().__init__(cfg)
        wide = cfg.dim + cfg.concat_context
        self.mlp = nn.Sequential(nn.Linear(wide, wide), nn.ReLU(), nn.Linear(wide, cfg.dim))

    @classmethod
    def context_layers(cls, cfg: CBMFCfg) -> tuple[tuple[int, ...], int]:
        return (), cfg.concat_context

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        ctx = c.expand(*x.shape[:-1], c.shape[-1])  # (10,) -> (B, T, 10)
        return x + self.mlp(torch.cat([x, ctx], dim=-1))


def _attend(scores: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over real tokens of scores (B, T) and the weighted sum of values (B, T, d) -> (B, d)."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=1)
    return torch.einsum("bt,btd->bd", weights, values)


class AttentionFusion(Fusion):
    """Context as the query, projected tokens as keys/values; the attended vector is added to every token."""

    def scores_values(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        scores, values = self.scores_values(x, c)
        return x + _attend(scores, values, mask).unsqueeze(1)


@FUSIONS.register("additive")
class AdditiveFusion(AttentionFusion):
    """Bahdanau scoring w1 . tanh(W2 q + W3 k_t): the paper's text-text setting."""

    default_setting = "text-text"

    def __init__(self, cfg: CBMFCfg) -> None:
        super().__init__(cfg)
        dim = cfg.dim
        self.w_query = nn.Linear(dim, dim)
        self.w_key = nn.Linear(dim, dim)
        self.w_score = nn.Linear(dim, 1)

    def scores_values(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.w_score(torch.tanh(self.w_query(c) + self.w_key(x))).squeeze(-1), x  # (B, T), (B, T, d)


@FUSIONS.register("general")
class GeneralFusion(AttentionFusion):
    """Luong general scoring q . (W k_t)."""

    def __init__(self, cfg: CBMFCfg) -> None:
        super().__init__(cfg)
        self.w_key = nn.Linear(cfg.dim, cfg.dim)

    def scores_values(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.w_key(x) @ c, x


@FUSIONS.register("dot")
class DotFusion(AttentionFusion):
    """Scaled dot-product (W_q q) . (W_k k_t) / sqrt(d), values W_v k_t."""

    def __init__(self, cfg: CBMFCfg) -> None:
        super().__init__(cfg)
        dim = cfg.dim
        self.w_query, self.w_key, self.w_value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def scores_values(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.w_key(x) @ self.w_query(c) / math.sqrt(self.dim), self.w_value(x)


class ContextEncoder(nn.Module):
    """One learned `context_dim` vector per modality through the shared MLP g (`hidden` widths with ReLU, then
    Linear to `out` and LayerNorm) -> one (out,) context per modality."""

    def __init__(self, cfg: CBMFCfg, num_modalities: int, hidden: tuple[int, ...], out: int) -> None:
        super().__init__()
        lo, hi = cfg.context_std
        sigma = torch.rand(num_modalities, 1) * (hi - lo) + lo  # the authors draw one sigma per modality
        self.vectors = nn.Parameter(torch.randn(num_modalities, cfg.context_dim) * sigma)
        dims = (cfg.context_dim, *hidden)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.g = nn.Sequential(*layers, nn.Linear(dims[-1], out), nn.LayerNorm(out))

    def forward(self, m: int) -> torch.Tensor:
        return self.g(self.vectors[m])  # (d,)


class OneTokenEncoderLayer(nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer computing the same function with fewer, cheaper steps in training.

    One-token sequences (pooled inputs): self-attention over ONE key without a mask has softmax weight exactly 1,
    so its output is out_proj(V x): the query and key projections and the softmax are skipped (their gradients
    are zero, up to rounding, either way). In training, attention dropout acts on that single weight per head:
    the head's value is kept (scaled by 1 / (1 - p)) or zeroed, as here.
    Token sequences: one in-projection viewed as (3, B, h, T, hd), F.scaled_dot_product_attention with the
    padding as an additive (B, 1, 1, T) mask (no batch-first transposes, no mask merging), and on the CPU the
    cheap dropout of embedcache.fusion.heads.kernels, ReLU sharing the feed-forward dropout's mask.
    The stock inference fast path (eval mode without grad) and unusual configurations are torch's own. Same
    parameters and state_dict keys as the stock layer, so checkpoints load either way.
    """

    def _plain(self) -> bool:
        """The configuration these paths cover: batch-first, packed q/k/v, no extra key bias or zero attention."""
        attn = self.self_attn
        return (attn.batch_first and attn._qkv_same_embed_dim and attn.bias_k is None and not attn.add_zero_attn
                and attn.in_proj_bias is not None)

    def _sa_block(self, x: torch.Tensor, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None,
                  is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal or not self._plain():
            return super()._sa_block(x, attn_mask, key_padding_mask, is_causal=is_causal)
        if x.shape[1] == 1 and key_padding_mask is None:
            return self._one_token(x)
        attn = self.self_attn
        b, t, d = x.shape
        qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(b, t, 3, attn.num_heads, attn.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, h, T, hd)
        mask = None
        if key_padding_mask is not None:  # (B, T): True (or -inf) = padding -> additive (B, 1, 1, T)
            pad = key_padding_mask
            if pad.dtype == torch.bool:
                pad = torch.zeros(pad.shape, dtype=x.dtype, device=x.device).masked_fill_(pad, float("-inf"))
            mask = pad.to(x.dtype).view(b, 1, 1, t)
        out = kernels.attention(q, k, v, mask, attn.dropout, self.training)  # (B, h, T, hd)
        return kernels.drop(self.dropout1, attn.out_proj(out.transpose(1, 2).reshape(b, t, d)))

    def _one_token(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.self_attn
        d = attn.embed_dim
        v = F.linear(x, attn.in_proj_weight[2 * d :], attn.in_proj_bias[2 * d :])  # (B, 1, d)
        if attn.training and attn.dropout > 0:
            keep = F.dropout(x.new_ones(x.shape[0], 1, attn.num_heads, 1), attn.dropout)  # 0 or 1 / (1 - p)
            v = (v.view(x.shape[0], 1, attn.num_heads, attn.head_dim) * keep).view_as(v)
        return self.dropout1(attn.out_proj(v))

    def _ff_block(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation is not F.relu or type(self.dropout) is not nn.Dropout:
            return super()._ff_block(x)
        h = kernels.relu_dropout_linear(self.linear1(x), self.dropout.p, self.training, self.linear2)
        return kernels.drop(self.dropout2, h)


class DeepFusionEncoder(nn.Module):
    """LayerNorm -> transformer block(s) -> residual -> masked mean pooling: (B, T, d) -> (B, d)."""

    def __init__(self, cfg: CBMFCfg) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim)
        self.blocks = nn.ModuleList(
            OneTokenEncoderLayer(cfg.dim, cfg.num_heads, cfg.ff_dim, cfg.dropout, batch_first=True)
            for _ in range(cfg.layers)
        )

    def forward(self, fused: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm(fused)
        pad = None if mask is None else ~mask  # (B, T) True = padding, as torch expects
        for block in self.blocks:
            h = block(h, src_key_padding_mask=pad)
        return masked_mean(fused + h, mask)


class CBMFHead(ContrastiveHead):
    """The CBMF alignment head; the fusion comes from the registered name (`cbmf-<fusion>`)."""

    Cfg = CBMFCfg
    revision = 1  # 1: projection without residual, the concat fusion's own 3 -> 10 context (the authors' code)

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__(spec)  # projections g_m and the contrastive loss
        cfg = self.cfg
        fusion = FUSIONS.get(spec.name.removeprefix("cbmf-"))
        self.context = ContextEncoder(cfg, len(spec.in_dims), *fusion.context_layers(cfg))
        self.fusion = fusion(cfg)
        self.dfe = DeepFusionEncoder(cfg)

    @classmethod
    def setting_for(cls, name: str) -> str:
        return FUSIONS.get(name.removeprefix("cbmf-")).default_setting

    def encode(self, m: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.projections[m](x)  # (B, T, d)
        fused = self.fusion(h, self.context(m), mask)  # (B, T, d)
        return self.dfe(fused, mask)  # (B, d)

    def encode_all(self, inputs: list[tuple[torch.Tensor, torch.Tensor | None]]) -> list[torch.Tensor]:
        """Every modality at once -> [(B, d)]. Unmasked sides with equal token counts (pooled inputs, fixed
        image grids) go through the shared encoder as ONE batch: the same function, half the kernel launches."""
        fused = [self.fusion(self.projections[m](x), self.context(m), mask) for m, (x, mask) in enumerate(inputs)]
        out: list[torch.Tensor | None] = [None] * len(inputs)
        groups: dict[int, list[int]] = {}
        for m, (f, (_, mask)) in enumerate(zip(fused, inputs, strict=True)):
            if mask is None:
                groups.setdefault(f.shape[1], []).append(m)
            else:
                out[m] = self.dfe(f, mask)
        for sides in groups.values():
            pooled = self.dfe(torch.cat([fused[m] for m in sides]), None)  # (len(sides) * B, d)
            for m, part in zip(sides, pooled.split([len(fused[m]) for m in sides]), strict=True):
                out[m] = part
        return out


for _fusion in FUSIONS.names():
    HEADS.register(f"cbmf-{_fusion}", CBMFHead)
