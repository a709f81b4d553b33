"""CLIP's two towers as two encoders (clip-text, clip-image), loaded through transformers.

One store holds one (dataset, backbone) pair, so each tower is its own registered backbone. Each loads
only its tower and projection from the full CLIP checkpoint. `embeds` pooling is exactly what
CLIPModel returns as text_embeds / image_embeds: tower pooler output -> projection -> L2 normalisation
(512-d joint space for ViT-B/32). Tokens are the tower's last hidden state: (B, T, 512) for text with
the attention mask, (B, 50, 768) for ViT-B/32 images (CLS first).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from embedcache.backbones import hf_loading, random_init
from embedcache.backbones.base import ADAPTERS, BackboneSpec, EncoderOutput
from embedcache.backbones.common import (
    WeightsSource,
    check_pooling,
    inference,
    resolve_source,
)
from embedcache.backbones.tensor_preprocess import TensorPreprocess, from_clip_processor
from embedcache.fingerprint import to_plain
from embedcache.registry import Registry

# fn(tower pooler_output (B, H), projection) -> (B, D)
CLIP_POOLINGS: Registry[Callable[[torch.Tensor, Any], torch.Tensor]] = Registry("clip pooling")
CLIP_POOLINGS.register("embeds", lambda pooled, proj: F.normalize(proj(pooled), dim=-1))
CLIP_POOLINGS.register("projected", lambda pooled, proj: proj(pooled))
CLIP_POOLINGS.register("pooler", lambda pooled, proj: pooled)

PREPROCESS_KEYS = ("size", "crop_size", "resample", "image_mean", "image_std", "rescale_factor", "do_center_crop")


class ClipTowerEncoder(hf_loading.TransformersEncoder):
    """One CLIP tower (text or vision) with its projection; the modality comes from the spec."""

    poolings = tuple(CLIP_POOLINGS.names())

    def __init__(self, spec: BackboneSpec, model: Any, source: WeightsSource, pooling: str,
                 tokenizer: Any = None, processor: Any = None) -> None:
        self.spec, self.model, self.source = spec, model, source
        self.tokenizer, self.processor = tokenizer, processor
        self.pooling = check_pooling(spec, pooling, self.poolings)
        text = spec.modality == "text"
        self.tower = model.text_model if text else model.vision_model
        self.projection = model.text_projection if text else model.visual_projection
        self.token_dim = int(model.config.hidden_size)
        self.dim = self.token_dim if self.pooling == "pooler" else int(model.config.projection_dim)
        self.max_length = (spec.max_length or int(model.config.max_position_embeddings)) if text else None
        self.device = torch.device("cpu")

    @cached_property
    def preprocessing(self) -> dict[str, Any]:
        if self.tokenizer is None:
            cfg = self.processor.to_dict()
            return {k: to_plain(cfg.get(k)) for k in PREPROCESS_KEYS}
        return self.tokenizer_facts()

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if self.tokenizer is None:
            return super().tokenize(texts)
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        """OpenAI CLIP's own preprocessing (PIL bicubic resize of the short side, center crop, normalise),
        with every number read from the checkpoint's preprocessor_config.json."""
        if self.processor is None:
            return super().image_transform()
        from torchvision import transforms as T

        cfg = self.processor.to_dict()
        crop = cfg["crop_size"]
        return T.Compose([
            _ToRGB(),
            T.Resize(cfg["size"]["shortest_edge"], interpolation=T.InterpolationMode(_PIL_MODES[cfg["resample"]])),
            _CenterCrop(crop["height"], crop["width"]),
            T.ToTensor(),
            T.Normalize(cfg["image_mean"], cfg["image_std"]),
        ])

    def tensor_preprocess(self) -> TensorPreprocess | None:
        """image_transform's recipe as tensor ops, from the same preprocessor config (None for the text tower, or a
        config without a center crop or with another rescale factor than 1/255)."""
        if self.processor is None:
            return None
        cfg = self.processor.to_dict()
        if not cfg.get("do_center_crop", True) or abs(float(cfg.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
            return None
        return from_clip_processor(cfg, _PIL_MODES)

    def encode(self, batch: torch.Tensor | dict[str, torch.Tensor], tokens: bool = False) -> EncoderOutput:
        with inference(self.spec, self.device):
            if isinstance(batch, dict):
                inputs = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
                out = self.tower(**inputs)
                mask = inputs["attention_mask"].bool()  # (B, T)
            else:
                out = self.tower(pixel_values=batch.to(self.device))
                mask = torch.ones(out.last_hidden_state.shape[:2], dtype=torch.bool, device=self.device)
            pooled = CLIP_POOLINGS.get(self.pooling)(out.pooler_output, self.projection)
        if not tokens:
            return EncoderOutput(pooled.float())
        hidden = out.last_hidden_state.float() * mask.unsqueeze(-1)  # (B, T, D), padding rows zeroed
        return EncoderOutput(pooled.float(), hidden, mask)


class _ToRGB:
    """PIL image -> RGB (CLIP's do_convert_rgb); a class so the transform pickles."""

    def __call__(self, image: Any) -> Any:
        return image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image


class _CenterCrop:
    """Center crop with transformers' arithmetic (offset floor((size - crop) / 2)); torchvision rounds
    half-way offsets to even, which shifts the crop one pixel for some sizes."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width

    def __call__(self, image: Any) -> Any:
        top, left = (image.height - self.height) // 2, (image.width - self.width) // 2
        return image.crop((left, top, left + self.width, top + self.height))


_PIL_MODES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def create(spec: BackboneSpec, pooling: str | None, weights: str | Path | None) -> ClipTowerEncoder:
    """Load one tower (+ projection) of a CLIP checkpoint and its tokenizer or image processor."""
    from transformers import (
        AutoTokenizer,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPTextModelWithProjection,
        CLIPVisionModelWithProjection,
    )

    source = resolve_source(spec, weights)
    full = hf_loading.from_pretrained(CLIPConfig, spec, source)
    text = spec.modality == "text"
    config = full.text_config if text else full.vision_config
    config.projection_dim = full.projection_dim  # the tower configs do not carry it; CLIPModel's does
    loader = CLIPTextModelWithProjection if text else CLIPVisionModelWithProjection
    if source.kind == "random":  # the tower with seeded random weights (config and tokenizer: hub cache or DIR)
        model = random_init.from_config(loader, config)
    else:
        model, _ = hf_loading.load_model(loader, spec, source, config=config)
    extra = {"tokenizer": hf_loading.from_pretrained(AutoTokenizer, spec, source)} if text else {
        "processor": hf_loading.from_pretrained(CLIPImageProcessor, spec, source)}
    return ClipTowerEncoder(spec, model, source, pooling or spec.pooling, **extra)


ADAPTERS.register("clip:text", create)
ADAPTERS.register("clip:image", create)
