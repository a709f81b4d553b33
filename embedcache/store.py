"""The HDF5 embedding store: layout, fingerprint, crash-safe sharded writing, reading.

One file per (dataset, backbone): ``<data-dir>/stores/<dataset>/<backbone>.h5``. Layout of the final file::

    /                          root attrs: every attr given to the writer, plus schema_version, fingerprint
                               (sha256 over all of them) and complete=True. str/int/float/bool values are stored
                               as HDF5 scalars; dicts, lists and None as JSON strings (their keys are listed in
                               the JSON attr ``json_attrs``). ``Store.attrs`` decodes them back.
    /<split>/ids               (N,) vlen utf-8 str: the dataset's own item ids, unique within the split
    /<split>/pooled            (N, D) float16 (attr dtype="float32" for fp32), contiguous, uncompressed
    /<split>/token_offsets     (N+1,) int64, only with tokens: row i's tokens are tokens[off[i]:off[i+1]]
    /<split>/tokens            (T_total, D_tok) pooled's dtype: the ragged token rows, concatenated (D_tok
                               may differ from D: CLIP's tokens are wider than its projected pooled output)
    /<split>/labels            (N,) int64 class index (-1 = none) or (N, C) uint8 multi-hot, when labelled
    /<split>/links             (N,) vlen str: id of the linked item in the other modality ('' = none)
    /<split>/pairs/{a,b,score} (P,) str, (P,) str, (P,) float64: graded text pairs, when the split has them
    /<split>/skipped/{ids,reasons} (S,) str each: items dropped by ``--on-error skip`` and why

Every dataset is contiguous and written with track_times=False, so reading a split is one contiguous read
per dataset and the file's bytes depend only on its contents: a run that was killed and resumed ends
byte-identical to an uninterrupted one, and so does a store filled by several parts.

Writing happens in shards beside the final file, in ``<path>.parts/``: ``manifest.json`` (the fingerprint the
shards belong to), ``lock-<k>-of-<n>`` (flock of the writer of part k of n), ``merge.lock`` and
``<split>/<index:06d>.h5`` (one shard per file, same per-split layout as above, written to ``.h5.tmp`` and
renamed, so a shard is either absent or whole). When every shard of a split exists, ``finish_split`` builds
``<path>.tmp-<pid>`` from the complete splits of the final file plus the merged shards and renames it over the
final path. A SIGKILL at any moment therefore loses at most the shard in flight, and the final file is always
the old complete one or the new complete one, never partial.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from embedcache.fingerprint import diff_keys, fingerprint, to_plain
from embedcache.registry import UnknownNameError

SCHEMA_VERSION: int = 1
DTYPES = {"float16": np.float16, "float32": np.float32}
_RESERVED = ("fingerprint", "complete", "json_attrs")  # bookkeeping attrs the writer owns
_STR = h5py.string_dtype("utf-8")
_WINDOW_BYTES = 64 << 20  # rows copied per step while merging: bounds memory, not the layout
_SHARD_RE = re.compile(r"^(\d+)\.h5$")


class StoreError(RuntimeError):
    """Base class of store errors."""


class StaleStoreError(StoreError):
    """The store on disk was built with different settings (names the changed attrs)."""


class StoreLockedError(StoreError):
    """Another live writer holds the lock of this part (names its pid and the lock file)."""


class IncompleteStoreError(StoreError):
    """Only shards exist, no final file yet (says how many, and to rerun extract to resume)."""


@dataclass
class ShardData:
    """One shard of one split: n rows in the dataset's order, plus the items of the shard that were skipped."""

    ids: list[str]  # n row ids (the dataset's own ids), unique
    pooled: np.ndarray  # (n, D) float32; the writer casts to the store dtype
    lengths: np.ndarray | None = None  # (n,) int64 token counts, when tokens are stored
    tokens: np.ndarray | None = None  # (sum(lengths), D_tok) float32, the ragged rows concatenated
    labels: np.ndarray | None = None  # (n,) int64 (-1 = none) or (n, C) uint8 multi-hot
    links: list[str] | None = None  # n ids in the other modality ('' = none)
    skipped: Sequence[tuple[str, str]] = ()  # (id, reason) of this shard's items that were skipped


def parts_dir(path: Path) -> Path:
    """The shard directory beside a store: ``<path>.parts``."""
    return Path(f"{path}.parts")


def full_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """The attrs a store records and fingerprints: the caller's (as plain JSON data) plus schema_version."""
    plain = to_plain(attrs)
    clash = sorted(set(plain) & set(_RESERVED))
    if clash:
        raise ValueError(f"store attrs may not set {clash}: the writer owns them; found in {sorted(plain)}")
    if str(plain.get("dtype", "float16")) not in DTYPES:
        raise ValueError(f"store dtype must be one of {sorted(DTYPES)}, found {plain['dtype']!r}")
    return {**plain, "schema_version": SCHEMA_VERSION}


def store_fingerprint(attrs: dict[str, Any]) -> str:
    """The fingerprint a store written with these attrs carries (schema_version included)."""
    return fingerprint(full_attrs(attrs))


def _extract_cmd(path: Path) -> str:
    return f"embedcache extract {path.parent.name} --model {path.stem}"


# ---------------------------------------------------------------------------------------------- attrs


def _write_attrs(obj: h5py.HLObject, attrs: dict[str, Any]) -> None:
    as_json = sorted(k for k, v in attrs.items() if not isinstance(v, (str, int, float, bool)))
    for key in sorted(attrs):  # sorted: the object header is then a function of the attrs alone
        obj.attrs[key] = json.dumps(attrs[key], sort_keys=True) if key in as_json else attrs[key]
    obj.attrs["json_attrs"] = json.dumps(as_json)


def _read_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    as_json = set(json.loads(obj.attrs.get("json_attrs", "[]")))
    out = {}
    for key, value in obj.attrs.items():
        if key == "json_attrs":
            continue
        value = value.item() if isinstance(value, np.generic) else value
        out[key] = json.loads(value) if key in as_json else value
    return out


def _semantic(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k not in _RESERVED}


def _stale_error(path: Path, old: dict[str, Any], new: dict[str, Any]) -> StaleStoreError:
    lines = "\n  ".join(diff_keys(_semantic(old), _semantic(new))) or "(fingerprint only)"
    return StaleStoreError(
        f"store {path} was built with different settings (fingerprint {old.get('fingerprint')} != "
        f"{new.get('fingerprint')}); changed:\n  {lines}\nrerun with --force to rebuild it: "
        f"{_extract_cmd(path)} --force"
    )


# ---------------------------------------------------------------------------------------------- files


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(src: Path, dst: Path) -> None:
    """fsync src, rename it over dst atomically, fsync the directory so the rename survives power loss."""
    _fsync(src)
    os.replace(src, dst)
    _fsync(dst.parent)


def _try_lock(path: Path, blocking: bool) -> int | None:
    """An fd holding an exclusive flock on path (created if needed), or None if another holder has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = _try_lock(path, blocking=True)
    try:
        yield
    finally:
        os.close(fd)  # closing the fd releases the flock


def _shard_files(split_dir: Path) -> dict[int, Path]:
    try:
        return {int(m.group(1)): p for p in split_dir.iterdir() if (m := _SHARD_RE.match(p.name))}
    except (FileNotFoundError, NotADirectoryError):  # absent, or merged and removed while we looked
        return {}


def _count_shards(pdir: Path) -> int:
    return sum(len(_shard_files(d)) for d in pdir.iterdir() if d.is_dir()) if pdir.is_dir() else 0


# ---------------------------------------------------------------------------------------------- split layout


def _put(g: h5py.Group, name: str, data: np.ndarray) -> None:
    g.create_dataset(name, data=data, track_times=False)


def _put_str(g: h5py.Group, name: str, values: Sequence[str]) -> None:
    # One write per vlen dataset: its global-heap layout is then the same however the rows arrived.
    g.create_dataset(name, shape=(len(values),), dtype=_STR, track_times=False)
    if len(values):
        g[name][...] = np.array(list(values), dtype=object)


def _strs(g: h5py.Group, name: str) -> list[str]:
    return list(g[name].asstr()[()]) if name in g else []


def _check_shard(data: ShardData, dtype: type) -> dict[str, Any]:
    """Validate one shard and return its arrays in the store dtypes."""
    n = len(data.ids)
    if len(set(data.ids)) != n:
        raise ValueError(f"shard ids must be unique; found {n - len(set(data.ids))} duplicates")
    pooled = np.asarray(data.pooled)
    if pooled.ndim != 2 or pooled.shape[0] != n:
        raise ValueError(f"pooled must be (n={n}, D); found shape {pooled.shape}")
    out: dict[str, Any] = {"ids": list(data.ids), "pooled": _cast(pooled, dtype, "pooled")}
    if (data.lengths is None) != (data.tokens is None):
        raise ValueError("lengths and tokens go together: give both or neither")
    if data.tokens is not None:
        lengths, tokens = np.asarray(data.lengths, np.int64), np.asarray(data.tokens)
        # The token width may differ from the pooled one (CLIP: 768-d tokens, 512-d projected pooled).
        if lengths.shape != (n,) or tokens.ndim != 2 or tokens.shape[0] != lengths.sum() or (lengths < 0).any():
            raise ValueError(f"tokens must be (sum(lengths), D_tok) with lengths (n={n},) >= 0; "
                             f"found tokens {tokens.shape}, lengths {lengths.shape} summing to {lengths.sum()}")
        out["token_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        out["tokens"] = _cast(tokens, dtype, "tokens")
    if data.labels is not None:
        out["labels"] = _check_labels(np.asarray(data.labels), n)
    if data.links is not None:
        if len(data.links) != n:
            raise ValueError(f"links must have one id per row (n={n}); found {len(data.links)}")
        out["links"] = [str(s) for s in data.links]
    out["skipped"] = [(str(i), str(r)) for i, r in data.skipped]
    return out


def _cast(x: np.ndarray, dtype: type, what: str) -> np.ndarray:
    with np.errstate(over="ignore"):  # overflow is reported below, with the fix
        y = np.ascontiguousarray(x, dtype=dtype)
    if not np.isfinite(y).all():
        raise ValueError(f"{what} has non-finite values after the cast to {np.dtype(dtype).name} "
                         f"(max |x| = {np.nanmax(np.abs(x.astype(np.float64)))}); write the store as float32 "
                         "(attr dtype='float32') or fix the backbone's outputs")
    return y


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    if labels.ndim == 1 and labels.shape == (n,) and np.issubdtype(labels.dtype, np.integer):
        return labels.astype(np.int64)
    if labels.ndim == 2 and labels.shape[0] == n and np.isin(labels, (0, 1)).all():
        return labels.astype(np.uint8)
    raise ValueError(f"labels must be (n={n},) int class indices or (n, C) 0/1 multi-hot; "
                     f"found {labels.dtype} {labels.shape}")


def _write_shard_file(path: Path, arrays: dict[str, Any], attrs: dict[str, Any]) -> None:
    with h5py.File(path, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        _put_str(f, "ids", arrays["ids"])
        for key in ("pooled", "token_offsets", "tokens", "labels"):
            if key in arrays:
                _put(f, key, arrays[key])
        if "links" in arrays:
            _put_str(f, "links", arrays["links"])
        _put_str(f, "skipped/ids", [i for i, _ in arrays["skipped"]])
        _put_str(f, "skipped/reasons", [r for _, r in arrays["skipped"]])


@contextmanager
def _opened(source: Path | h5py.Group) -> Iterator[h5py.Group]:
    if isinstance(source, h5py.Group):
        yield source
    else:
        with h5py.File(source, "r") as f:
            yield f


def _gather(sources: list[Path | h5py.Group]) -> dict[str, Any]:
    """Pass one over the blocks of a split: the small per-row data, sizes and the dim (no big arrays)."""
    meta: dict[str, Any] = {key: [] for key in ("ids", "lengths", "labels", "links", "skipped", "rows")}
    meta.update({key: set() for key in ("dims", "token_dims", "tokens", "has_labels", "has_links")})
    for source in sources:
        with _opened(source) as g:
            n = g["pooled"].shape[0]
            meta["rows"].append(n)
            meta["ids"] += _strs(g, "ids")
            meta["skipped"] += zip(_strs(g, "skipped/ids"), _strs(g, "skipped/reasons"), strict=True)
            if n == 0:  # empty blocks (all items skipped) may lack the optional datasets
                continue
            meta["dims"].add(g["pooled"].shape[1])
            meta["tokens"].add("tokens" in g)
            if "tokens" in g:
                meta["lengths"].append(np.diff(g["token_offsets"][()]))
                meta["token_dims"].add(g["tokens"].shape[1])
            meta["has_labels"].add("labels" in g)
            meta["labels"] += [g["labels"][()]] if "labels" in g else []
            meta["has_links"].add("links" in g)
            meta["links"] += _strs(g, "links")
    for key in ("dims", "token_dims", "tokens", "has_labels", "has_links"):
        if len(meta[key]) > 1:
            raise StoreError(f"the shards of one split disagree on {key}: found {sorted(meta[key])}; "
                             "delete the store's .parts directory and rerun extract")
    if len(set(meta["ids"])) != len(meta["ids"]):
        dupes = sorted(i for i, c in Counter(meta["ids"]).items() if c > 1)
        raise StoreError(f"ids must be unique within a split; found duplicates across shards: {dupes[:5]}; "
                         "the dataset adapter's ids are not unique")
    return meta


def _stream(g: h5py.Group, name: str, sources: list, rows: list[int], width: int, dtype: type) -> None:
    """Create g[name] (sum(rows), width) and copy each block's rows into it in bounded windows."""
    dst = g.create_dataset(name, shape=(sum(rows), width), dtype=dtype, track_times=False)
    step = max(1, _WINDOW_BYTES // max(1, width * np.dtype(dtype).itemsize))
    start = 0
    for source, n in zip(sources, rows, strict=True):
        if n:
            with _opened(source) as src:
                for a in range(0, n, step):
                    b = min(n, a + step)
                    dst[start + a : start + b] = src[name][a:b]
        start += n


def _write_split(g: h5py.Group, sources: list, pairs: tuple | None, dtype: type) -> None:
    """Write one split from its blocks (shard files in index order, or the split of an older final file)."""
    meta = _gather(sources)
    dim = next(iter(meta["dims"]), 0)
    _put_str(g, "ids", meta["ids"])
    _stream(g, "pooled", sources, meta["rows"], dim, dtype)
    if True in meta["tokens"]:
        lengths = np.concatenate(meta["lengths"]) if meta["lengths"] else np.zeros(0, np.int64)
        _put(g, "token_offsets", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        token_rows = [int(np.sum(x)) for x in meta["lengths"]]
        blocks = [s for s, n in zip(sources, meta["rows"], strict=True) if n]
        _stream(g, "tokens", blocks, token_rows, meta["token_dims"].pop(), dtype)
    if True in meta["has_labels"]:
        _put(g, "labels", np.concatenate(meta["labels"]))
    if True in meta["has_links"]:
        _put_str(g, "links", meta["links"])
    _put_str(g, "skipped/ids", [i for i, _ in meta["skipped"]])
    _put_str(g, "skipped/reasons", [r for _, r in meta["skipped"]])
    if pairs is not None:
        a, b, score = pairs
        if not len(a) == len(b) == len(score):
            raise ValueError(f"pairs need equal lengths; found a {len(a)}, b {len(b)}, score {len(score)}")
        _put_str(g, "pairs/a", [str(x) for x in a])
        _put_str(g, "pairs/b", [str(x) for x in b])
        _put(g, "pairs/score", np.asarray(score, np.float64))


def _read_pairs(g: h5py.Group) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if "pairs" not in g:
        return None
    return g["pairs/a"].asstr()[()], g["pairs/b"].asstr()[()], g["pairs/score"][()]


# ---------------------------------------------------------------------------------------------- writer


class StoreWriter:
    """Fills one store, shard by shard, crash-safely; part=(k, n) writes only the shards with index % n == k.

    Holds an exclusive flock on ``<path>.parts/lock-<k>-of-<n>`` while open, so one process per part; the OS
    drops it if the process dies. A final file with another fingerprint is refused (StaleStoreError) unless
    ``force``, in which case it is replaced when the first split is finished. Shards left by a run with another
    fingerprint are discarded. ``force`` only overrides staleness: a store with this very fingerprint is kept.
    """

    def __init__(self, path: Path, attrs: dict[str, Any], *, force: bool = False,
                 part: tuple[int, int] = (0, 1)) -> None:
        k, n = part
        if not 0 <= k < n:
            raise ValueError(f"part must be (k, n) with 0 <= k < n; found {part}")
        self.path, self.part, self.force = Path(path), (k, n), force
        self.attrs = full_attrs(attrs)
        self.fingerprint = fingerprint(self.attrs)
        self._dtype = DTYPES[str(self.attrs.get("dtype", "float16"))]
        self._final_usable()  # stale and not force: raise now rather than after hours of extraction
        self.parts = parts_dir(self.path)
        self.parts.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = self._lock_part()
        try:
            with _locked(self.parts / "merge.lock"):
                self._reconcile_manifest()
                self._drop_leftovers()
            self._drop_own_tmp()
        except BaseException:
            self.close()
            raise

    def _lock_part(self) -> int:
        k, n = self.part
        lock = self.parts / f"lock-{k}-of-{n}"
        fd = _try_lock(lock, blocking=False)
        if fd is None:
            owner = lock.read_text().strip() or "unknown pid"
            raise StoreLockedError(f"another writer (pid and host: {owner}) holds {lock}: part {k} of {n} of "
                                   f"{self.path} is being written. Wait for it, or stop that process.")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        return fd

    def _reconcile_manifest(self) -> None:
        manifest = self.parts / "manifest.json"
        old = json.loads(manifest.read_text()) if manifest.exists() else {}
        if old.get("fingerprint") == self.fingerprint:
            return
        busy = self._other_writers()
        if busy:
            raise StoreLockedError(f"{self.parts} is being filled with other settings (fingerprint "
                                   f"{old.get('fingerprint')}, writers holding {busy}); wait for them or stop them "
                                   "before writing this store with new settings")
        for d in self.parts.iterdir():  # shards of other settings: useless, and they must never be merged
            if d.is_dir():
                shutil.rmtree(d)
        tmp = self.parts / f"manifest.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "attrs": self.attrs}, sort_keys=True, indent=1))
        _replace(tmp, manifest)  # after the discard: a kill in between discards the rest next time

    def _drop_leftovers(self) -> None:
        """What a kill can leave behind (call under the merge lock, so no merge is running): half-built final
        files, and the shards of splits that were merged but not yet deleted when the process died."""
        for stale in self.path.parent.glob(f"{self.path.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        for d in self.parts.iterdir():
            if d.is_dir() and self.has_split(d.name):
                self._drop_shards(d.name)

    def _other_writers(self) -> list[str]:
        mine, busy = f"lock-{self.part[0]}-of-{self.part[1]}", []
        for lock in sorted(self.parts.glob("lock-*")):
            fd = None if lock.name == mine else _try_lock(lock, blocking=False)
            if fd is None and lock.name != mine:
                busy.append(f"{lock.name} ({lock.read_text().strip()})")
            elif fd is not None:
                os.close(fd)
        return busy

    def _drop_own_tmp(self) -> None:
        k, n = self.part  # a .tmp of our indices is a shard whose writer died in flight: we hold its lock
        for tmp in self.parts.glob("*/*.h5.tmp"):
            if int(tmp.name.split(".")[0]) % n == k:
                tmp.unlink(missing_ok=True)

    def _final_usable(self) -> bool:
        """True if the final file exists with our fingerprint; False if absent, or stale and force is set."""
        if not self.path.exists():
            return False
        with h5py.File(self.path, "r") as f:
            old = _read_attrs(f)
        if old.get("fingerprint") == self.fingerprint:
            return True
        if self.force:
            return False
        raise _stale_error(self.path, old, {**self.attrs, "fingerprint": self.fingerprint})

    def has_split(self, split: str) -> bool:
        """True if the final store has this split complete, with this writer's fingerprint."""
        if _final_fingerprint(self.path) != self.fingerprint:
            return False
        with h5py.File(self.path, "r") as f:
            return split in f

    def done_shards(self, split: str) -> set[int]:
        """Indices of the shards of this split already on disk (written by any part)."""
        return set(_shard_files(self.parts / split))

    def write_shard(self, split: str, index: int, data: ShardData) -> None:
        """Write one shard atomically: to ``<index:06d>.h5.tmp``, fsync, then rename into place."""
        k, n = self.part
        if index % n != k or index < 0:
            raise ValueError(f"part {k} of {n} writes shards with index % {n} == {k}; found index {index}")
        if not split or "/" in split or split.startswith("."):
            raise ValueError(f"split names must be plain names; found {split!r}")
        arrays = _check_shard(data, self._dtype)
        want_tokens = self.attrs.get("tokens")
        if want_tokens is not None and bool(want_tokens) != ("tokens" in arrays) and len(arrays["ids"]):
            raise ValueError(f"store attrs say tokens={want_tokens} but the shard has tokens={'tokens' in arrays}")
        split_dir = self.parts / split
        split_dir.mkdir(exist_ok=True)
        final = split_dir / f"{index:06d}.h5"
        tmp = split_dir / f"{index:06d}.h5.tmp"
        _write_shard_file(tmp, arrays, {"fingerprint": self.fingerprint, "split": split, "index": index})
        _replace(tmp, final)

    def finish_split(self, split: str, num_shards: int,
                     pairs: tuple[list[str], list[str], np.ndarray] | None = None) -> bool:
        """Merge the split into the final file if all its shards 0..num_shards-1 exist; True once it is there.

        Any part may call it; a merge lock serialises them. The new file (existing complete splits of this
        fingerprint + this split's shards in index order + pairs) is built beside the final path and renamed
        over it, then the split's shards are deleted. False if shards are still missing (other parts).
        """
        with _locked(self.parts / "merge.lock"):
            if self.has_split(split):
                self._drop_shards(split)  # a kill between rename and cleanup leaves them behind
                return True
            shards = _shard_files(self.parts / split)
            if any(i not in shards for i in range(num_shards)):
                return False
            self._check_shard_fingerprints([shards[i] for i in range(num_shards)])
            self._drop_leftovers()
            self._merge(split, [shards[i] for i in range(num_shards)], pairs)
            self._drop_shards(split)
        return True

    def _check_shard_fingerprints(self, files: list[Path]) -> None:
        for p in files:
            with h5py.File(p, "r") as f:
                found = f.attrs.get("fingerprint")
            if found != self.fingerprint:
                p.unlink()
                raise StoreError(f"shard {p} has fingerprint {found}, expected {self.fingerprint} (written by a "
                                 f"writer with other settings); it was deleted: rerun {_extract_cmd(self.path)}")

    def _merge(self, split: str, shard_files: list[Path], pairs: tuple | None) -> None:
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        keep = self._final_usable()  # a stale final (force) contributes nothing
        with h5py.File(self.path, "r") if keep else _no_file() as old, h5py.File(tmp, "w") as out:
            # sorted: the bytes must not depend on the order in which splits were finished
            names = sorted({split, *(old.keys() if old is not None else ())})
            for name in names:
                if name == split:
                    _write_split(out.create_group(name), list(shard_files), pairs, self._dtype)
                else:
                    _write_split(out.create_group(name), [old[name]], _read_pairs(old[name]), self._dtype)
            _write_attrs(out, {**self.attrs, "fingerprint": self.fingerprint, "complete": True})
        _replace(tmp, self.path)

    def _drop_shards(self, split: str) -> None:
        d = self.parts / split
        if d.is_dir():
            for p in d.iterdir():
                p.unlink(missing_ok=True)
            with suppress(OSError):  # a stray .tmp of another part appeared meanwhile: leave the directory
                d.rmdir()

    def close(self) -> None:
        """Release the part lock; remove the .parts directory once nothing is pending and no writer is left."""
        if self._lock_fd is None:
            return
        os.close(self._lock_fd)
        self._lock_fd = None
        if _count_shards(self.parts) == 0 and _final_fingerprint(self.path) == self.fingerprint:
            self._remove_parts()

    def _remove_parts(self) -> None:
        # Only when we can take every lock: another writer still running keeps the directory.
        fds = []
        try:
            for lock in sorted(self.parts.glob("lock-*")) + [self.parts / "merge.lock"]:
                fd = _try_lock(lock, blocking=False)
                if fd is None:
                    return
                fds.append(fd)
            if _count_shards(self.parts) == 0:
                shutil.rmtree(self.parts)
        finally:
            for fd in fds:
                os.close(fd)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _final_fingerprint(path: Path) -> str | None:
    if not path.exists():
        return None
    with h5py.File(path, "r") as f:
        return f.attrs.get("fingerprint")


@contextmanager
def _no_file() -> Iterator[None]:
    yield None


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
        raise FileNotFoundError(f"no store at {path}; create it with `{_extract_cmd(path)}`")
    store = Store(path)
    if not store.attrs.get("complete"):
        store.close()
        raise IncompleteStoreError(f"store {path} is not marked complete; rerun `{_extract_cmd(path)}`")
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


def summarize(path: Path) -> StoreSummary:
    """Summary of the store at `path` (final file and/or its .parts directory)."""
    path, pdir = Path(path), parts_dir(Path(path))
    attrs: dict[str, Any] = {}
    s = StoreSummary(path=path, dataset=path.parent.name, backbone=path.stem)
    if path.exists():
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
    return s


def list_stores(data_dir: Path) -> list[StoreSummary]:
    """Every store under ``<data_dir>/stores/*/``: final ``*.h5`` files and in-progress ``*.h5.parts``."""
    root = Path(data_dir) / "stores"
    finals = set(root.glob("*/*.h5")) | {p.with_name(p.name[: -len(".parts")]) for p in root.glob("*/*.h5.parts")}
    return [summarize(p) for p in sorted(finals)]
