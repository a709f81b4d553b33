"""The one trainer path: one lookup from any trainable name, registrations that do not depend on import order,
run ids unchanged whichever way a run is trained (CLI, pipeline step, Python), and what `embedcache heads` shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _stage2_fixtures import make_toy_stores
from typer.testing import CliRunner

from embedcache.fingerprint import fingerprint
from embedcache.fusion.runs import make_run_id
from embedcache.fusion.trainers import DataSpec, RunOptions, TrainCfg, fit_run, trainable, trainer_for
from embedcache.paths import Paths
from embedcache.registry import UnknownNameError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = {"dim": 32, "ff_dim": 64}

FIRST_IMPORTS = ["embedcache.fusion.train", "embedcache.fusion.classify", "embedcache.fusion.late_fusion",
                 "embedcache.fusion.jobs", "embedcache.fusion.settings", "embedcache.fusion.pairings",
                 "embedcache.tables.steps", "embedcache.cli"]


@pytest.mark.parametrize("first", FIRST_IMPORTS)
def test_registrations_do_not_depend_on_what_was_imported_first(first: str) -> None:
    code = (f"import {first}\n"
            "from embedcache.fusion.settings import SETTINGS\n"
            "from embedcache.fusion.pairings import PAIRINGS\n"
            "found = ['shapes-classify' in SETTINGS, 'shapes-text-image' in SETTINGS, 'multi-links' in PAIRINGS]\n"
            "from embedcache.fusion.trainers import trainer_for\n"
            "names = ['cbmf-add', 'mlp-concat', 'clfa', 'late-min-loss', 'late-fusion', 'majority']\n"
            "print(found, [trainer_for(n).name for n in names])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[True, True, True] ['align', 'classify', 'classify', 'late-fusion', 'late-fusion', 'majority']"


def test_one_lookup_serves_every_trainable_name_and_lists_them_when_unknown() -> None:
    names = {name: trainer.name for name, trainer in trainable()}
    assert names["cbmf-add"] == "align" and names["mlp-concat"] == "classify"
    assert names["late-stacking"] == "late-fusion" and names["majority"] == "majority"
    assert all(trainer_for(n).name == t for n, t in names.items())
    with pytest.raises(UnknownNameError, match="unknown head 'cbmf-ad'; known: .*cbmf-add.*late-min-loss"):
        trainer_for("cbmf-ad")


def test_heads_shows_the_default_setting_the_code_uses() -> None:
    from embedcache.cli import app
    from embedcache.fusion.late_fusion import DEFAULT_SETTING

    result = CliRunner().invoke(app, ["heads"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 4}
    assert DEFAULT_SETTING == "shapes-text-image" and DEFAULT_SETTING in rows["late-min-loss"]
    assert "mvsa-single-late" not in rows["late-min-loss"] and "text-image" in rows["cbmf-add"]


def _old_alignment_key(record: dict) -> dict:
    """The run-id key exactly as the pre-`fit_run` `train.train` built it, from what its run recorded (plus the
    head's revision, which the paper-fidelity fixes added so runs of the old computation are never reused)."""
    from embedcache.fusion.heads import HEADS

    inputs = [[i["fingerprint"], i["tokens"], *(["streamed"] if i["streamed_window_bytes"] else [])]
              for i in record["inputs"]]
    revision = HEADS.get(record["head"]["name"]).revision
    return {"head": record["head"], "train": record["train"], "inputs": inputs,
            "pairs": [record["pairs"]["train"], record["pairs"]["val"]], "splits": ["train", "val"],
            **({"revision": revision} if revision else {})}


def test_cli_pipeline_and_python_train_the_same_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from embedcache.cli import app
    from embedcache.tables.spec import RunSpec
    from embedcache.tables.steps import StepContext, train_run

    toy = make_toy_stores(tmp_path / "data", sizes={"train": 60, "val": 20, "test": 20})
    monkeypatch.setenv("EMBEDCACHE_RESULTS_DIR", str(tmp_path / "cli"))
    args = ["train", "cbmf-add", "--dataset", "toy", "-b", "image", "-b", "text-a", "--epochs", "3", "-o", "dim=32",
            "-o", "ff_dim=64", "--data-dir", str(toy.data_dir)]
    assert (result := CliRunner().invoke(app, args)).exit_code == 0, result.output
    cli = json.loads(next((tmp_path / "cli" / "runs").glob("*/run.json")).read_text())
    spec = RunSpec("cbmf", "cbmf-add", dataset="toy", backbones=("image", "text-a"), train={"epochs": 3},
                   options=SMALL)
    piped = train_run(spec, 0, StepContext(Paths(toy.data_dir, tmp_path / "pipeline")))[""]
    direct = fit_run("cbmf-add", DataSpec(dataset="toy", backbones=("image", "text-a")), TrainCfg(epochs=3),
                     RunOptions(data_dir=toy.data_dir, runs_root=tmp_path / "python", progress=False), SMALL)[""]
    assert cli["run_id"] == piped.id == direct.id == make_run_id("cbmf-add", _old_alignment_key(cli))
    assert [h["val_loss"] for h in cli["history"]] == [h["val_loss"] for h in piped.record["history"]]
    assert cli["metrics"]["train"] == piped.metrics["train"] == direct.metrics["train"]


def test_classifier_late_fusion_and_floor_run_ids_keep_the_old_keys(tmp_path: Path) -> None:
    from test_heads_mlp import make_task_stores

    from embedcache.tables.spec import RunSpec
    from embedcache.tables.steps import StepContext, train_run

    make_task_stores(tmp_path, "single", shared_ids=True, sizes={"train": 30, "val": 12, "test": 12})
    data, cfg = DataSpec(dataset="task", backbones=("text", "image")), TrainCfg(epochs=2)
    run_opts = RunOptions(data_dir=tmp_path, runs_root=tmp_path / "runs", progress=False)
    run = fit_run("mlp-concat", data, cfg, run_opts)[""]
    rec = run.record
    key = {"head": rec["head"], "train": {**rec["train"], "drop_last": False},
           "inputs": [[i["fingerprint"], i["tokens"]] for i in rec["inputs"]],
           "data": {k: v for k, v in rec["data"].items() if k != "test"}, "test": "test"}
    assert run.id == make_run_id("mlp-concat", key) and fingerprint(key, 12) == run.id.rsplit("-", 1)[1]
    late = fit_run("late-average", data, cfg, run_opts)
    assert list(late) == ["late-average"]
    rec = late["late-average"].record
    assert rec["run_id"] == make_run_id("late-average", {"components": rec["components"], "options": rec["options"]})
    floor = train_run(RunSpec("floor", trainer="majority", dataset="task", backbones=("text",),
                              train={"test_split": "val"}), 0, StepContext(Paths(tmp_path, tmp_path / "res")))[""]
    opts = {"train_split": "train", "test_split": "val"}  # old: {"train_split": "train", "test_split": "test", **train}
    assert floor.id == make_run_id("majority", {"inputs": [i["fingerprint"] for i in floor.inputs], "options": opts})
    assert floor.record["data"]["test_rows"] == 12
