"""Where data lives: --data-dir, else $EMBEDCACHE_DATA_DIR, else ./data; results: ./results or
$EMBEDCACHE_RESULTS_DIR. The environment is read for defaults and never written: a command resolves its
`Paths` once and passes the directories down as values."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from embedcache.errors import BadInputError

ENV_VAR = "EMBEDCACHE_DATA_DIR"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: the explicit argument, else the environment variable, else ./data."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(ENV_VAR) or "data")


def raw_dir(dataset: str, root: str | Path | None = None) -> Path:
    """Default location of a dataset's raw files: <data-dir>/raw/<dataset>."""
    return data_dir(root) / "raw" / dataset


class UnsafeNameError(BadInputError):
    """A name that becomes one path component would lead elsewhere ('..', a separator, a leading dot)."""


def safe_name(name: str, what: str) -> str:
    """`name` if it can be one file or folder name under the folder it is meant for, else UnsafeNameError naming
    `what` (a store name, a pipeline name, ...): no '/' or '\\', not '.' or '..', no leading dot, no control
    characters. Without this, `--name ../x` or a pipeline named '../../x' writes outside the stores or results."""
    bad = (not isinstance(name, str) or not name or name.startswith(".") or any(c in name for c in "/\\")
           or any(ord(c) < 32 or ord(c) == 127 for c in name))
    if bad:
        raise UnsafeNameError(f"{what} {name!r} cannot be a file name: use letters, digits and -_+. without '/', "
                              "'\\', control characters or a leading dot")
    return name


def store_path(dataset: str, backbone: str, root: str | Path | None = None) -> Path:
    """<data-dir>/stores/<dataset>/<backbone>.h5 (':' and '/' in prefixed model names become '_'); both parts
    must be plain names (UnsafeNameError otherwise)."""
    safe = safe_name(backbone.replace("/", "_").replace(":", "_"), "backbone name")
    return data_dir(root) / "stores" / safe_name(dataset, "store (dataset) name") / f"{safe}.h5"


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
