"""The rehearsal (benchmarks/rehearsal.py) at a tiny scale: every paper pipeline end to end on stand-ins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from embedcache.backbones.stand_ins import build_tiny
from embedcache.datasets import stand_in_data
from embedcache.store import open_store
from embedcache.tables.plan import format_plan, plan_store

ROOT = Path(__file__).resolve().parents[1]


def test_stand_in_data_has_the_real_counts_scaled(tmp_path: Path) -> None:
    from embedcache.datasets import create_dataset

    stand_in_data.generate("coco", tmp_path / "coco", scale=0.001)
    ds = create_dataset("coco", root=tmp_path / "coco")
    train = ds.load_split("train")
    assert len(train.images) == round(82_783 * 0.001)
    assert len(train.texts) == 5 * len(train.images)  # 5 captions each (a few 6th ones are cut, as COCO's)
    assert len({it.text for it in train.texts}) > 0.9 * len(train.texts)  # varied, not one repeated caption
    assert len(ds.classes) == 80


def test_stand_in_stores_are_marked_and_refused_outside_the_rehearsal(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from embedcache.tables.spec import StoreSpec
    from embedcache.tables.steps import ensure_store

    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path / "elsewhere"))  # the plan reads the data dir it is given
    stand_in_data.generate("mrpc", tmp_path / "raw" / "mrpc", scale=0.002)
    weights = {"bert": build_tiny("bert", tmp_path / "w" / "bert")}
    st = StoreSpec("mrpc", "bert")  # its raw data under <data dir>/raw/mrpc
    planned = plan_store(st, tmp_path, weights)
    from embedcache.datasets import create_dataset

    texts = len(create_dataset("mrpc", root=tmp_path / "raw" / "mrpc").load_split("train").texts)
    assert planned.shape_from == "model" and planned.rows["train"] == texts < 100  # GLUE's train has 7,336 texts
    missing, _ = ensure_store(st, tmp_path, weights=weights, stand_ins=True)
    assert missing is None
    on_disk = planned.path.stat().st_size
    assert abs(planned.est_bytes - on_disk) <= max(0.1 * on_disk, 16 << 10), (planned.est_bytes, on_disk)
    done = plan_store(st, tmp_path, weights)  # an existing store is planned from itself: exact, no dataset read
    assert done.shape_from == "store" and done.rows == planned.rows and done.est_bytes == done.done_bytes == on_disk
    assert done.dim == planned.dim == 32 and not done.token_rows  # a pooled store
    with open_store(tmp_path / "stores" / "mrpc" / "bert.h5") as store:
        assert store.attrs["stand_in"] is True and store.attrs["model_id"].startswith("stand-in:")
    refused, _ = ensure_store(st, tmp_path, weights=weights)
    assert refused is not None and "stand-in" in refused.what
    from typer.testing import CliRunner

    from embedcache.cli import app

    listed = CliRunner().invoke(app, ["ls", "--data-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "mrpc/bert" in listed.output and "stand-in" in listed.output, listed.output


def test_plan_without_data_uses_the_published_counts(tmp_path: Path) -> None:
    from embedcache.tables.plan import PipelinePlan
    from embedcache.tables.spec import StoreSpec

    plan = plan_store(StoreSpec("coco", "vit", tokens=True), tmp_path)  # no data, no weights here
    assert plan.rows == {"train": 82_783, "val": 40_504} and plan.token_dim == 768
    assert sum(plan.token_rows.values()) == 197 * (82_783 + 40_504)
    assert 30 * 2**30 < plan.est_bytes < 40 * 2**30  # ViT-B/16 tokens of COCO 2014 in fp16: tens of GB
    token_bytes = sum(plan.token_rows.values()) * 768 * 2  # (tokens, 768) fp16: all but ~1% of the store
    assert token_bytes < plan.est_bytes < 1.01 * token_bytes
    text = format_plan(PipelinePlan("x", [plan], [], [], []))
    assert "34.9 GB" in text and f"~{plan.est_bytes / 2**30:.1f} GB fp16" in text  # the estimate, in GiB


@pytest.mark.slow
def test_rehearsal_runs_every_paper_pipeline(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rehearsal.py"), "--scale", "0.001",
                          "--steps", "2", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=1800)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    failed = [p for p in summary["pipelines"] if not p["ok"] or p["plan_misses"]]
    assert not failed, failed
    from embedcache.tables.runner import select_pipelines

    assert len(summary["pipelines"]) == len(select_pipelines(demo=False, directory=ROOT / "pipelines")) >= 12
    assert summary["rehearsal"] == "ok"
    table = (tmp_path / "results" / "cbmf-cifar10.md").read_text()
    assert "REHEARSAL: stand-in backbones" in table  # never mistaken for results
