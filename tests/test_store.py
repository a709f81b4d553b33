"""The HDF5 store: round trips, staleness, locking, multi-part filling and kill -9 at random moments."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from _store_writer_child import ATTRS, fill, make_pairs, make_shard

from embedcache.store import (
    IncompleteStoreError,
    ShardData,
    StaleStoreError,
    StoreLockedError,
    StoreWriter,
    list_stores,
    open_store,
    parts_dir,
)

CHILD = Path(__file__).with_name("_store_writer_child.py")


def store_path(tmp_path: Path, backbone: str = "tiny") -> Path:
    return tmp_path / "stores" / "synth" / f"{backbone}.h5"


def expected(split: str, num_shards: int) -> dict:
    """The arrays a split must hold: make_shard's shards concatenated in index order."""
    shards = [make_shard(split, i) for i in range(num_shards)]
    return {
        "ids": [i for s in shards for i in s.ids],
        "pooled": np.concatenate([s.pooled for s in shards]),
        "lengths": np.concatenate([s.lengths for s in shards]),
        "tokens": np.concatenate([s.tokens for s in shards]),
        "labels": np.concatenate([s.labels for s in shards]),
        "links": [x for s in shards for x in s.links],
        "skipped": [x for s in shards for x in s.skipped],
    }


def arrays(path: Path) -> dict:
    """Everything a store holds, as plain numpy, for equality checks."""
    with open_store(path) as store:
        out = {"attrs": store.attrs}
        for name in store.splits:
            sp = store.split(name)
            out[name] = (list(sp.ids), sp.pooled(), sp.offsets(), sp.token_rows(0, len(sp))[0], sp.labels,
                         list(sp.links), sp.skipped, sp.pairs)
        return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert a["attrs"] == b["attrs"]
    for key in a.keys() - {"attrs"}:
        for x, y in zip(a[key], b[key], strict=True):
            if isinstance(x, tuple):  # pairs
                for u, v in zip(x, y, strict=True):
                    np.testing.assert_array_equal(u, v)
            else:
                np.testing.assert_array_equal(np.asarray(x, dtype=object), np.asarray(y, dtype=object))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted single-writer run, for the multi-part and kill -9 tests to match."""
    path = store_path(tmp_path_factory.mktemp("ref"))
    assert fill(path) == {"train": True, "val": True}
    return path


# ---------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_pooled_round_trip_honours_dtype(tmp_path: Path, dtype: str) -> None:
    path = store_path(tmp_path)
    fill(path, {**ATTRS, "dtype": dtype}, {"train": 5})
    want = expected("train", 5)
    with h5py.File(path, "r") as f:  # the on-disk layout the docs promise
        ds = f["train/pooled"]
        assert ds.dtype == np.dtype(dtype) and ds.chunks is None and ds.compression is None
        assert f["train/tokens"].chunks is None and f.attrs["complete"]
    with open_store(path) as store:
        sp = store.split("train")
        assert list(sp.ids) == want["ids"] and len(sp) == len(want["ids"]) and sp.dim == 8
        pooled = sp.pooled()
        assert pooled.dtype == np.float32 and pooled.shape == (len(sp), 8)
        np.testing.assert_array_equal(pooled, want["pooled"].astype(dtype).astype(np.float32))
        assert sp.pooled(np.float16).dtype == np.float16
        assert sp.index() == {i: r for r, i in enumerate(want["ids"])}
        assert store.attrs["dtype"] == dtype and store.attrs["preprocessing"] == {"max_length": 16}


def test_ragged_tokens(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    fill(path, {**ATTRS, "dtype": "float32"}, {"train": 6})
    want = expected("train", 6)
    assert (want["lengths"] == 0).any(), "fixture must include an empty token row"
    with open_store(path) as store:
        sp = store.split("train")
        assert sp.has_tokens
        off = sp.offsets()
        assert off.dtype == np.int64 and off[0] == 0
        np.testing.assert_array_equal(np.diff(off), want["lengths"])
        for row in range(len(sp)):
            np.testing.assert_array_equal(sp.tokens(row), want["tokens"][off[row] : off[row + 1]])
        block, rebased = sp.token_rows(2, 7)
        np.testing.assert_array_equal(rebased, off[2:8] - off[2])
        np.testing.assert_array_equal(block, want["tokens"][off[2] : off[7]])


def test_tokens_may_be_wider_than_pooled(tmp_path: Path) -> None:
    path = store_path(tmp_path, "clip")  # CLIP: 512-d projected pooled, 768-d tokens; here 4 and 6
    toks = [np.arange(18, dtype=np.float32).reshape(3, 6), np.full((2, 6), 7, np.float32)]
    with StoreWriter(path, ATTRS) as w:
        for i, t in enumerate(toks):
            w.write_shard("train", i, ShardData(ids=[f"r{i}"], pooled=np.ones((1, 4), np.float32),
                                                lengths=np.array([len(t)]), tokens=t))
        assert w.finish_split("train", 2)
    with open_store(path) as store:
        sp = store.split("train")
        assert sp.dim == 4 and sp.token_dim == 6 and sp.pooled().shape == (2, 4)
        np.testing.assert_array_equal(sp.tokens(0), toks[0])
        np.testing.assert_array_equal(sp.tokens(1), toks[1])


def test_labels_links_pairs_skipped(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    fill(path, plan={"val": 4})
    want = expected("val", 4)
    with open_store(path) as store:
        sp = store.split("val")
        assert sp.labels.dtype == np.int64
        np.testing.assert_array_equal(sp.labels, want["labels"])
        assert list(sp.links) == want["links"] and "" in want["links"]
        assert sp.skipped == want["skipped"] and len(sp.skipped) == 2  # shards 0 and 3
        a, b, score = sp.pairs
        want_a, want_b, want_score = make_pairs("val")
        assert list(a) == want_a and list(b) == want_b
        np.testing.assert_array_equal(score, want_score)


def test_multi_hot_labels_and_no_tokens(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    hot = np.array([[1, 0, 1], [0, 0, 0]], dtype=np.uint8)
    with StoreWriter(path, {**ATTRS, "tokens": False, "label_kind": "multi"}) as w:
        w.write_shard("train", 0, ShardData(ids=["x", "y"], pooled=np.ones((2, 4), np.float32), labels=hot))
        assert w.finish_split("train", 1)
    with open_store(path) as store:
        sp = store.split("train")
        assert sp.labels.dtype == np.uint8 and not sp.has_tokens and sp.links is None and sp.pairs is None
        np.testing.assert_array_equal(sp.labels, hot)
        with pytest.raises(KeyError, match="splits present: train"):
            store.split("test")


def test_bad_shards_are_refused(tmp_path: Path) -> None:
    with StoreWriter(store_path(tmp_path), ATTRS, part=(1, 2)) as w:
        ok = make_shard("train", 1)
        with pytest.raises(ValueError, match="index % 2 == 1"):
            w.write_shard("train", 2, ok)
        with pytest.raises(ValueError, match="unique"):
            w.write_shard("train", 1, ShardData(ids=["a", "a"], pooled=np.zeros((2, 8), np.float32)))
        with pytest.raises(ValueError, match=r"pooled must be \(n=2, D\)"):
            w.write_shard("train", 1, ShardData(ids=["a", "b"], pooled=np.zeros((3, 8), np.float32)))
        with pytest.raises(ValueError, match="tokens=True"):
            w.write_shard("train", 1, ShardData(ids=["a"], pooled=np.zeros((1, 8), np.float32)))
        with pytest.raises(ValueError, match="non-finite"):
            w.write_shard("train", 1, ShardData(ids=["a"], pooled=np.full((1, 8), 1e6, np.float32),
                                                lengths=np.zeros(1, np.int64), tokens=np.zeros((0, 8))))
        assert w.done_shards("train") == set()


# ---------------------------------------------------------------------------------------------- staleness


def test_stale_store_is_refused_naming_the_changed_attr(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    fill(path, plan={"train": 2})
    changed = {**ATTRS, "pooling": "cls"}
    with pytest.raises(StaleStoreError, match=r"(?s)pooling: \"mean\" -> \"cls\".*--force"):
        StoreWriter(path, changed)
    with pytest.raises(StaleStoreError, match="pooling"):
        open_store(path, expect=changed)
    open_store(path, expect=ATTRS).close()  # the same attrs pass


def test_force_rebuilds_and_drops_stale_splits(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    fill(path, plan={"train": 2, "val": 2})
    changed = {**ATTRS, "revision": "r2"}
    with StoreWriter(path, changed, force=True) as w:
        assert not w.has_split("train")
        w.write_shard("train", 0, make_shard("train", 0))
        assert w.finish_split("train", 1)
    with open_store(path, expect=changed) as store:
        assert store.splits == ["train"]  # the stale val split went with the stale file
        assert list(store.split("train").ids) == make_shard("train", 0).ids
        assert store.attrs["revision"] == "r2"


def test_stale_shards_are_discarded(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    with StoreWriter(path, ATTRS) as w:
        w.write_shard("train", 0, make_shard("train", 0))
    with StoreWriter(path, ATTRS) as w:  # same settings: the shard is kept for resuming
        assert w.done_shards("train") == {0}
    with StoreWriter(path, {**ATTRS, "pooling": "cls"}) as w:
        assert w.done_shards("train") == set()


def test_second_split_keeps_the_first(tmp_path: Path, reference: Path) -> None:
    path = store_path(tmp_path)
    assert fill(path, plan={"train": 40}) == {"train": True}
    first = arrays(path)
    assert fill(path, plan={"val": 8}) == {"val": True}
    both = arrays(path)
    assert_same({"attrs": first["attrs"], "train": first["train"]}, {"attrs": both["attrs"], "train": both["train"]})
    assert path.read_bytes() == reference.read_bytes()  # finishing order does not change the bytes


# ---------------------------------------------------------------------------------------------- parts and locks


def test_second_writer_of_a_part_is_locked_out(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    child = subprocess.Popen([sys.executable, str(CHILD), "hold", str(path), "0", "1"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match=rf"pid and host: {child.pid} .*lock-0-of-1"):
            StoreWriter(path, ATTRS)
        StoreWriter(path, ATTRS, part=(1, 2)).close()  # other parts are free
        with pytest.raises(StoreLockedError, match=rf"other settings .*lock-0-of-1 \({child.pid} "):
            StoreWriter(path, {**ATTRS, "pooling": "cls"}, part=(1, 2))  # would discard the live writer's shards
    finally:
        child.kill()  # SIGKILL: the OS must drop the flock
        child.wait()
    StoreWriter(path, ATTRS).close()


def test_two_parts_equal_one_writer(tmp_path: Path, reference: Path) -> None:
    path = store_path(tmp_path)
    assert fill(path, part=(1, 2)) == {"train": False, "val": False}  # part 0's shards are missing
    with pytest.raises(IncompleteStoreError, match="24 shards"):  # 20 train + 4 val shards of part 1
        open_store(path)
    assert fill(path, part=(0, 2)) == {"train": True, "val": True}
    assert_same(arrays(path), arrays(reference))
    assert path.read_bytes() == reference.read_bytes()
    assert not parts_dir(path).exists()


# ---------------------------------------------------------------------------------------------- crashes


def run_child(path: Path, sleep: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CHILD), "fill", str(path), str(sleep), "0", "1"],
                            stdout=subprocess.DEVNULL)


def check_after_kill(path: Path, ref: dict) -> None:
    """An interrupted store is absent, refused as incomplete, or holds only whole splits equal to the reference."""
    try:
        got = arrays(path)
    except IncompleteStoreError:
        assert not path.exists()
        return
    except FileNotFoundError:  # killed before the writer created anything
        assert not path.exists() and not parts_dir(path).exists()
        return
    for split in got.keys() - {"attrs"}:
        assert_same({"attrs": got["attrs"], split: got[split]}, {"attrs": ref["attrs"], split: ref[split]})


def test_kill9_at_random_moments_then_resume(tmp_path: Path, reference: Path) -> None:
    ref = arrays(reference)
    start = time.monotonic()
    run_child(store_path(tmp_path, "timing"), 0.005).wait()
    wall = time.monotonic() - start  # the child's whole run: kills land anywhere in it, merges included
    rng = random.Random(1234)
    for attempt in range(5):
        path = store_path(tmp_path, f"kill{attempt}")
        for _ in range(1 + attempt % 2):  # odd attempts: killed twice, the second time while resuming
            child = run_child(path, 0.005)
            time.sleep(rng.uniform(0.1, wall))
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            check_after_kill(path, ref)
        assert run_child(path, 0.0).wait() == 0
        assert_same(arrays(path), ref)
        assert path.read_bytes() == reference.read_bytes()
        assert [p.name for p in path.parent.glob(f"{path.name}*")] == [path.name]  # no .parts, no .tmp-<pid>


# ---------------------------------------------------------------------------------------------- opening, listing


def test_open_store_errors_name_the_fix(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    with pytest.raises(FileNotFoundError, match="embedcache extract synth --model tiny"):
        open_store(path)
    with StoreWriter(path, ATTRS) as w:
        w.write_shard("train", 0, make_shard("train", 0))
        w.write_shard("train", 1, make_shard("train", 1))
    with pytest.raises(IncompleteStoreError, match="only 2 shards .* rerun `embedcache extract synth --model tiny`"):
        open_store(path)


def test_list_stores_reports_complete_and_in_progress(tmp_path: Path) -> None:
    done, pending = store_path(tmp_path, "tiny"), store_path(tmp_path, "other")
    fill(done, plan={"train": 3})
    with StoreWriter(pending, {**ATTRS, "backbone": "other"}) as w:
        w.write_shard("train", 0, make_shard("train", 0))
    summaries = {s.backbone: s for s in list_stores(tmp_path)}
    assert sorted(summaries) == ["other", "tiny"]
    a, b = summaries["tiny"], summaries["other"]
    rows = len(expected("train", 3)["ids"])
    assert a.complete and a.splits == {"train": rows} and a.dim == 8 and a.dtype == "float16" and a.tokens
    assert a.shards_pending == 0 and a.skipped == 1 and a.size_bytes == done.stat().st_size and a.dataset == "synth"
    assert not b.complete and b.shards_pending == 1 and b.splits == {} and b.size_bytes > 0
    assert a.fingerprint != b.fingerprint != ""
