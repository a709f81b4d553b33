"""Dataset adapters, one module per family, each registering its names in DATASETS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedcache.datasets.base import BadItemError, Dataset, DatasetFormatError, DatasetNotFoundError, Item, Pair, Split
from embedcache.registry import Registry, import_modules

DATASETS: Registry[type[Dataset]] = Registry("dataset")


def create_dataset(name: str, root: str | Path | None = None, **options: Any) -> Dataset:
    """Instantiate the registered adapter `name` over `root` (None: its default locations)."""
    return DATASETS.get(name)(root=root, **options)


# Each module registers its adapters (and their download sources) where they are defined: a new dataset is one
# new file, and this import finds it.
MODULES = import_modules(__name__, __path__)

__all__ = [
    "DATASETS", "MODULES", "BadItemError", "Dataset", "DatasetFormatError", "DatasetNotFoundError", "Item", "Pair",
    "Split", "create_dataset",
]
