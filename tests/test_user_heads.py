"""Your own head in one file: `embedcache train my_heads.py:NAME` from a temporary directory trains it, a new
process evaluates the run (re-importing the file the run recorded), and a pipeline naming the file runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _stage2_fixtures import make_toy_stores
from typer.testing import CliRunner

from embedcache.cli import app
from embedcache.fusion.user_heads import forget_head_files
from embedcache.tables.runner import ColumnSpec, EvalSpec, PipelineSpec, RowSpec, RunSpec, dump_pipeline

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "my_heads.py"
REPO = EXAMPLE.parent.parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`embedcache ...` in a fresh process (nothing registered but the package's own heads)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "embedcache.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    make_toy_stores(tmp_path / "data", sizes={"train": 80, "val": 30, "test": 30})
    shutil.copy(EXAMPLE, tmp_path / "my_heads.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EMBEDCACHE_RESULTS_DIR", str(tmp_path / "results"))
    yield tmp_path
    forget_head_files()  # each test imports its own copy of the file


def test_a_head_from_a_user_file_trains_and_evaluates_through_the_cli(workdir):
    args = ["train", "my_heads.py:gated-mean", "--dataset", "toy", "-b", "image", "-b", "text-a", "--epochs", "3",
            "--batch-size", "16", "-o", "dim=24"]
    trained = CliRunner().invoke(app, args)
    assert trained.exit_code == 0, trained.output
    run_dir = next((workdir / "results" / "runs").iterdir())
    record = json.loads((run_dir / "run.json").read_text())
    assert record["head"]["name"] == "gated-mean" and record["head"]["options"] == [["dim", 24]]
    assert record["head_file"]["path"] == str(workdir / "my_heads.py") and len(record["head_file"]["sha256"]) == 64
    assert "val image_to_text_R@1" in " ".join(trained.output.split())

    evaluated = _cli(["eval", run_dir.name, "--task", "retrieval"], workdir)  # a new process: file re-imported
    assert evaluated.returncode == 0, evaluated.stderr
    r1 = json.loads((run_dir / "run.json").read_text())["metrics"]["retrieval"]["image_to_text_R@1"]
    assert 0.0 <= r1 <= 1.0


def test_a_pipeline_names_the_users_head_file(workdir):
    base = {"dataset": "toy", "backbones": ("image", "text-a")}
    spec = PipelineSpec(
        "mine", "my head against ConVIRT", seeds=(0,),
        runs=(RunSpec("mine", "my_heads.py:gated-mean", train={"pairing": "links", "epochs": 2},
                      evals=(EvalSpec("retrieval"),), **base),),
        columns=(ColumnSpec("R@1", "image_to_text_R@1", 100.0),), rows=(RowSpec("gated mean", "mine", "retrieval"),))
    (workdir / "pipes").mkdir()
    (workdir / "pipes" / "mine.toml").write_text(dump_pipeline(spec).replace("my_heads.py", "../my_heads.py"))
    done = _cli(["run", "pipes/mine.toml"], workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| gated mean | ours |" in (workdir / "results" / "mine.md").read_text()


def test_a_file_that_does_not_register_the_name_says_so(workdir):
    bad = CliRunner().invoke(app, ["train", "my_heads.py:gated-max", "--dataset", "toy", "-b", "image", "-b",
                                   "text-a"])
    assert bad.exit_code == 1 and "registers no head 'gated-max'" in bad.output and "gated-mean" in bad.output
