"""Dataset adapters, one module per family, each registering its names in DATASETS."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from embedcache.datasets.base import BadItemError, Dataset, DatasetFormatError, DatasetNotFoundError, Item, Pair, Split
from embedcache.errors import BadInputError
from embedcache.registry import Registry, import_modules

DATASETS: Registry[type[Dataset]] = Registry("dataset")


def create_dataset(name: str, root: str | Path | None = None, data_dir: str | Path | None = None,
                   **options: Any) -> Dataset:
    """Instantiate the registered adapter `name` over `root` (None: its default locations, first
    <data_dir>/raw/<name>; data_dir None: $EMBEDCACHE_DATA_DIR or ./data); an option the adapter does not take is
    a BadInputError listing the ones it does."""
    cls = DATASETS.get(name)
    params = inspect.signature(cls.__init__).parameters
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    known = [p for p, v in params.items() if v.kind in named and p not in ("self", "root")]
    unknown = sorted(set(options) - set(known))
    if unknown and not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
        raise BadInputError(f"dataset {name!r} has no option {', '.join(map(repr, unknown))}; its options: "
                            f"{', '.join(known) or '(none)'}", fix="-o KEY=VALUE with one of those keys")
    ds = cls(root=root, **options)
    ds.data_dir = Path(data_dir) if data_dir else None
    return ds


# Each module registers its adapters (and their download sources) where they are defined: a new dataset is one
# new file, and this import finds it.
MODULES = import_modules(__name__, __path__)

__all__ = [
    "DATASETS", "MODULES", "BadItemError", "Dataset", "DatasetFormatError", "DatasetNotFoundError", "Item", "Pair",
    "Split", "create_dataset",
]
