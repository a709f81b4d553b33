"""Mined caption pairs: blocked mining against brute force, caching keyed by source fingerprint and threshold."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _stage2_fixtures import SplitArrays, write_store

from embedcache.fusion.mining import ensure_pairs, load_pairs, mine_indices


def _brute(emb: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit @ unit.T
    return {(i, j) for i in range(len(emb)) for j in range(i + 1, len(emb)) if sims[i, j] >= threshold}


@pytest.mark.parametrize("block", [1, 3, 7, None])
def test_blocked_mining_equals_brute_force(block: int | None) -> None:
    emb = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    i, j, cos = mine_indices(torch.from_numpy(emb), 0.6, block=block)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == _brute(emb, 0.6)
    assert 0 < len(i) < 40 * 39 // 2  # some pairs, not all: the comparison means something
    assert (i < j).all() and (cos >= 0.6).all()
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert np.allclose(cos, (unit[i] * unit[j]).sum(1), atol=1e-5)


def _store(path: Path, emb: np.ndarray, version: str = "1") -> Path:
    attrs = {"backbone": "sent", "modality": "text", "dataset": "caps", "tokens": False, "dtype": "float32",
             "dataset_version": version}
    ids = [f"c{k}" for k in range(len(emb))]
    return write_store(path, attrs, {"train": SplitArrays(ids, emb.astype(np.float32))})


def test_pairs_are_cached_and_keyed_by_store_and_threshold(tmp_path: Path) -> None:
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 1], [-1, 0]], np.float32)
    store = _store(tmp_path / "stores" / "caps" / "sent.h5", emb)
    pairs = ensure_pairs(store, "train", 0.9, data_dir=tmp_path)
    assert sorted(zip(pairs.a, pairs.b, strict=True)) == [("c0", "c1"), ("c2", "c3")]
    assert pairs.path == tmp_path / "pairs" / "caps" / "sent-train-t0.900.h5"
    stamp = os.stat(pairs.path).st_mtime_ns
    again = ensure_pairs(store, "train", 0.9, data_dir=tmp_path)
    assert os.stat(pairs.path).st_mtime_ns == stamp and again.fingerprint == pairs.fingerprint  # reused
    looser = ensure_pairs(store, "train", -0.5, data_dir=tmp_path)
    assert looser.path != pairs.path and len(looser) > len(pairs)
    a, b = pairs.symmetric()
    assert sorted(zip(a, b, strict=True)) == [("c0", "c1"), ("c1", "c0"), ("c2", "c3"), ("c3", "c2")]


def test_a_rebuilt_store_is_mined_again(tmp_path: Path) -> None:
    # A store's fingerprint covers what determines its contents (here the dataset version), not the bytes.
    path = tmp_path / "stores" / "caps" / "sent.h5"
    first = ensure_pairs(_store(path, np.array([[1, 0], [1, 0.05], [0, 1]])), "train", 0.9, data_dir=tmp_path)
    path.unlink()
    second = ensure_pairs(_store(path, np.array([[1, 0], [0, 1], [0, 1.0]]), "2"), "train", 0.9, data_dir=tmp_path)
    assert first.fingerprint != second.fingerprint
    assert list(zip(second.a, second.b, strict=True)) == [("c1", "c2")]
    assert load_pairs(second.path).attrs["source_fingerprint"] == second.attrs["source_fingerprint"]
