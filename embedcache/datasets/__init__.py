"""Dataset adapters, one module per family, each registering its names in DATASETS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedcache.datasets.base import BadItemError, Dataset, DatasetFormatError, DatasetNotFoundError, Item, Pair, Split
from embedcache.registry import Registry

DATASETS: Registry[type[Dataset]] = Registry("dataset")


def create_dataset(name: str, root: str | Path | None = None, data_dir: str | Path | None = None,
                   **options: Any) -> Dataset:
    """Instantiate the registered adapter `name` over `root` (None: its default locations, first
    <data_dir>/raw/<name>; data_dir None: $EMBEDCACHE_DATA_DIR or ./data)."""
    ds = DATASETS.get(name)(root=root, **options)
    ds.data_dir = Path(data_dir) if data_dir else None
    return ds


# Importing the modules fills the registry.
from embedcache.datasets import (  # noqa: E402,F401
    cifar,
    coco,
    fashion_mnist,
    flickr,
    generic,
    glue,
    mmsd,
    mvsa,
    prompts,
    synthetic,
    tiny_imagenet,
)

__all__ = [
    "BadItemError",
    "DATASETS", "Dataset", "DatasetFormatError", "DatasetNotFoundError", "Item", "Pair", "Split", "create_dataset"]
