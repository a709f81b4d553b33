"""`embedcache train ... --log tensorboard`: per-epoch scalars and final metrics as TensorBoard events."""

from __future__ import annotations

import pytest
from _stage2_fixtures import make_toy_stores
from typer.testing import CliRunner

from embedcache.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_train_logs_epochs_and_final_metrics_to_tensorboard(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install "
                                              "'embedcache[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    make_toy_stores(tmp_path, sizes={"train": 60, "val": 20})
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EMBEDCACHE_RESULTS_DIR", str(tmp_path / "results"))
    args = ["train", "convirt-frozen", "--dataset", "toy", "-b", "image", "-b", "text-a", "--epochs", "3",
            "--batch-size", "16", "--log", "tensorboard", "--log-dir", str(tmp_path / "tb")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "tb").iterdir())
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"epoch/train_loss", "epoch/val_loss", "epoch/lr", "epoch/logit_scale"} <= set(tags)
    assert [e.step for e in events.Scalars("epoch/val_loss")] == [1, 2, 3]
    assert "final/train/best_val_loss" in tags and "final/val-headline/val image_to_text_R@1" in tags


def test_unknown_logger_lists_the_known_ones(tmp_path, monkeypatch):
    make_toy_stores(tmp_path, sizes={"train": 40, "val": 20})
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path))  # --data-dir sets it for the process: restore after
    monkeypatch.setenv("EMBEDCACHE_RESULTS_DIR", str(tmp_path / "results"))
    args = ["train", "convirt-frozen", "--dataset", "toy", "-b", "image", "-b", "text-a", "--epochs", "1",
            "--log", "wandb", "--data-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "unknown experiment logger 'wandb'; known: tensorboard" in result.output
    assert not (tmp_path / "results" / "runs").exists()  # refused before training
