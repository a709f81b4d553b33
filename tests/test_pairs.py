"""Mined caption pairs: per-image mining against brute force (the authors' make_positive_pairs), bounded top-k
across images, caching keyed by source fingerprint, threshold and scope."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _stage2_fixtures import SplitArrays, write_store

from embedcache.fusion.mining import (
    NoLinksError,
    ensure_pairs,
    load_pairs,
    mine_indices,
    mine_top_k,
    mine_within_groups,
)


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


def _store(path: Path, emb: np.ndarray, version: str = "1", links: list[str] | None = None) -> Path:
    attrs = {"backbone": "sent", "modality": "text", "dataset": "caps", "tokens": False, "dtype": "float32",
             "dataset_version": version}
    ids = [f"c{k}" for k in range(len(emb))]
    links = ["img0"] * len(emb) if links is None else links  # default: every caption of one image
    return write_store(path, attrs, {"train": SplitArrays(ids, emb.astype(np.float32), links=links)})


def _authors_pairs(emb: np.ndarray, groups: list[str], threshold: float) -> list[tuple[int, int]]:
    """The authors' loop (text_text/coco_dataset.py): per image, (c, c) and every i < j of its captions with
    cosine >= threshold in both orders."""
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    out = []
    for g in dict.fromkeys(groups):
        rows = [r for r, x in enumerate(groups) if x == g]
        for p, i in enumerate(rows):
            out.append((i, i))
            out += [pair for j in rows[p + 1:] if unit[i] @ unit[j] >= threshold for pair in ((i, j), (j, i))]
    return out


def test_pairs_are_mined_within_each_image_only() -> None:
    rng = np.random.default_rng(1)
    groups = [f"img{g}" for g in rng.integers(0, 12, 70)]  # 70 captions, 12 images, unsorted, uneven sizes
    emb = rng.standard_normal((70, 3)).astype(np.float32)
    i, j, cos = mine_within_groups(torch.from_numpy(emb), np.array(groups), 0.3)
    mined = set(zip(i.tolist(), j.tolist(), strict=True))
    authors = _authors_pairs(emb, groups, 0.3)
    assert mined == {(a, b) for a, b in authors if a < b}
    assert mined < _brute(emb, 0.3)  # strictly fewer than mining across the split: cross-image pairs dropped
    assert all(groups[a] == groups[b] for a, b in mined) and (cos >= 0.3).all()


def test_mining_scales_linearly_with_captions() -> None:
    # COCO-like shape: 5 captions per image. Comparisons are N * (G - 1), never N^2: 200k captions take ~1 s.
    n = 200_000
    emb = torch.randn(n, 8)
    groups = np.repeat(np.arange(n // 5), 5)
    i, j, _ = mine_within_groups(emb, groups, -1.0)  # threshold -1: every same-image pair
    assert len(i) == (n // 5) * 10 and (groups[i] == groups[j]).all()


def test_training_pairs_are_the_authors_list(tmp_path: Path) -> None:
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [1, 0.05], [0.1, 1]], np.float32)
    links = ["i0", "i0", "i0", "i1", "i1"]  # c3 is close to c0 but of another image: never paired with it
    mined = ensure_pairs(_store(tmp_path / "stores" / "caps" / "sent.h5", emb, links=links), "train", 0.9,
                         data_dir=tmp_path)
    a, b = mined.training_pairs()
    got = sorted(zip(a.tolist(), b.tolist(), strict=True))
    authors = [(f"c{x}", f"c{y}") for x, y in _authors_pairs(emb, links, 0.9)]
    assert got == sorted(authors) == sorted([("c0", "c0"), ("c1", "c1"), ("c2", "c2"), ("c3", "c3"), ("c4", "c4"),
                                              ("c0", "c1"), ("c1", "c0")])


def test_a_store_without_links_needs_the_explicit_cross_image_option(tmp_path: Path) -> None:
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1]], np.float32)
    path = write_store(tmp_path / "s.h5", {"backbone": "sent", "modality": "text", "dataset": "caps",
                                           "tokens": False, "dtype": "float32"},
                       {"train": SplitArrays(["c0", "c1", "c2"], emb)})
    with pytest.raises(NoLinksError, match="scope='topk'"):
        ensure_pairs(path, "train", 0.9, data_dir=tmp_path)
    with pytest.raises(ValueError, match="top_k"):
        ensure_pairs(path, "train", 0.9, scope="topk", data_dir=tmp_path)
    mined = ensure_pairs(path, "train", 0.9, scope="topk", top_k=1, data_dir=tmp_path)
    assert list(zip(mined.a, mined.b, strict=True)) == [("c0", "c1")] and mined.path.name.endswith("-top1.h5")


@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_mining_keeps_each_rows_k_nearest_above_threshold(k: int) -> None:
    emb = np.random.default_rng(2).standard_normal((50, 4)).astype(np.float32)
    i, j, cos = mine_top_k(torch.from_numpy(emb), 0.2, k, block=7)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -2)
    want = {(min(r, c), max(r, c)) for r in range(50) for c in np.argsort(-sims[r])[:k] if sims[r, c] >= 0.2}
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == want and len(i) == len(want) <= 50 * k
    assert np.allclose(cos, sims[i, j], atol=1e-5)


def test_pairs_are_cached_and_keyed_by_store_and_threshold(tmp_path: Path) -> None:
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 1], [-1, 0]], np.float32)
    store = _store(tmp_path / "stores" / "caps" / "sent.h5", emb)
    pairs = ensure_pairs(store, "train", 0.9, data_dir=tmp_path)
    assert sorted(zip(pairs.a, pairs.b, strict=True)) == [("c0", "c1"), ("c2", "c3")]
    assert pairs.path == tmp_path / "pairs" / "caps" / "sent-train-t0.900-image.h5"
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
