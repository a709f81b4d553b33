"""Store integrity: what is wrong with a store file, one line per problem.

Two depths. `structure_problems` is cheap (attributes, the fingerprint recomputed from them, the datasets and
their shapes, the token offsets, unique ids): the writer runs it before trusting a final file, readers before
opening one and `ls` to mark a store damaged. `value_problems` reads every array (finite values, the sha256 of
pooled/tokens recorded at write time): `embedcache verify` runs both. A damaged store is never repaired in
place; `extract --force` rebuilds it from the raw data (the messages say so).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from embedcache.fingerprint import fingerprint
from embedcache.store.layout import (
    _WINDOW_BYTES,
    CHECKSUM_ATTR,
    DamagedStoreError,
    _extract_cmd,
    _read_attrs,
    _semantic,
    _shard_files,
    parts_dir,
)

# What h5py raises on a truncated, bit-flipped or hand-edited file: OSError from the library, KeyError or
# RuntimeError for a broken object header, ValueError/TypeError for a dataset of the wrong kind.
_UNREADABLE = (OSError, KeyError, RuntimeError, ValueError, TypeError)


def read_checked_attrs(f: h5py.File) -> dict[str, Any]:
    """The root attributes, or DamagedStoreError when one does not decode (a hand-edited JSON attribute)."""
    try:
        return _read_attrs(f)
    except (ValueError, TypeError, OSError) as exc:
        raise DamagedStoreError(f"root attributes do not decode ({type(exc).__name__}: {exc})") from None


def structure_problems(f: h5py.File) -> list[str]:
    """Cheap checks of an open store file: attrs, fingerprint, complete flag, per-split datasets and shapes."""
    try:
        attrs = read_checked_attrs(f)
    except DamagedStoreError as exc:
        return [str(exc)]
    problems = []
    recorded = attrs.get("fingerprint")
    if recorded is None or fingerprint(_semantic(attrs)) != recorded:
        problems.append(f"fingerprint {recorded} does not match the attributes (they hash to "
                        f"{fingerprint(_semantic(attrs))}): an attribute was edited or lost")
    if attrs.get("complete") is not True:
        problems.append(f"not marked complete (complete={attrs.get('complete')!r})")
    for name in sorted(f):
        problems += [f"split {name!r}: {p}" for p in _split_structure(f[name], attrs)]
    return problems


def _split_structure(g: Any, attrs: dict[str, Any]) -> list[str]:
    if not isinstance(g, h5py.Group):
        return ["is not a group"]
    missing = [k for k in ("ids", "pooled", "skipped/ids", "skipped/reasons") if k not in g]
    if missing:
        return [f"lacks {', '.join(missing)}"]
    n, pooled = g["ids"].shape[0] if g["ids"].ndim == 1 else -1, g["pooled"]
    problems = []
    ids = g["ids"].asstr()[()].tolist()
    if len(set(ids)) != len(ids):  # joins by id would silently pick one of the rows
        dupes = sorted(i for i, c in Counter(ids).items() if c > 1)
        problems.append(f"{len(dupes)} duplicate id(s), e.g. {dupes[:3]}")
    if pooled.ndim != 2 or pooled.shape[0] != n:
        problems.append(f"pooled has shape {pooled.shape}, expected ({n}, D) for {n} ids")
    for key in ("labels", "links"):
        if key in g and g[key].shape[:1] != (n,):
            problems.append(f"{key} has {g[key].shape[:1]} rows, expected {n}")
    if g["skipped/ids"].shape != g["skipped/reasons"].shape:
        problems.append("skipped ids and reasons differ in length")
    if ("tokens" in g) != ("token_offsets" in g):
        problems.append("tokens and token_offsets go together; one is missing")
    elif "tokens" in g:
        problems += _offset_problems(g["token_offsets"], g["tokens"], n)
    elif attrs.get("tokens") and n:
        problems.append("the store was written with tokens but this split has none")
    if "pairs" in g and len({g[f"pairs/{k}"].shape for k in ("a", "b", "score") if f"pairs/{k}" in g}) != 1:
        problems.append("pairs a, b and score differ in length (or one is missing)")
    return problems


def _offset_problems(offsets: h5py.Dataset, tokens: h5py.Dataset, n: int) -> list[str]:
    if offsets.shape != (n + 1,):
        return [f"token_offsets has shape {offsets.shape}, expected ({n + 1},)"]
    off = offsets[()]
    if tokens.ndim != 2:
        return [f"tokens has shape {tokens.shape}, expected (T, D)"]
    problems = []
    if off[0] != 0 or (np.diff(off) < 0).any():
        problems.append("token_offsets do not start at 0 and rise monotonically")
    if off[-1] != tokens.shape[0]:
        problems.append(f"the last token offset is {off[-1]} but tokens has {tokens.shape[0]} rows")
    return problems


def value_problems(f: h5py.File) -> list[str]:
    """Checks that read every array: finite pooled/tokens/scores, the sha256 checksums recorded at write time."""
    problems = []
    for name in sorted(f):
        g = f[name]
        recorded = json.loads(g.attrs.get(CHECKSUM_ATTR, "{}"))
        for key in ("pooled", "tokens"):
            if key in g:
                bad, digest = scan_rows(g[key])
                if bad:
                    problems.append(f"split {name!r}: {key} holds {bad} non-finite value(s) (NaN or infinite)")
                if key in recorded and recorded[key] != digest:
                    problems.append(f"split {name!r}: {key} does not match the sha256 recorded when it was written "
                                    "(the bytes changed on disk)")
        if "pairs/score" in g and not np.isfinite(g["pairs/score"][()]).all():
            problems.append(f"split {name!r}: pair scores hold non-finite values")
    return problems


def scan_rows(dset: h5py.Dataset) -> tuple[int, str]:
    """(count of non-finite values, sha256 hex of the bytes) of a 2-d dataset, read in bounded windows."""
    digest, bad = hashlib.sha256(), 0
    step = max(1, _WINDOW_BYTES // max(1, dset.shape[1] * dset.dtype.itemsize)) if dset.ndim == 2 else 1 << 20
    for a in range(0, dset.shape[0], step):
        block = np.ascontiguousarray(dset[a:a + step])
        bad += int(block.size - np.isfinite(block).sum())
        digest.update(block.tobytes())
    return bad, digest.hexdigest()


def verify_store(path: Path) -> list[str]:
    """Every problem of the store at `path` (final file and its .parts/), one line each; [] when healthy."""
    path = Path(path)
    problems = [] if not parts_dir(path).is_dir() else shard_problems(parts_dir(path))
    if not path.exists():
        return problems + (["no final file (an unfinished extraction: rerun extract to resume)"]
                           if parts_dir(path).is_dir() else ["no such store"])
    return problems + final_problems(path)


def final_problems(path: Path) -> list[str]:
    """The problems of a final store file: structure first, then (when that is sound) every value."""
    try:
        with h5py.File(path, "r") as f:
            return structure_problems(f) or value_problems(f)
    except _UNREADABLE as exc:  # a cut or flipped file, or a dataset of the wrong kind deep in a split
        return [f"not a readable HDF5 file (truncated or corrupt: {type(exc).__name__}: {exc})"]


def shard_problems(pdir: Path) -> list[str]:
    """Shards under `<store>.parts/` that do not open or lack their datasets (`extract` re-encodes them)."""
    problems = []
    for split_dir in sorted(p for p in pdir.iterdir() if p.is_dir()):
        for _, shard in sorted(_shard_files(split_dir).items()):
            why = shard_damage(shard)
            if why:
                problems.append(f"shard {split_dir.name}/{shard.name}: {why}")
    return problems


def shard_damage(shard: Path) -> str:
    """Why a finished shard file is unusable ('' when it opens and holds ids and pooled of matching length)."""
    try:
        with h5py.File(shard, "r") as f:
            if "ids" not in f or "pooled" not in f or f["pooled"].ndim != 2:
                return "lacks its ids or pooled dataset"
            if f["ids"].shape[0] != f["pooled"].shape[0] or "fingerprint" not in f.attrs:
                return "ids and pooled differ in length, or the fingerprint attribute is missing"
    except _UNREADABLE as exc:
        return f"not a readable HDF5 file ({type(exc).__name__}: {exc})"
    return ""


def check_final(path: Path) -> dict[str, Any]:
    """The attrs of the final file at `path` after the cheap checks, else DamagedStoreError naming the first
    problems (an unreadable file included)."""
    try:
        with h5py.File(path, "r") as f:
            problems = structure_problems(f)
            attrs = {} if problems else _read_attrs(f)
    except _UNREADABLE as exc:
        problems = [f"not a readable HDF5 file (truncated or corrupt: {type(exc).__name__}: {exc})"]
    if problems:
        fix = f"{_extract_cmd(path)} --force"
        raise DamagedStoreError(f"store {path} is damaged: {'; '.join(problems[:3])}; rebuild it with `{fix}`",
                                fix=fix)
    return attrs
