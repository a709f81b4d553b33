"""The store's on-disk layout: attrs and fingerprint, errors, shard files, and the per-split arrays
(written from shards, read back). See embedcache/store/__init__.py for the layout itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from embedcache.errors import BadInputError, UserError
from embedcache.fingerprint import diff_keys, fingerprint, to_plain

SCHEMA_VERSION: int = 1
DTYPES = {"float16": np.float16, "float32": np.float32}
_RESERVED = ("fingerprint", "complete", "json_attrs")  # bookkeeping attrs the writer owns
_STR = h5py.string_dtype("utf-8")
_WINDOW_BYTES = 64 << 20  # rows copied per step while merging: bounds memory, not the layout
_SHARD_RE = re.compile(r"^(\d+)\.h5$")
CHECKSUM_ATTR = "sha256"  # split group attr: JSON {"pooled": hex, "tokens": hex} of the arrays' bytes (C order)


class StoreError(UserError, RuntimeError):
    """Base class of store errors: each says what is wrong with which store and how to fix it."""


class StaleStoreError(StoreError):
    """The store on disk was built with different settings (names the changed attrs)."""


class StoreLockedError(StoreError):
    """Another live writer holds the lock of this part (names its pid and the lock file)."""


class DamagedStoreError(StoreError):
    """A store file is unreadable or inconsistent (names the problem and the rebuild command)."""


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
        raise BadInputError(f"store attrs may not set {clash}: the writer owns them; found in {sorted(plain)}")
    if str(plain.get("dtype", "float16")) not in DTYPES:
        raise BadInputError(f"store dtype must be one of {sorted(DTYPES)}, found {plain['dtype']!r}")
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
        f"{_extract_cmd(path)} --force", fix=f"{_extract_cmd(path)} --force"
    )



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
        raise BadInputError(f"shard ids must be unique; found {n - len(set(data.ids))} duplicates")
    pooled = np.asarray(data.pooled)
    if pooled.ndim != 2 or pooled.shape[0] != n:
        raise BadInputError(f"pooled must be (n={n}, D); found shape {pooled.shape}")
    out: dict[str, Any] = {"ids": list(data.ids), "pooled": _cast(pooled, dtype, "pooled")}
    if (data.lengths is None) != (data.tokens is None):
        raise BadInputError("lengths and tokens go together: give both or neither")
    if data.tokens is not None:
        lengths, tokens = np.asarray(data.lengths, np.int64), np.asarray(data.tokens)
        # The token width may differ from the pooled one (CLIP: 768-d tokens, 512-d projected pooled).
        if lengths.shape != (n,) or tokens.ndim != 2 or tokens.shape[0] != lengths.sum() or (lengths < 0).any():
            raise BadInputError(f"tokens must be (sum(lengths), D_tok) with lengths (n={n},) >= 0; "
                                f"found tokens {tokens.shape}, lengths {lengths.shape} summing to {lengths.sum()}")
        out["token_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        out["tokens"] = _cast(tokens, dtype, "tokens")
    if data.labels is not None:
        out["labels"] = _check_labels(np.asarray(data.labels), n)
    if data.links is not None:
        if len(data.links) != n:
            raise BadInputError(f"links must have one id per row (n={n}); found {len(data.links)}")
        out["links"] = [str(s) for s in data.links]
    out["skipped"] = [(str(i), str(r)) for i, r in data.skipped]
    return out


def _cast(x: np.ndarray, dtype: type, what: str) -> np.ndarray:
    with np.errstate(over="ignore"):  # overflow is reported below, with the fix
        y = np.ascontiguousarray(x, dtype=dtype)
    if not np.isfinite(y).all():
        raise BadInputError(f"{what} has non-finite values after the cast to {np.dtype(dtype).name} "
                            f"(max |x| = {np.nanmax(np.abs(x.astype(np.float64)))}); write the store as float32 "
                            "(attr dtype='float32') or fix the backbone's outputs")
    return y


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    if labels.ndim == 1 and labels.shape == (n,) and np.issubdtype(labels.dtype, np.integer):
        return labels.astype(np.int64)
    if labels.ndim == 2 and labels.shape[0] == n and np.isin(labels, (0, 1)).all():
        return labels.astype(np.uint8)
    raise BadInputError(f"labels must be (n={n},) int class indices or (n, C) 0/1 multi-hot; "
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


def _stream(g: h5py.Group, name: str, sources: list, rows: list[int], width: int, dtype: type) -> str:
    """Create g[name] (sum(rows), width) and copy each block's rows into it in bounded windows; return the
    sha256 of the array's bytes (C order), hashed on the way (recorded for `embedcache verify`)."""
    dst = g.create_dataset(name, shape=(sum(rows), width), dtype=dtype, track_times=False)
    step = max(1, _WINDOW_BYTES // max(1, width * np.dtype(dtype).itemsize))
    start, digest = 0, hashlib.sha256()
    for source, n in zip(sources, rows, strict=True):
        if n:
            with _opened(source) as src:
                for a in range(0, n, step):
                    b = min(n, a + step)
                    block = np.ascontiguousarray(src[name][a:b], dtype=dtype)
                    dst[start + a : start + b] = block
                    digest.update(block.tobytes())
        start += n
    return digest.hexdigest()


def _write_split(g: h5py.Group, sources: list, pairs: tuple | None, dtype: type) -> None:
    """Write one split from its blocks (shard files in index order, or the split of an older final file)."""
    meta = _gather(sources)
    dim = next(iter(meta["dims"]), 0)
    _put_str(g, "ids", meta["ids"])
    sums = {"pooled": _stream(g, "pooled", sources, meta["rows"], dim, dtype)}
    if True in meta["tokens"]:
        lengths = np.concatenate(meta["lengths"]) if meta["lengths"] else np.zeros(0, np.int64)
        _put(g, "token_offsets", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        token_rows = [int(np.sum(x)) for x in meta["lengths"]]
        blocks = [s for s, n in zip(sources, meta["rows"], strict=True) if n]
        sums["tokens"] = _stream(g, "tokens", blocks, token_rows, meta["token_dims"].pop(), dtype)
    g.attrs[CHECKSUM_ATTR] = json.dumps(sums, sort_keys=True)
    if True in meta["has_labels"]:
        _put(g, "labels", np.concatenate(meta["labels"]))
    if True in meta["has_links"]:
        _put_str(g, "links", meta["links"])
    _put_str(g, "skipped/ids", [i for i, _ in meta["skipped"]])
    _put_str(g, "skipped/reasons", [r for _, r in meta["skipped"]])
    if pairs is not None:
        a, b, score = pairs
        if not len(a) == len(b) == len(score):
            raise BadInputError(f"pairs need equal lengths; found a {len(a)}, b {len(b)}, score {len(score)}")
        _put_str(g, "pairs/a", [str(x) for x in a])
        _put_str(g, "pairs/b", [str(x) for x in b])
        _put(g, "pairs/score", np.asarray(score, np.float64))


def _read_pairs(g: h5py.Group) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if "pairs" not in g:
        return None
    return g["pairs/a"].asstr()[()], g["pairs/b"].asstr()[()], g["pairs/score"][()]

