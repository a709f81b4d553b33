"""benchmarks/gpu_extract.py in its CPU smoke mode (tiny random models, 64 images): every phase runs through the
product and reports its figures, so the one GPU run it is written for works the first time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALWAYS = (  # whatever decode paths this embedcache has, the PIL path, tokens and text are measured
    "vit_load_s", "vit_model_only_img_s", "vit_e2e_cpu_decode_img_s", "vit_e2e_cpu_decode_over_model",
    "vit_tokens_model_only_img_s", "vit_tokens_e2e_img_s", "vit_tokens_e2e_over_model", "vit_tokens_store_mb",
    "vit_tokens_write_mb_s", "disk_write_mb_s", "bert_load_s", "bert_model_only_cap_s", "bert_e2e_cap_s",
    "bert_e2e_over_model", "data_write_s", "jpeg_mean_kb",
)


@pytest.mark.slow
def test_smoke_run_reports_every_figure_positive(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_extract.py"), "--device", "cpu", "--n", "64",
                           "--small", "--workdir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errors"] == {} and out["skipped"] == [], out
    assert set(ALWAYS) <= set(out), sorted(set(ALWAYS) - set(out))
    figures = {k: v for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert all(v >= 0 if k.endswith("_count") else v > 0 for k, v in figures.items()), figures
    assert out["n_images"] == 64 and out["n_captions"] == 5 * 64  # COCO layout: 5 captions per image
    assert out["vit_tokens_per_image"] == 101  # test_vit at 160 px: CLS + 10 x 10 patches, all stored
    if out["decode_option"] == "available":  # the tensor decode path, run on the CPU, against PIL
        assert out["cosine_gpu_vs_pil_below_0999_count"] >= 0 and out["vit_e2e_gpu_decode_img_s"] > 0
    assert out["goals"] and list(tmp_path.iterdir()) == []  # its work dir is removed
