"""benchmarks/bench_train_gpu.py in its tiny mode on the CPU: the COCO stand-in's layout, the stock/new step
comparison, one epoch through `fit`, re-encoding and the speedups come out as one JSON line; `make bench` runs it
only where CUDA is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_the_stand_in_is_coco_shaped_pairs_of_images_and_ragged_captions() -> None:
    from bench_train_gpu import TINY, Shape, coco_standin

    assert Shape().pairs == 413_915  # COCO 2014 train: 82,783 images x 5 captions
    data = coco_standin(TINY, "cpu")
    image, text = data.views
    assert len(data) == TINY.pairs and image.tokens.shape == (TINY.images, TINY.image_tokens, TINY.dim)
    assert image.tokens.dtype == text.tokens.dtype == torch.float16
    lengths = text.offsets[1:] - text.offsets[:-1]
    assert lengths.min() >= TINY.text_tokens[0] and lengths.max() <= TINY.text_tokens[1]
    assert torch.equal(data.rows[:, 0], torch.arange(TINY.pairs) // TINY.captions)  # each caption's image
    assert text.pad_to == int(lengths.max())


def test_make_bench_runs_the_gpu_benchmark_only_with_cuda() -> None:
    from run_all import scripts

    assert "train_gpu" in scripts(True) and "train_gpu" not in scripts(False)


@pytest.mark.slow
def test_tiny_run_prints_the_figures() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train_gpu.py"), "--tiny", "--device", "cpu",
                          "--threads", "1", "--repeats", "1"], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["pairs"] == 96 and res["b8_epoch_steps"] == 12 and 0 < res["b8_epoch_steps_timed"] <= 12
    assert res["epoch_s"] == res["b8_epoch_s"] > 0 and res["stock_step_s"] > 0 and res["new_step_s"] > 0
    assert res["arith_speedup_tokens"] > 1 and res["b8_cache_speedup_tokens"] > 1
    assert res["b8_speedup_vs_bound"] == pytest.approx(res["b8_cache_speedup_tokens"] / res["arith_speedup_tokens"],
                                                       abs=0.01)
    assert "stock layer, batch 8" in out.stdout and "new, batch 8" in out.stdout
