"""What `train` and `eval` print: a validation headline beside the frozen stores, retrieval's headline metrics
(not ~100 hit@k rows) with the full curves drawn to a PNG and kept in the run JSON."""

from __future__ import annotations

import json

import pytest
from _stage2_fixtures import make_toy_stores
from typer.testing import CliRunner

from embedcache.cli import app
from embedcache.fusion.headline import curve_families, headline_metrics

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    make_toy_stores(tmp_path, sizes={"train": 80, "val": 40, "test": 40}, image_dim=32, text_dims=(32, 40))
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EMBEDCACHE_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path


def test_train_ends_with_validation_r1_beside_the_raw_stores(toy):
    args = ["train", "convirt-frozen", "--dataset", "toy", "-b", "image", "-b", "text-a", "--epochs", "2",
            "--batch-size", "16", "--data-dir", str(toy)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "validation headline" in said and "val image_to_text_R@1" in said
    assert "cosine retrieval of the raw pooled stores" in said  # image and text-a are both 32 wide here
    run_json = next((toy / "results" / "runs").glob("*/run.json"))
    group = json.loads(run_json.read_text())["metrics"]["val-headline"]
    assert 0.0 <= group["val image_to_text_R@1"] <= 1.0 and "baseline val image_to_text_R@1" in group


def test_eval_retrieval_prints_the_headline_and_draws_the_curves(toy):
    assert runner.invoke(app, ["train", "convirt-frozen", "--dataset", "toy", "-b", "image", "-b", "text-b",
                               "--epochs", "1", "--data-dir", str(toy)]).exit_code == 0
    run_dir = next((toy / "results" / "runs").iterdir())
    result = runner.invoke(app, ["eval", run_dir.name, "--task", "retrieval", "-o", "hit_ks=[2,5,10,20,30,50,100]",
                                 "--data-dir", str(toy)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    for key in ("image_to_text_R@1", "text_to_image_R@10", "image_to_text_median_rank", "text_to_image_hit@2"):
        assert key in said
    assert "hit@100" not in said and "hit@50" not in said  # beyond the 40-image gallery: always 1
    assert (run_dir / "retrieval-curves.png").read_bytes().startswith(b"\x89PNG")
    assert "image_to_text_hit@100" in json.loads((run_dir / "run.json").read_text())["metrics"]["retrieval"]


def test_headline_keeps_curves_out_of_the_terminal():
    metrics = {"sts_spearman": 0.5, **{f"sts_acc@{t / 10:.1f}": 0.1 * t for t in range(1, 11)}}
    assert list(curve_families(metrics)) == ["sts_acc@"]
    assert headline_metrics("sts", metrics) == {"sts_spearman": 0.5}
