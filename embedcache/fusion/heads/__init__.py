"""Trainable heads over cached embeddings, one module per family, each registering its names in HEADS."""

from __future__ import annotations

from embedcache.fusion.heads.base import HEADS, Batch, Head, HeadSpec, create_head
from embedcache.registry import import_modules

# Every module of this package is imported (a family registers its names with @HEADS.register where it is
# defined): a new head family is one new file, and this import finds it.
MODULES = import_modules(__name__, __path__)

__all__ = ["HEADS", "MODULES", "Batch", "Head", "HeadSpec", "create_head"]
