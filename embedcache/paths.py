"""Where data lives: --data-dir, else $EMBEDCACHE_DATA_DIR, else ./data; results: ./results or
$EMBEDCACHE_RESULTS_DIR. The environment is read for defaults and never written: a command resolves its
`Paths` once and passes the directories down as values."""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Paths:
    """The directories one command or pipeline uses: data (raw data under raw/, stores under stores/) and
    results (tables, and runs under runs/)."""

    data_dir: Path
    results_dir: Path

    @classmethod
    def resolve(cls, data: str | Path | None = None, results: str | Path | None = None) -> Paths:
        """Explicit directories, else the defaults ($EMBEDCACHE_DATA_DIR or ./data, $EMBEDCACHE_RESULTS_DIR or
        ./results)."""
        return cls(data_dir(data), Path(results) if results else results_dir())

    @property
    def runs_dir(self) -> Path:
        return self.results_dir / "runs"
