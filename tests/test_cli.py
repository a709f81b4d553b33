"""The `embedcache` command end to end, in-process (typer's CliRunner) on a tiny generated dataset."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from embedcache.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_data_dir_env(tmp_path, monkeypatch):
    """Every command's default data dir ($EMBEDCACHE_DATA_DIR) inside the test's tmp dir; --data-dir overrides it."""
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path))


def test_extract_ls_info_and_a_rerun_that_does_nothing(tmp_path):
    args = ["extract", "shapes", "--model", "minilm", "-o", "size=20", "--data-dir", str(tmp_path)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "extracted" in first.output and "nothing to do" not in first.output
    assert "Loading weights" not in first.output  # transformers' own tqdm bar is silenced
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "nothing to do" in again.output
    listed = runner.invoke(app, ["ls", "--data-dir", str(tmp_path)])
    assert "shapes/minilm" in listed.output and "complete" in listed.output
    assert listed.exit_code == 0, listed.output
    info = runner.invoke(app, ["info", "shapes/minilm", "--data-dir", str(tmp_path)])
    assert info.exit_code == 0 and "all-MiniLM-L6-v2" in info.output and "fingerprint" in info.output


def test_user_errors_are_one_message_with_the_fix(tmp_path):
    missing = runner.invoke(app, ["extract", "coco", "--model", "minilm", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 1
    assert "not found" in missing.output and "embedcache download coco" in missing.output
    unknown = runner.invoke(app, ["extract", "shapes", "--model", "minlm", "--data-dir", str(tmp_path)])
    assert unknown.exit_code == 1 and "known:" in unknown.output and "minilm" in unknown.output
    no_stores = runner.invoke(app, ["train", "cbmf-add", "--data-dir", str(tmp_path)])
    assert no_stores.exit_code == 1 and "embedcache extract shapes --model effnet-lite0" in no_stores.output


def test_train_streams_token_stores_above_the_ram_budget_and_says_so(tmp_path, monkeypatch):
    from _stage2_fixtures import make_toy_stores

    make_toy_stores(tmp_path, sizes={"train": 60, "val": 20}, tokens=True)
    monkeypatch.setenv("EMBEDCACHE_RESULTS_DIR", str(tmp_path / "results"))
    args = ["train", "cbmf-add", "--dataset", "toy", "-b", "image", "-b", "text-a", "--tokens", "--epochs", "1",
            "--batch-size", "16", "-o", "dim=32", "-o", "ff_dim=64", "--ram-budget", "0.00002", "--data-dir",
            str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "tokens larger than the RAM budget" in said and "streamed in blocks of ~10.5 KiB" in said
    run_id = next((tmp_path / "results" / "runs").iterdir()).name
    finetune = runner.invoke(app, ["eval", run_id, "--task", "finetune", "-o", "split=val", "--ram-budget", "0.00002",
                                   "--data-dir", str(tmp_path)])  # reads rows in any order: refused, with why
    assert finetune.exit_code == 1 and "streamed" in finetune.output and "--pooled" in finetune.output


def test_eval_without_a_test_split_uses_val_and_says_so(tmp_path, monkeypatch):
    # COCO and any train/val-only layout: `eval` used to ask for a `test` split that is not there.
    import json

    from _stage2_fixtures import make_toy_stores

    make_toy_stores(tmp_path, sizes={"train": 60, "val": 20})
    monkeypatch.setenv("EMBEDCACHE_RESULTS_DIR", str(tmp_path / "results"))
    trained = runner.invoke(app, ["train", "cbmf-add", "--dataset", "toy", "-b", "image", "-b", "text-a", "--epochs",
                                  "1", "--batch-size", "16", "-o", "dim=32", "-o", "ff_dim=64", "--data-dir",
                                  str(tmp_path)])
    assert trained.exit_code == 0, trained.output
    run_dir = next((tmp_path / "results" / "runs").iterdir())
    result = runner.invoke(app, ["eval", run_dir.name, "--task", "retrieval", "-o", "hit_ks=[5]", "--data-dir",
                                 str(tmp_path)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "no split given: 'val' (the stores have no test split)" in said and "(split 'val')" in said
    recorded = json.loads((run_dir / "run.json").read_text())["evals"]["retrieval"]
    assert recorded["split"] == "val" and "no test split" in recorded["split_chosen"]


def test_run_plan_shows_the_papers_scale_without_data_and_builds_nothing(tmp_path):
    out = runner.invoke(app, ["run", "cbmf-qqp", "--plan", "--data-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert f"qqp/bert: rows train {2 * 363_846:,}, dev {2 * 40_430:,}" in out.output  # GLUE's pairs, 2 texts each
    assert "published counts" in out.output and "'threshold_pairs': 40000" in out.output
    assert not (tmp_path / "stores").exists()  # a plan extracts nothing
