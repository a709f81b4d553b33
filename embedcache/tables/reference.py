"""The papers' published numbers, read from pipelines/reference.toml (typed by hand, cited by table).

This module only reads that file. Tables built by `embedcache.tables.results` show these numbers in columns
labelled "paper", beside our generated ones; nothing here is ever computed, and nothing we compute is
ever written to the reference file.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedcache.errors import BadInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the backport
    import tomli as tomllib

REFERENCE_FILE = "reference.toml"
PIPELINES_ENV = "EMBEDCACHE_PIPELINES_DIR"
UNITS = ("percent", "fraction")


def pipelines_dir() -> Path:
    """Where pipeline specs and the reference file live: $EMBEDCACHE_PIPELINES_DIR, else ./pipelines when it
    exists, else the pipelines/ folder beside the installed package (a source checkout)."""
    if os.environ.get(PIPELINES_ENV):
        return Path(os.environ[PIPELINES_ENV])
    local = Path("pipelines")
    if (local / REFERENCE_FILE).is_file():
        return local
    return Path(__file__).resolve().parents[2] / "pipelines"  # embedcache/tables/ -> the checkout


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise BadInputError(f"{path}: not valid TOML ({err})") from None


@dataclass(frozen=True)
class ReferenceTable:
    """One published table: where it is from and its numbers, row name -> column -> value."""

    key: str
    paper: str
    table: str
    caption: str
    units: str
    rows: tuple[tuple[str, tuple[tuple[str, float], ...]], ...]

    def value(self, row: str, column: str) -> float | None:
        """The published number at (row, column), or None when the paper prints none there."""
        for name, values in self.rows:
            if name == row:
                return dict(values).get(column)
        return None

    def row_names(self) -> list[str]:
        return [name for name, _ in self.rows]

    @property
    def citation(self) -> str:
        return f"{self.paper}, {self.table}"


def _table(key: str, raw: dict[str, Any], path: Path) -> ReferenceTable:
    missing = [k for k in ("paper", "table", "units", "rows") if k not in raw]
    if missing or raw.get("units") not in UNITS:
        raise BadInputError(f"{path}: [{key}] needs paper, table, units ({' or '.join(UNITS)}) and rows; "
                            f"missing {missing or 'nothing'}, units {raw.get('units')!r}")
    rows = tuple((str(name), tuple((str(c), float(v)) for c, v in values.items()))
                 for name, values in raw["rows"].items())
    return ReferenceTable(key, str(raw["paper"]), str(raw["table"]), str(raw.get("caption", "")),
                          str(raw["units"]), rows)


def load_reference(path: str | Path | None = None) -> dict[str, ReferenceTable]:
    """Every table of the reference file (default: <pipelines dir>/reference.toml), by key."""
    path = Path(path) if path is not None else pipelines_dir() / REFERENCE_FILE
    return {key: _table(key, raw, path) for key, raw in read_toml(path).items()}


def reference_table(key: str, path: str | Path | None = None) -> ReferenceTable:
    """The published table `key`; an unknown key fails with the known ones."""
    tables = load_reference(path)
    if key not in tables:
        raise KeyError(f"no reference table {key!r} in {path or pipelines_dir() / REFERENCE_FILE}; "
                       f"known: {', '.join(sorted(tables))}")
    return tables[key]
