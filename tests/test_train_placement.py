"""How a training runs (embedcache.fusion.placement): bf16 autocast (it runs on the CPU too), recorded in the run
id only when set so every existing id stays; the stores on the device once or in host memory with copied
minibatches (the copy path runs on the CPU as well; pinning and the GPU's free memory need CUDA); torch.compile."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _stage2_fixtures import make_toy_stores

from embedcache.errors import BadInputError
from embedcache.fingerprint import to_plain
from embedcache.fusion.heads import HeadSpec, create_head
from embedcache.fusion.pairings import join
from embedcache.fusion.placement import data_bytes, fits, loss_fn, pad_to_longest, place
from embedcache.fusion.train import fit
from embedcache.fusion.trainers import DataSpec, RunOptions, TrainCfg, fit_run
from embedcache.fusion.views import PairData, view_from_arrays

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = {"dim": 32, "ff_dim": 64}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pinned copies, device memory)")


def token_pairs(n: int, seed: int = 0) -> PairData:
    g = np.random.default_rng(seed)
    ids = [str(i) for i in range(n)]
    z = g.standard_normal((n, 8)).astype(np.float32)
    img = view_from_arrays(ids, z @ g.standard_normal((8, 12)).astype(np.float32),
                           tokens=[g.standard_normal((5, 12)).astype(np.float32) for _ in range(n)])
    txt = view_from_arrays(ids, z @ g.standard_normal((8, 10)).astype(np.float32),
                           tokens=[g.standard_normal((int(k), 10)).astype(np.float32) for k in g.integers(2, 7, n)])
    return join([img, txt], "ids")


def test_precision_enters_the_settings_only_when_not_the_default() -> None:
    assert "precision" not in to_plain(TrainCfg())
    assert to_plain(TrainCfg(precision="bf16"))["precision"] == "bf16"
    with pytest.raises(BadInputError, match="unknown precision 'fp16'; known: bf16, fp32"):
        TrainCfg(precision="fp16")


def test_bf16_runs_on_the_cpu_and_follows_fp32(tmp_path: Path) -> None:
    data, val = token_pairs(96), token_pairs(32, 1)
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        head = create_head(HeadSpec.create("cbmf-add", (12, 10), ("image", "text"), **SMALL))
        result = fit(head, data, val, TrainCfg(epochs=2, batch_size=16, precision=precision))
        losses[precision] = [h["train_loss"] for h in result.history]
        assert all(math.isfinite(v) for v in losses[precision])
    assert losses["bf16"] != losses["fp32"]  # autocast did run
    assert np.allclose(losses["bf16"], losses["fp32"], rtol=0.05), losses


def test_a_bf16_run_has_its_own_id_and_fp32_keeps_the_old_one(tmp_path: Path) -> None:
    toy = make_toy_stores(tmp_path / "data", sizes={"train": 40, "val": 12})
    data = DataSpec(dataset="toy", backbones=("image", "text-a"))
    run = RunOptions(data_dir=toy.data_dir, runs_root=tmp_path / "runs", progress=False)
    fp32 = fit_run("cbmf-add", data, TrainCfg(epochs=1), run, SMALL)[""]
    bf16 = fit_run("cbmf-add", data, TrainCfg(epochs=1, precision="bf16"), run, SMALL)[""]
    assert fp32.id != bf16.id
    assert "precision" not in json.loads((fp32.dir / "run.json").read_text())["train"]
    assert json.loads((bf16.dir / "run.json").read_text())["train"]["precision"] == "bf16"
    same = fit_run("cbmf-add", data, TrainCfg(epochs=1, precision="fp32"), run, SMALL)[""]
    assert same.id == fp32.id  # fp32 spelled out is the default: the same run, found


def test_copied_minibatches_equal_gathered_ones() -> None:
    """The host-memory path (gather in the stored fp16, copy, cast on the device) gives the same batch; on the CPU
    the copy is a no-op, so only pinning and non_blocking are left to the CUDA test."""
    data = token_pairs(40)
    idx = torch.tensor([3, 1, 7, 20, 5])
    plain = data.batch(idx)
    data.batch_device = torch.device("cpu")
    copied = data.batch(idx)
    assert torch.equal(copied.keys, plain.keys)
    for (a, ma), (b, mb) in zip(plain.inputs, copied.inputs, strict=True):
        assert b.dtype == torch.float32 and torch.equal(a, b)
        assert (ma is None and mb is None) or torch.equal(ma, mb)
    assert data.subset(idx).batch_device == data.batch_device


def test_stores_fit_a_share_of_the_free_memory_and_placement_names_are_checked() -> None:
    data = token_pairs(10)
    need = data_bytes(data, data)
    assert need == data_bytes(data)  # shared views counted once
    assert fits(need, int(need / 0.7) + 1) and not fits(need, need)
    assert place(data, data, torch.device("cpu"), "host") == ""  # the CPU: nothing to copy
    with pytest.raises(BadInputError, match="unknown stores placement 'gpu'; known: auto, device, host"):
        place(data, data, torch.device("cpu"), "gpu")


@CUDA
def test_stores_go_to_the_gpu_once_when_they_fit() -> None:
    data, val = token_pairs(64), token_pairs(16, 1)
    assert place(data, val, torch.device("cuda"), "auto") == ""
    assert data.views[0].tokens.is_cuda and data.batch_device is None
    head = create_head(HeadSpec.create("cbmf-add", (12, 10), ("image", "text"), **SMALL)).cuda()
    assert math.isfinite(fit(head, data, val, TrainCfg(epochs=1, batch_size=16, precision="bf16")).best_val_loss)


@CUDA
def test_stores_too_large_for_the_gpu_stay_on_the_host_with_a_note() -> None:
    data, val = token_pairs(64), token_pairs(16, 1)
    note = place(data, val, torch.device("cuda"), "auto", free=1)
    assert "kept in host memory" in note and data.batch_device == torch.device("cuda")
    assert not data.views[0].tokens.is_cuda
    batch = data.batch(torch.arange(8))
    assert all(x.is_cuda and x.dtype == torch.float32 for x, _ in batch.inputs) and batch.keys.is_cuda
    head = create_head(HeadSpec.create("cbmf-add", (12, 10), ("image", "text"), **SMALL)).cuda()
    assert math.isfinite(fit(head, data, val, TrainCfg(epochs=1, batch_size=16)).best_val_loss)


@pytest.mark.slow
def test_compiled_loss_computes_the_eager_loss() -> None:
    """torch.compile of the head's loss (CPU inductor here; tens of seconds to compile, hence slow)."""
    data = token_pairs(32)
    torch.manual_seed(0)
    head = create_head(HeadSpec.create("cbmf-add", (12, 10), ("image", "text"), dropout=0.0, **SMALL))
    batch = data.batch(torch.arange(16))
    torch.testing.assert_close(loss_fn(head, compile=True)(batch), head.loss(batch), atol=1e-5, rtol=1e-5)


def test_padding_ragged_rows_to_the_longest_computes_the_same_loss() -> None:
    """On a GPU ragged captions pad to the store's longest row (no per-batch read of the longest): masked
    everywhere, so the loss is the same as padding to the batch's longest."""
    data = token_pairs(48)
    torch.manual_seed(0)
    head = create_head(HeadSpec.create("cbmf-add", (12, 10), ("image", "text"), dropout=0.0, **SMALL)).eval()
    idx = torch.arange(0, 48, 5)
    before = head.loss(data.batch(idx))
    pad_to_longest(data, slack=2.0)
    assert (data.views[0].pad_to, data.views[1].pad_to) == (5, 6)  # 5 image tokens; captions of 2-6
    batch = data.batch(idx)
    assert batch.inputs[1][0].shape[1] == 6
    torch.testing.assert_close(head.loss(batch), before, atol=1e-6, rtol=1e-6)
    pad_to_longest(data, slack=1.0)  # a longest row far above the mean: no fixed padding
    assert data.views[1].pad_to is None
