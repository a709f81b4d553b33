"""Reading complete stores (open_store, Store, StoreSplit) and listing every store under a data dir.
"""

from __future__ import annotations

import json
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from embedcache.errors import NotFoundError
from embedcache.fingerprint import fingerprint
from embedcache.registry import UnknownNameError
from embedcache.store.integrity import check_final
from embedcache.store.layout import (
    DamagedStoreError,
    IncompleteStoreError,
    StoreError,
    _count_shards,
    _extract_cmd,
    _read_attrs,
    _read_pairs,
    _stale_error,
    _strs,
    full_attrs,
    parts_dir,
)

# ---------------------------------------------------------------------------------------------- reader


class StoreSplit:
    """One split of an open store. Arrays are read whole (one contiguous read each) and returned as numpy."""

    def __init__(self, name: str, group: h5py.Group) -> None:
        self.name = name
        self._g = group
        self.ids: np.ndarray = group["ids"].asstr()[()]  # (N,) str objects
        self.dim: int = int(group["pooled"].shape[1])
        self.has_tokens: bool = "tokens" in group
        self.token_dim: int | None = int(group["tokens"].shape[1]) if self.has_tokens else None

    def __len__(self) -> int:
        return len(self.ids)

    def pooled(self, dtype: Any = np.float32) -> np.ndarray:
        """(N, D) pooled embeddings in `dtype` (fp32 by default, whatever the stored dtype)."""
        return self._g["pooled"][()].astype(dtype, copy=False)

    def offsets(self) -> np.ndarray:
        """(N+1,) int64 offsets into the token rows: row i is tokens[off[i]:off[i+1]]."""
        return self._offsets

    @cached_property
    def _offsets(self) -> np.ndarray:
        if not self.has_tokens:
            raise StoreError(f"split {self.name!r} of {self._g.file.filename} has no tokens; "
                             "rerun extract with --tokens --force to store them")
        return self._g["token_offsets"][()]

    def token_rows(self, start: int, stop: int, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """Tokens of rows [start, stop) as one contiguous (T, D) block, and their (stop-start+1,) offsets from 0."""
        off = self._offsets[start : stop + 1]
        block = self._g["tokens"][off[0] : off[-1]].astype(dtype, copy=False)
        return block, off - off[0]

    def tokens(self, row: int, dtype: Any = np.float32) -> np.ndarray:
        """(T_row, D) tokens of one row."""
        return self.token_rows(row, row + 1, dtype)[0]

    @cached_property
    def labels(self) -> np.ndarray | None:
        """(N,) int64 (-1 = none) or (N, C) uint8 multi-hot, or None when the split is unlabelled."""
        return self._g["labels"][()] if "labels" in self._g else None

    @cached_property
    def links(self) -> np.ndarray | None:
        """(N,) str: the linked item's id in the other modality ('' = none), or None."""
        return self._g["links"].asstr()[()] if "links" in self._g else None

    @cached_property
    def skipped(self) -> list[tuple[str, str]]:
        """(id, reason) of the items that were skipped during extraction."""
        return list(zip(_strs(self._g, "skipped/ids"), _strs(self._g, "skipped/reasons"), strict=True))

    @cached_property
    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(a ids, b ids, scores) of the split's graded text pairs, or None."""
        return _read_pairs(self._g)

    def index(self) -> dict[str, int]:
        """id -> row: heads join modalities by id, never by row position."""
        return {str(i): r for r, i in enumerate(self.ids)}


class Store:
    """A complete store opened read-only; use ``open_store`` to get one with the right errors."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = h5py.File(self.path, "r")
        self.attrs: dict[str, Any] = _read_attrs(self._file)
        self.fingerprint: str = str(self.attrs.get("fingerprint", ""))
        self.splits: list[str] = sorted(self._file.keys())

    def split(self, name: str) -> StoreSplit:
        """One split; an unknown name raises KeyError listing the splits present."""
        if name not in self.splits:
            raise UnknownNameError(f"split {name!r} is not in store {self.path}; splits present: "
                                   f"{', '.join(self.splits) or '(none)'}")
        return StoreSplit(name, self._file[name])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: Path, expect: dict[str, Any] | None = None) -> Store:
    """Open a complete store read-only; `expect` (the attrs a writer would be given) checks it is not stale.

    Missing -> FileNotFoundError naming the extract command; only shards -> IncompleteStoreError;
    fingerprint differing from `expect` -> StaleStoreError naming the changed attrs.
    """
    path = Path(path)
    if not path.exists():
        pdir = parts_dir(path)
        if pdir.is_dir():
            raise IncompleteStoreError(f"store {path} is not finished: only {_count_shards(pdir)} shards exist in "
                                       f"{pdir}; rerun `{_extract_cmd(path)}` to resume")
        raise NotFoundError(f"no store at {path}; create it with `{_extract_cmd(path)}`")
    check_final(path)  # unreadable, edited attrs, not complete, missing datasets: DamagedStoreError with the fix
    store = Store(path)
    if expect is not None:
        want = full_attrs(expect)
        want["fingerprint"] = fingerprint(want)
        if want["fingerprint"] != store.fingerprint:
            store.close()
            raise _stale_error(path, store.attrs, want)
    return store


# ---------------------------------------------------------------------------------------------- listing


@dataclass
class StoreSummary:
    """One line of `embedcache stores`: a final store, an in-progress one, or both."""

    path: Path
    dataset: str
    backbone: str
    splits: dict[str, int] = field(default_factory=dict)  # complete splits -> rows
    dim: int | None = None
    dtype: str = ""
    size_bytes: int = 0
    fingerprint: str = ""
    complete: bool = False  # a final file exists and no shards are pending
    tokens: bool = False
    skipped: int = 0
    shards_pending: int = 0
    damaged: str = ""  # why the final file cannot be used ('' when it is sound); `embedcache verify` says more
    not_results: str = ""  # why its vectors are not results ('' for a real backbone's store), e.g. a stand-in


def summarize(path: Path) -> StoreSummary:
    """Summary of the store at `path` (final file and/or its .parts directory)."""
    path, pdir = Path(path), parts_dir(Path(path))
    attrs: dict[str, Any] = {}
    s = StoreSummary(path=path, dataset=path.parent.name, backbone=path.stem)
    try:
        return _summarize(path, pdir, attrs, s)
    except Exception as exc:  # noqa: BLE001 - `ls` lists a store it cannot read as damaged and goes on
        s.damaged = f"{type(exc).__name__}: {exc}"
        with suppress(OSError):
            s.size_bytes = path.stat().st_size if path.exists() else 0
        return s


def _summarize(path: Path, pdir: Path, attrs: dict[str, Any], s: StoreSummary) -> StoreSummary:
    if path.exists():
        try:
            check_final(path)
        except DamagedStoreError as exc:
            s.damaged = str(exc).split(": ", 1)[-1]
            s.size_bytes = path.stat().st_size
            return s
        with h5py.File(path, "r") as f:
            attrs = _read_attrs(f)
            s.splits = {name: int(f[name]["pooled"].shape[0]) for name in sorted(f)}
            s.dim = next((int(f[n]["pooled"].shape[1]) for n in f), None)
            s.tokens = any("tokens" in f[n] for n in f)
            s.skipped = sum(int(f[n]["skipped/ids"].shape[0]) for n in f)
        s.size_bytes = path.stat().st_size
    elif (pdir / "manifest.json").exists():
        attrs = json.loads((pdir / "manifest.json").read_text())["attrs"]
        attrs["fingerprint"] = json.loads((pdir / "manifest.json").read_text())["fingerprint"]
        s.tokens = bool(attrs.get("tokens"))
    if pdir.is_dir():
        s.shards_pending = _count_shards(pdir)
        s.size_bytes += sum(p.stat().st_size for p in pdir.glob("*/*.h5"))
    s.dataset, s.backbone = str(attrs.get("dataset", s.dataset)), str(attrs.get("backbone", s.backbone))
    s.dtype, s.fingerprint = str(attrs.get("dtype", "float16")), str(attrs.get("fingerprint", ""))
    s.complete = bool(attrs.get("complete")) and s.shards_pending == 0
    s.not_results = not_results(attrs)
    return s


def not_results(attrs: dict[str, Any]) -> str:
    """Why a store's vectors are not results, '' for a real backbone's: `--weights random` (speed work only) or a
    rehearsal stand-in. `embedcache ls` shows it; pipelines refuse such stores (tables.steps.refuse_stand_in)."""
    if not attrs.get("stand_in"):
        return ""
    if attrs.get("weights") == "random":
        return "random-weight embeddings (--weights random: random weights for speed work only)"
    return "stand-in embeddings (random-weight backbones of the rehearsal)"


def list_stores(data_dir: Path) -> list[StoreSummary]:
    """Every store under ``<data_dir>/stores/*/``: final ``*.h5`` files and in-progress ``*.h5.parts``."""
    root = Path(data_dir) / "stores"
    finals = set(root.glob("*/*.h5")) | {p.with_name(p.name[: -len(".parts")]) for p in root.glob("*/*.h5.parts")}
    return [summarize(p) for p in sorted(finals)]
