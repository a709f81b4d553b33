"""The data dir is a value passed down: it governs raw data and stores alike, and nothing writes the environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from embedcache.paths import Paths


def test_extract_with_a_data_dir_reads_and_generates_raw_data_there(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from embedcache.extract import ExtractCfg, extract

    elsewhere, here = tmp_path / "elsewhere", tmp_path / "here"
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(elsewhere))
    extract(ExtractCfg("shapes", "minilm", data_dir=here, dataset_options={"size": 20}))
    assert (here / "raw" / "shapes" / "shapes-20-s0" / "meta.json").exists()  # generated under the data dir
    assert (here / "stores" / "shapes" / "minilm.h5").exists()
    assert not elsewhere.exists() and os.environ["EMBEDCACHE_DATA_DIR"] == str(elsewhere)


def test_a_dataset_looks_for_its_raw_files_under_the_data_dir(tmp_path: Path) -> None:
    from embedcache.datasets import DatasetNotFoundError, create_dataset

    with pytest.raises(DatasetNotFoundError) as err:
        create_dataset("coco", data_dir=tmp_path).load_split("train")
    assert str(tmp_path / "raw" / "coco") in str(err.value) and err.value.fix.startswith("embedcache download coco")


def test_paths_resolve_defaults_without_writing_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", "/d")
    monkeypatch.delenv("EMBEDCACHE_RESULTS_DIR", raising=False)
    assert Paths.resolve() == Paths(Path("/d"), Path("results")) and Paths.resolve().runs_dir == Path("results/runs")
    assert Paths.resolve("/x", "/r") == Paths(Path("/x"), Path("/r")) and os.environ["EMBEDCACHE_DATA_DIR"] == "/d"


def test_the_cli_data_dir_option_leaves_the_environment_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from embedcache.cli import app

    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path / "env"))
    result = CliRunner().invoke(app, ["extract", "shapes", "--model", "minilm", "-o", "size=20", "--data-dir",
                                      str(tmp_path / "flag")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "flag" / "raw" / "shapes").is_dir() and (tmp_path / "flag" / "stores" / "shapes").is_dir()
    assert os.environ["EMBEDCACHE_DATA_DIR"] == str(tmp_path / "env") and not (tmp_path / "env").exists()
