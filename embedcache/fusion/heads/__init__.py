"""Trainable heads over cached embeddings, one module per family, each registering its names in HEADS."""

from __future__ import annotations

from embedcache.fusion.heads.base import HEADS, Batch, Head, HeadSpec, create_head

# Importing the family modules fills the registry.
from embedcache.fusion.heads import cbmf, clfa, convirt, mlp  # noqa: E402,F401  isort: skip

__all__ = ["HEADS", "Batch", "Head", "HeadSpec", "create_head"]
