"""Stores -> in-RAM views: exact contents, ragged gather, joins by id (never by position), batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _stage2_fixtures import SplitArrays, make_toy_stores, write_store

from embedcache.fusion import views
from embedcache.fusion.pairings import PairingError, join
from embedcache.fusion.views import gather_two, load_view, view_from_arrays


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
    from embedcache.store import open_store

    v = load_view(toy.paths["text-a"], "train", tokens=True)
    rows = torch.tensor([5, 0, 3])
    x, mask = v.gather(rows)
    lengths = (v.offsets[rows + 1] - v.offsets[rows]).tolist()
    assert x.dtype == torch.float32 and x.shape == (3, max(lengths), v.dim)
    assert mask.sum(dim=1).tolist() == lengths
    assert mask[:, 0].all()  # every row starts with a real token
    with open_store(toy.paths["text-a"]) as s:  # each row's own tokens, in order, then the padding
        want = [torch.from_numpy(s.split("train").tokens(int(r))) for r in rows]
    assert [len(t) for t in want] == lengths and len(set(lengths)) > 1  # really ragged
    for k, t in enumerate(want):
        assert torch.equal(x[k, : len(t)], t) and not mask[k, len(t) :].any()


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


def _bytes(view) -> int:
    return view.stream.nbytes() if view.stream is not None else int(view.tokens.numel()) * 2


def test_tokens_larger_than_the_budget_are_streamed_in_contiguous_blocks(toy) -> None:
    whole = load_view(toy.paths["text-a"], "train", tokens=True)
    streamed = load_view(toy.paths["text-a"], "train", tokens=True, ram_budget=_bytes(whole) // 3)
    assert streamed.stream is not None and streamed.tokens is None and whole.stream is None
    assert streamed.uses_tokens and streamed.dim == whole.dim and len(streamed) == len(whole)
    blocks = streamed.blocks()
    assert len(blocks) >= 5 and blocks[0][0] == 0 and blocks[-1][1] == len(whole)
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))  # contiguous, no gap or overlap
    longest = max(streamed.stream.nbytes(r, r + 1) for r in range(len(whole)))
    assert all(streamed.stream.nbytes(lo, hi) <= streamed.stream.window_bytes + longest for lo, hi in blocks)
    seen = []
    for rows in streamed.in_order(7):
        x, mask = streamed.gather(rows)
        want_x, want_mask = whole.gather(rows)
        assert torch.equal(mask, want_mask) and torch.equal(x[mask], want_x[want_mask])  # pads are never read
        seen += rows.tolist()
    assert seen == list(range(len(whole)))
    assert streamed.stream.reads == len(blocks)  # one read per block
    assert streamed.stream.bytes_read == _bytes(whole)  # each token row read exactly once


def test_a_streamed_view_refuses_rows_outside_its_block(toy) -> None:
    whole = load_view(toy.paths["image"], "train", tokens=True)
    v = load_view(toy.paths["image"], "train", tokens=True, ram_budget=_bytes(whole) // 4)
    v.hold(0, 5)
    x, mask = v.gather(torch.tensor([4, 0]))
    assert mask is None and torch.equal(x, whole.gather(torch.tensor([4, 0]))[0])  # fixed length: (n, L, D)
    with pytest.raises(views.StreamError, match="PairData.epoch"):
        v.gather(torch.tensor([5]))
    with pytest.raises(views.StreamError, match="--pooled"):
        gather_two(v, v)


def test_the_default_budget_is_a_share_of_the_free_ram(toy, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_view(toy.paths["text-a"], "train", tokens=True).stream is None
    monkeypatch.setattr(views, "RAM_FRACTION", 1e-12)
    assert load_view(toy.paths["text-a"], "train", tokens=True).stream is not None


def _epoch_rows(data, gen) -> tuple[list[int], list[tuple[torch.Tensor, object]]]:
    rows, batches = [], []
    for idx in data.epoch(8, gen):
        batches.append((idx, data.batch(idx)))  # batch() raises if a row is not in the block held
        rows += idx.tolist()
    return rows, batches


def test_streamed_epochs_visit_every_pair_once_in_shuffled_blocks(toy) -> None:
    whole = join([load_view(toy.paths["image"], "train", tokens=True),
                  load_view(toy.paths["text-a"], "train", tokens=True)], "links")
    budget = int(0.9 * min(_bytes(v) for v in whole.views))  # both streamed, in a few blocks each
    data = join([load_view(toy.paths["image"], "train", tokens=True, ram_budget=budget),
                 load_view(toy.paths["text-a"], "train", tokens=True, ram_budget=budget)], "links")
    assert data.views[0].stream is not None and data.views[1].stream is not None
    gen = torch.Generator().manual_seed(0)
    first, batches = _epoch_rows(data, gen)
    second, _ = _epoch_rows(data, gen)
    assert sorted(first) == list(range(len(data))) == sorted(second)  # every pair once per epoch
    assert first != second and first != sorted(first)  # shuffled, differently each epoch
    for idx, batch in batches:
        want = whole.batch(idx)
        for (x, mask), (wx, wmask) in zip(batch.inputs, want.inputs, strict=True):
            if mask is None:  # fixed-length image tokens
                assert wmask is None and torch.equal(x, wx)
            else:
                assert torch.equal(mask, wmask) and torch.equal(x[mask], wx[wmask])
    epoch = data.epoch(8, gen)
    streams = [v.stream for v in data.views]
    before = [s.reads for s in streams]
    assert sum(1 for _ in epoch) == len(epoch)
    lead = max(streams, key=lambda s: s.nbytes())
    assert len(epoch.blocks) <= lead.nbytes() / lead.window_bytes + 2  # blocks of about a window each
    for s, n in zip(streams, before, strict=True):
        assert s.reads - n <= len(epoch.blocks) < len(epoch) / 2  # at most one read per block, not per batch
    ordered, _ = _epoch_rows(data, None)
    assert sorted(ordered) == list(range(len(data)))
    kept = data.epoch(8, gen, drop_last=True)  # streamed blocks end ragged every time: nothing is dropped
    sizes = [len(idx) for idx in kept]
    assert sum(sizes) == len(data) and max(sizes) < 12


def test_block_batches_drop_nothing_and_stay_near_the_batch_size() -> None:
    for n, want in ((187, [64, 64, 59]), (130, [64, 66]), (10, [10]), (64, [64]), (95, [95]), (96, [64, 32])):
        assert [len(b) for b in views._block_slices(torch.arange(n), 64)] == want


def test_stores_in_unmatched_order_cannot_be_streamed_together(toy, tmp_path: Path) -> None:
    from embedcache.store import open_store

    with open_store(toy.paths["text-a"]) as store:
        s = store.split("train")
        ids, pooled = list(s.ids), s.pooled()
        tokens = [s.tokens(r) for r in range(len(s))]
    perm = np.random.default_rng(0).permutation(len(ids))
    shuffled = write_store(tmp_path / "b.h5", _attrs("b", "text", tokens=True), {"train": SplitArrays(
        [ids[i] for i in perm], pooled[perm], [tokens[i] for i in perm])})
    a = load_view(toy.paths["text-a"], "train", tokens=True, ram_budget=20_000)
    b = load_view(shuffled, "train", tokens=True, ram_budget=20_000)
    assert a.stream is not None and b.stream is not None
    with pytest.raises(views.StreamError, match="not in matching order"):
        join([a, b], "ids").epoch(8, torch.Generator().manual_seed(0))
    b_same = load_view(toy.paths["text-a"], "train", tokens=True, ram_budget=20_000)
    rows, _ = _epoch_rows(join([a, b_same], "ids"), torch.Generator().manual_seed(0))  # same order: fine
    assert sorted(rows) == list(range(len(a)))


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


def test_gather_two_reads_each_view_in_place() -> None:
    a = view_from_arrays(["a"], np.zeros((1, 2), np.float32), tokens=[np.ones((2, 2), np.float32)])
    b = view_from_arrays(["b", "c"], np.zeros((2, 2), np.float32),
                         tokens=[np.full((3, 2), 2.0, np.float32), np.full((1, 2), 3.0, np.float32)])
    gather = gather_two(a, b)
    x, mask = gather(torch.tensor([1, 2]))  # b's rows 0 and 1
    assert mask.sum(dim=1).tolist() == [3, 1] and x[0, :3].eq(2.0).all() and x[1, 0].eq(3.0).all()
    x, mask = gather(torch.tensor([0]))
    assert mask.sum().item() == 2 and x[0].eq(1.0).all()
    with pytest.raises(ValueError, match="mixes rows"):
        gather(torch.tensor([0, 1]))


@pytest.mark.parametrize("streamed", [False, True])
def test_in_order_by_length_visits_each_row_once_sorted_within_blocks(toy, streamed: bool) -> None:
    whole = load_view(toy.paths["text-a"], "train", tokens=True)
    view = load_view(toy.paths["text-a"], "train", tokens=True, ram_budget=_bytes(whole) // 3 if streamed else None)
    lengths = (whole.offsets[1:] - whole.offsets[:-1]).tolist()
    seen, blocks = [], view.blocks()
    for rows in view.in_order(5, by_length=True):
        x, mask = view.gather(rows)
        want_x, want_mask = whole.gather(rows)
        assert torch.equal(x[mask], want_x[want_mask])  # the right rows' tokens, whatever the order
        seen += rows.tolist()
    assert sorted(seen) == list(range(len(whole))) and seen != list(range(len(whole)))
    for lo, hi in blocks:  # each block's rows come sorted by token count
        inside = [r for r in seen if lo <= r < hi]
        assert [lengths[r] for r in inside] == sorted(lengths[r] for r in inside)


def test_max_tokens_in_ram_and_streamed(toy) -> None:
    whole = load_view(toy.paths["text-a"], "train", tokens=True)
    streamed = load_view(toy.paths["text-a"], "train", tokens=True, ram_budget=_bytes(whole) // 3)
    longest = int((whole.offsets[1:] - whole.offsets[:-1]).max())
    assert whole.max_tokens() == streamed.max_tokens() == longest > 1
    assert load_view(toy.paths["text-a"], "train", tokens=False).max_tokens() == 1


@pytest.mark.parametrize("streamed", [False, True])
def test_in_order_only_some_rows_visits_those_and_reads_only_their_blocks(toy, streamed: bool) -> None:
    whole = load_view(toy.paths["text-a"], "train", tokens=True)
    view = load_view(toy.paths["text-a"], "train", tokens=True, ram_budget=_bytes(whole) // 3 if streamed else None)
    only = torch.tensor([0, 1, 2, 3])  # all in the first block
    seen = [r for rows in view.in_order(3, by_length=True, only=only) for r in rows.tolist()]
    assert sorted(seen) == [0, 1, 2, 3]
    if streamed:
        assert view.stream.reads == 1  # the blocks holding none of the rows are never read
