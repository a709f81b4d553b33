"""Stores -> in-RAM views: exact contents, ragged gather, joins by id (never by position), batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _stage2_fixtures import SplitArrays, make_toy_stores, write_store

from embedcache import views
from embedcache.views import PairingError, concat_views, join, load_view, view_from_arrays


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory):
    return make_toy_stores(tmp_path_factory.mktemp("views"), sizes={"train": 40, "test": 10}, tokens=True)


def _attrs(backbone: str, modality: str, tokens: bool = False) -> dict:
    return {"backbone": backbone, "modality": modality, "dataset": "mini", "tokens": tokens, "dtype": "float32"}


def test_view_holds_the_store_exactly(toy) -> None:
    from embedcache.store import open_store

    v = load_view(toy.paths["text-a"], "train", tokens=True)
    with open_store(toy.paths["text-a"]) as s:
        split = s.split("train")
        assert list(v.ids) == list(split.ids)
        assert torch.equal(v.pooled, torch.from_numpy(split.pooled()))
        assert list(v.links) == list(split.links)
        for row in (0, 7, len(v) - 1):
            x, mask = v.gather(torch.tensor([row]))
            n = int(mask.sum())
            assert torch.equal(x[0, :n], torch.from_numpy(split.tokens(row)))
    assert v.pairs is not None and len(v.pairs[0]) == 300
    assert v.attrs["backbone"] == "text-a" and len(v.fingerprint) == 16


def test_ragged_gather_pads_and_masks(toy) -> None:
    v = load_view(toy.paths["text-a"], "train", tokens=True)
    rows = torch.tensor([5, 0, 3])
    x, mask = v.gather(rows)
    lengths = (v.offsets[rows + 1] - v.offsets[rows]).tolist()
    assert x.dtype == torch.float32 and x.shape == (3, max(lengths), v.dim)
    assert mask.sum(dim=1).tolist() == lengths
    assert mask[:, 0].all()  # every row starts with a real token


def test_fixed_length_tokens_need_no_mask(toy) -> None:
    v = load_view(toy.paths["image"], "train", tokens=True)
    x, mask = v.gather(torch.tensor([1, 2]))
    assert mask is None and x.shape == (2, 4, v.dim)
    pooled_only = load_view(toy.paths["image"], "train")
    x, mask = pooled_only.gather(torch.tensor([1, 2]))
    assert mask is None and x.shape == (2, 1, pooled_only.dim) and not pooled_only.uses_tokens


def test_tokens_auto_and_missing(toy, tmp_path: Path) -> None:
    assert load_view(toy.paths["image"], "test", tokens=None).uses_tokens
    path = write_store(tmp_path / "p.h5", _attrs("b", "text"), {"s": SplitArrays(["a"], np.ones((1, 3), np.float32))})
    assert not load_view(path, "s", tokens=None).uses_tokens
    with pytest.raises(ValueError, match="--tokens --force"):
        load_view(path, "s", tokens=True)


def test_tokens_too_large_for_ram_are_refused_with_a_way_out(toy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "RAM_FRACTION", 1e-12)
    with pytest.raises(MemoryError, match="--pooled"):
        load_view(toy.paths["text-a"], "train", tokens=True)


def test_links_join_by_id_not_by_row_position(tmp_path: Path) -> None:
    # The image store lists its images in the reverse order of the captions' links.
    images = write_store(tmp_path / "img.h5", _attrs("img", "image"), {"s": SplitArrays(
        ["i2", "i1", "i0"], np.array([[2.0], [1.0], [0.0]], np.float32))})
    texts = write_store(tmp_path / "txt.h5", _attrs("txt", "text"), {"s": SplitArrays(
        ["c0", "c1", "c2", "c3", "c9"], np.array([[0.0], [0.0], [1.0], [2.0], [9.0]], np.float32),
        links=["i0", "i0", "i1", "i2", "i9"])})
    data = join([load_view(images, "s"), load_view(texts, "s")], "links")
    assert len(data) == 4 and data.dropped == 1  # c9 links to an image that is not there
    batch = data.batch(torch.arange(4))
    img, txt = batch.inputs[0][0][:, 0, 0], batch.inputs[1][0][:, 0, 0]
    assert torch.equal(img, txt)  # each caption met its own image's value
    assert batch.keys[:, 0].tolist() == [2, 2, 1, 0]  # the image row is the key: captions of i0 share it


def test_ids_and_table_pairings() -> None:
    a = view_from_arrays(["x", "y", "z"], np.eye(3, dtype=np.float32))
    b = view_from_arrays(["z", "x"], np.eye(2, dtype=np.float32))
    data = join([a, b], "ids")
    assert data.rows.tolist() == [[0, 1], [2, 0]] and data.dropped == 1
    data = join([a, b], "table", a_ids=["y", "x", "q"], b_ids=["z", "z", "x"])
    assert data.rows.tolist() == [[1, 0], [0, 0]] and data.dropped == 1
    with pytest.raises(PairingError, match="no items shared"):
        join([a, view_from_arrays(["w"], np.ones((1, 2), np.float32))], "ids")
    with pytest.raises(PairingError, match="exactly one store without links"):
        join([a, b], "links")


def test_batches_carry_labels_and_subsets_keep_views() -> None:
    a = view_from_arrays(["x", "y", "z"], np.arange(6, dtype=np.float32).reshape(3, 2))
    data = join([a], "ids")
    data.labels = torch.tensor([7, 8, 9])
    sub = data.subset(torch.tensor([2, 0]))
    batch = sub.batch(torch.tensor([0]))
    assert batch.labels.tolist() == [9] and batch.inputs[0][0][0, 0].tolist() == [4.0, 5.0]


def test_concat_views_keeps_ragged_rows() -> None:
    a = view_from_arrays(["a"], np.zeros((1, 2), np.float32), tokens=[np.ones((2, 2), np.float32)])
    b = view_from_arrays(["b", "c"], np.zeros((2, 2), np.float32),
                         tokens=[np.full((3, 2), 2.0, np.float32), np.full((1, 2), 3.0, np.float32)])
    both = concat_views(a, b)
    x, mask = both.gather(torch.tensor([0, 1, 2]))
    assert mask.sum(dim=1).tolist() == [2, 3, 1]
    assert x[1, :3].eq(2.0).all() and x[2, 0].eq(3.0).all() and list(both.ids) == ["a", "b", "c"]
