"""Result tables: mean +- std over seeds against a naive reference, the paper's numbers beside ours, floors,
"not run" tables, CSV, plots, rebuilding from JSON, and the reference file itself."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from embedcache.tables.reference import load_reference, pipelines_dir
from embedcache.tables.results import build_rows, csv_text, markdown, write_all_tables, write_results
from embedcache.tables.runner import (
    ColumnSpec,
    PipelineSpec,
    PlotSpec,
    RowSpec,
    RunSpec,
    list_pipelines,
    load_pipeline,
    spec_to_dict,
)

PAPERS = Path("/work/shared/papers")
PAPER_FILES = {"cbmf": "cbmf-context-based-multimodal-fusion.txt", "bert-resnet": "bert-resnet-fusion-coco.txt",
               "clfa": "clfa-clip-guided-alignment.txt", "late-fusion": "late-fusion-mvsa.txt"}


def spec() -> PipelineSpec:
    return PipelineSpec(
        "t", "A test table", source="CBMF Table IV", reference="cbmf-table4", seeds=(0, 1, 2),
        runs=(RunSpec("a", "cbmf-add"), RunSpec("b", "convirt-frozen")),
        columns=(ColumnSpec("top-1", "zeroshot_top1", 100.0, "top1"), ColumnSpec("top-5", "zeroshot_top5", 100.0),
                 ColumnSpec("raw", "raw_acc", 1.0, digits=3)),
        rows=(RowSpec("CBMF-add", "a", "zero-shot", ref="CBMF-add (Ours)", variant="hard targets"),
              RowSpec("ConVIRT", "b", "zero-shot", kind="baseline", ref="conVIRT"),
              RowSpec("floor", "a", "zero-shot", keys={"top-1": "floor_acc"}, kind="floor")),
        plots=(PlotSpec("sts-tolerance", "t-sts.png", rows=("CBMF-add",)),))


def write_runs(root: Path, values: dict[str, list[dict[str, float]]], group: str = "zero-shot") -> dict:
    """One run.json per (run spec, seed) with the given metric group; returns the manifest's `runs`."""
    runs: dict = {}
    for rid, per_seed in values.items():
        for seed, metrics in enumerate(per_seed):
            run_id = f"{rid}-{seed}"
            (root / run_id).mkdir(parents=True)
            (root / run_id / "run.json").write_text(json.dumps({"run_id": run_id, "metrics": {group: metrics}}))
            runs.setdefault(rid, {})[str(seed)] = {"": run_id}
    return runs


def manifest(tmp_path: Path, status: str = "complete", **extra) -> dict:
    rng = np.random.default_rng(0)
    values = {rid: [{"zeroshot_top1": float(rng.random()), "zeroshot_top5": float(rng.random()),
                     "floor_acc": 0.25, **{f"sts_acc@{t:.2f}": float(rng.random()) for t in (0.1, 0.5, 1.0)}}
                    for _ in range(3)] for rid in ("a", "b")}
    runs = write_runs(tmp_path / "runs", values) if status == "complete" else {}
    return {"pipeline": "t", "spec": spec_to_dict(spec()), "status": status, "runs": runs,
            "runs_dir": str(tmp_path / "runs"), "missing": [], "notes": [], **extra}, values


def test_cells_are_mean_and_sample_std_over_seeds(tmp_path: Path) -> None:
    m, values = manifest(tmp_path)
    rows = build_rows(spec(), m, load_reference()["cbmf-table4"])
    top1 = [100.0 * v["zeroshot_top1"] for v in values["a"]]
    cell = rows[0].cells[0]
    assert rows[0].n == 3 and cell.values == pytest.approx(top1)
    assert cell.mean == pytest.approx(sum(top1) / 3)
    assert cell.std == pytest.approx(np.sqrt(sum((x - sum(top1) / 3) ** 2 for x in top1) / 2))
    assert cell.paper == 78.26 and rows[0].cells[1].paper is None  # no ref column for top-5
    assert rows[1].cells[0].paper == 62.12
    floor = rows[2]
    assert floor.cells[0].values == [25.0] * 3 and floor.cells[1].values == [] and floor.cells[2].values == []


def test_markdown_puts_ours_beside_the_papers(tmp_path: Path) -> None:
    m, values = manifest(tmp_path)
    md = markdown(spec(), m)
    top1 = np.array([100.0 * v["zeroshot_top1"] for v in values["a"]])
    assert f"| CBMF-add | ours | hard targets | 3 | {top1.mean():.2f} ± {top1.std(ddof=1):.2f} | 78.26 |" in md
    assert "top-1 (ours) | top-1 (paper) | top-5 (ours) | raw (ours) |" in md
    assert "| floor | floor | — | 3 | 25.00 ± 0.00 | — | — | — |" in md
    assert "Table IV" in md and "not results of this code" in md and "status: **complete**" in md


def test_not_run_table_names_what_is_missing_and_keeps_the_papers_numbers(tmp_path: Path) -> None:
    missing = [{"what": "dataset 'cifar10' not found.", "fix": "embedcache download cifar10", "detail": "..."}]
    m, _ = manifest(tmp_path, status="not run", missing=missing)
    md = markdown(spec(), m)
    assert "> **NOT RUN.**" in md
    assert "> - missing: dataset 'cifar10' not found. — to get it: `embedcache download cifar10`" in md
    assert "> then: `embedcache run t`" in md
    assert "| CBMF-add | ours | hard targets | 0 | not run | 78.26 | not run | not run |" in md
    rows = list(csv.DictReader(io.StringIO(csv_text(spec(), m))))
    assert {r["status"] for r in rows} == {"not run"} and rows[0]["top-1 paper"] == "78.26" and rows[0]["top-1"] == ""


def test_csv_holds_means_stds_and_paper(tmp_path: Path) -> None:
    m, values = manifest(tmp_path)
    rows = list(csv.DictReader(io.StringIO(csv_text(spec(), m))))
    assert [r["row"] for r in rows] == ["CBMF-add", "ConVIRT", "floor"]
    top5 = np.array([100.0 * v["zeroshot_top5"] for v in values["b"]])
    assert float(rows[1]["top-5"]) == pytest.approx(top5.mean(), rel=1e-5)
    assert float(rows[1]["top-5 std"]) == pytest.approx(top5.std(ddof=1), rel=1e-5)
    assert rows[1]["top-1 paper"] == "62.12" and rows[2]["raw"] == ""


def test_write_results_draws_the_plots_and_rebuilds_from_json(tmp_path: Path) -> None:
    m, _ = manifest(tmp_path)
    out = tmp_path / "results"
    written = write_results(spec(), m, out)
    png = out / "t-sts.png"
    assert png in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (out / "t.json").write_text(json.dumps(m))
    (out / "t.md").unlink()
    rebuilt = write_all_tables(out)
    assert out / "t.md" in rebuilt and (out / "t.md").read_text() == markdown(spec(), m)


def test_not_run_tables_draw_no_plots(tmp_path: Path) -> None:
    m, _ = manifest(tmp_path, status="not run")
    written = write_results(spec(), m, tmp_path / "out")
    assert [p.suffix for p in written] == [".md", ".csv"]


# ---------------------------------------------------------------- the reference file


def test_reference_tables_parse_with_units() -> None:
    tables = load_reference()
    assert {"cbmf-table2", "cbmf-table4", "bert-resnet-table2", "clfa-mmsd", "clfa-mvsa", "late-fusion-mvsa"} <= set(
        tables)
    assert tables["cbmf-table2"].value("CBMF (Ours)", "accuracy") == 54.79
    assert tables["late-fusion-mvsa"].value("VGG16", "f1") is None  # blank in the paper: absent, not 0


@pytest.mark.skipif(not PAPERS.is_dir(), reason="the papers' text is not on this machine")
def test_every_reference_number_appears_in_its_paper() -> None:
    """Typing check: each number must occur in the paper's text (as printed, or with trailing zeros dropped)."""
    for key, table in load_reference().items():
        text = (PAPERS / next(f for prefix, f in PAPER_FILES.items() if key.startswith(prefix))).read_text()
        numbers = set(re.findall(r"\d+(?:\.\d+)?", text))
        for row, values in table.rows:
            for column, value in values:
                forms = {f"{value:g}", f"{value:.1f}", f"{value:.2f}", f"{value:.3f}", f"{value:.4f}", f"{value:.0f}"}
                assert forms & numbers, f"{key} / {row} / {column} = {value} is not in the paper's text"


@pytest.mark.parametrize("name", list_pipelines(pipelines_dir()))
def test_pipelines_name_existing_reference_rows_and_columns(name: str) -> None:
    spec = load_pipeline(name)
    if not spec.reference:
        assert all(not r.ref for r in spec.rows) and all(not c.ref for c in spec.columns)
        return
    table = load_reference()[spec.reference]
    columns = {c for _, values in table.rows for c, _ in values}
    assert {r.ref for r in spec.rows if r.ref} <= set(table.row_names())
    assert {c.ref for c in spec.columns if c.ref} <= columns
