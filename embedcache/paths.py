"""Where data lives: --data-dir, else $EMBEDCACHE_DATA_DIR, else ./data."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "EMBEDCACHE_DATA_DIR"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: the explicit argument, else the environment variable, else ./data."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(ENV_VAR) or "data")


def raw_dir(dataset: str, root: str | Path | None = None) -> Path:
    """Default location of a dataset's raw files: <data-dir>/raw/<dataset>."""
    return data_dir(root) / "raw" / dataset


def store_path(dataset: str, backbone: str, root: str | Path | None = None) -> Path:
    """<data-dir>/stores/<dataset>/<backbone>.h5 (':' and '/' in prefixed model names become '_')."""
    safe = backbone.replace("/", "_").replace(":", "_")
    return data_dir(root) / "stores" / dataset / f"{safe}.h5"


def results_dir(root: str | Path | None = None) -> Path:
    """<data-dir>/../results unless overridden: run JSONs, tables and plots."""
    return Path(os.environ.get("EMBEDCACHE_RESULTS_DIR") or "results")
