"""Damaged stores: every state a store file or its .parts/ can be left in by a crash, a disk or a hand edit is
reported by verify (one line per problem), listed as damaged by ls, refused by readers with the fix, and rebuilt
byte-identical by a --force writer; streamed reads refuse a store replaced under them; NaN trains to nothing."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from _store_writer_child import ATTRS, fill

from embedcache.store import (
    DamagedStoreError,
    ShardData,
    StaleStoreError,
    StoreError,
    StoreWriter,
    list_stores,
    open_store,
    parts_dir,
    verify_store,
)


def _edit(path: Path, fn: Callable[[h5py.File], None]) -> None:
    with h5py.File(path, "r+") as f:
        fn(f)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_superblock(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:48] = bytes(b ^ 0xFF for b in data[8:48])  # version, sizes and the base/end-of-file addresses
    path.write_bytes(bytes(data))


def _set(key: str, value: object) -> Callable[[Path], None]:
    return lambda path: _edit(path, lambda f: f.attrs.__setitem__(key, value))


def _swap_offsets(f: h5py.File) -> None:
    off = f["train/token_offsets"][()]
    i = int(np.argmax(np.diff(off) > 0))  # a row with tokens: moving its end below its start breaks monotony
    off[i + 1] = off[i] - 1 if off[i] > 0 else off[-1] + 1
    f["train/token_offsets"][...] = off


def _dupe(f: h5py.File) -> None:
    ids = f["train/ids"].asstr()[()]
    ids[1] = ids[0]
    f["train/ids"][...] = np.array(ids, dtype=object)


def _nan(f: h5py.File) -> None:
    f["train/pooled"][0, 0] = np.nan


FINAL_DAMAGE = {
    "truncated": _truncate,
    "flipped superblock": _flip_superblock,
    "deleted train/pooled": lambda p: _edit(p, lambda f: f.__delitem__("train/pooled")),
    "deleted train/ids": lambda p: _edit(p, lambda f: f.__delitem__("train/ids")),
    "complete false": _set("complete", False),
    "corrupt JSON attribute": _set("preprocessing", "{not json"),
    "hand-edited attribute": _set("revision", "r2"),
    "non-monotone offsets": lambda p: _edit(p, _swap_offsets),
    "last offset past the tokens": lambda p: _edit(p, lambda f: f["train/token_offsets"].__setitem__(-1, 10**6)),
    "duplicate ids": lambda p: _edit(p, _dupe),
}
VALUE_DAMAGE = {  # readable and consistent in shape: only verify, which reads every value, finds them
    "NaN in pooled": lambda p: _edit(p, _nan),
    "bytes changed under the checksum": lambda p: _edit(p, lambda f: f["val/pooled"].__setitem__((0, 0), 7.0)),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ref") / "stores" / "synth" / "tiny.h5"
    fill(path)
    return path.read_bytes()


def _fresh(tmp_path: Path) -> tuple[Path, Path]:
    """A damaged-to-be store and a healthy neighbour, under one data dir."""
    path, other = tmp_path / "stores" / "synth" / "tiny.h5", tmp_path / "stores" / "synth" / "other.h5"
    fill(path)
    fill(other, {**ATTRS, "backbone": "other"})
    return path, other


@pytest.mark.parametrize("damage", list(FINAL_DAMAGE))
def test_damaged_final_file_is_reported_refused_and_rebuilt_by_force(tmp_path: Path, damage: str,
                                                                    reference: bytes) -> None:
    path, other = _fresh(tmp_path)
    FINAL_DAMAGE[damage](path)
    problems = verify_store(path)
    assert problems and all("\n" not in p for p in problems), problems
    listed = {s.path.name: s for s in list_stores(tmp_path)}  # ls goes on past the damaged one
    assert listed["tiny.h5"].damaged and not listed["other.h5"].damaged and listed["other.h5"].complete
    with pytest.raises(StoreError, match="--force"):
        open_store(path).close()
    with pytest.raises(StoreError, match="--force"):  # no loop: extract without --force says what to do
        fill(path)
    assert fill(path, force=True) == {"train": True, "val": True}
    assert verify_store(path) == [] and path.read_bytes() == reference
    assert verify_store(other) == []


@pytest.mark.parametrize("damage", list(VALUE_DAMAGE))
def test_value_damage_is_found_by_verify_and_rebuilt_by_force(tmp_path: Path, damage: str,
                                                             reference: bytes) -> None:
    path, _ = _fresh(tmp_path)
    VALUE_DAMAGE[damage](path)
    problems = verify_store(path)
    assert len(problems) >= 1, problems
    assert any("non-finite" in p for p in problems) == (damage == "NaN in pooled")
    assert any("sha256" in p for p in problems)
    assert fill(path) == {"train": True, "val": True} and verify_store(path)  # without --force: kept as it is
    fill(path, force=True)  # --force reads the values of a same-fingerprint file and rebuilds a damaged one
    assert verify_store(path) == [] and path.read_bytes() == reference


def _partial(tmp_path: Path) -> Path:
    path = tmp_path / "stores" / "synth" / "tiny.h5"
    fill(path, part=(0, 2))  # part 0's shards only: nothing merged yet
    assert not path.exists() and list(parts_dir(path).glob("train/*.h5"))
    return path


@pytest.mark.parametrize("force", [False, True])
def test_damaged_shard_is_discarded_and_encoded_again(tmp_path: Path, force: bool, reference: bytes) -> None:
    path = _partial(tmp_path)
    shards = sorted(parts_dir(path).glob("train/*.h5"))
    _truncate(shards[1])
    shards[2].write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # an HDF5 signature and nothing behind it
    problems = verify_store(path)
    assert sum("shard train/" in p for p in problems) == 2, problems
    listed = list_stores(tmp_path)
    assert len(listed) == 1 and not listed[0].complete
    fill(path, force=force)
    assert verify_store(path) == [] and path.read_bytes() == reference and not parts_dir(path).exists()


def test_unreadable_manifest_discards_the_parts(tmp_path: Path, reference: bytes) -> None:
    path = _partial(tmp_path)
    (parts_dir(path) / "manifest.json").write_text("{garbage")
    fill(path)
    assert verify_store(path) == [] and path.read_bytes() == reference


def test_stale_store_still_needs_force_and_a_truncated_copy_is_not_a_store(tmp_path: Path) -> None:
    path, _ = _fresh(tmp_path)
    with pytest.raises(StaleStoreError, match="--force"):
        fill(path, {**ATTRS, "revision": "r9"})
    copy = path.with_name("copy.h5")
    shutil.copy(path, copy)
    _truncate(copy)
    with pytest.raises(DamagedStoreError, match="not a readable HDF5 file"):
        open_store(copy)


# ------------------------------------------------------------------------------------- readers under change


def _rebuild(path: Path, **changed: object) -> None:
    """What `extract --force` with other settings does to a store: the same rows written under new attrs."""
    with open_store(path) as store:
        attrs = {k: v for k, v in store.attrs.items() if k not in ("fingerprint", "complete", "schema_version")}
        splits = {name: store.split(name) for name in store.splits}
        data = {name: ShardData(ids=list(sp.ids), pooled=sp.pooled(), lengths=np.diff(sp.offsets()),
                                tokens=sp.token_rows(0, len(sp))[0], links=None if sp.links is None else list(sp.links))
                for name, sp in splits.items()}
    with StoreWriter(path, {**attrs, **changed}, force=True) as writer:
        for name, shard in data.items():
            writer.write_shard(name, 0, shard)
            writer.finish_split(name, 1)


def test_streamed_tokens_refuse_a_store_rebuilt_under_them(tmp_path: Path) -> None:
    from _stage2_fixtures import make_toy_stores

    from embedcache.fusion.views import load_view

    path = make_toy_stores(tmp_path, sizes={"train": 30, "val": 10}, tokens=True).paths["text-a"]
    view = load_view(path, "train", tokens=True, ram_budget=2000)
    assert view.stream is not None
    first, _ = view.stream.read(0, 2)  # the store it was loaded from: fine
    _rebuild(path, revision="rebuilt")
    with pytest.raises(StoreError, match="changed while it was streamed"):
        view.stream.read(2, 4)
