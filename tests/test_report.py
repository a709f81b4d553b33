"""results/index.html: one offline page with every table (ours beside the paper's), status, notes, figures and
links to the run JSONs; a real headless Chromium loads it without console errors or broken images."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from _browser import find_chromium, load_page
from test_results import manifest, spec

from embedcache.tables.compare import verdict
from embedcache.tables.reference import load_reference
from embedcache.tables.report import render_report, write_report
from embedcache.tables.results import Cell, write_results
from embedcache.tables.runner import ColumnSpec, PipelineSpec, RowSpec, spec_to_dict


def _results(tmp_path: Path) -> Path:
    """A results folder with one complete table (runs, a plot) and one that did not run."""
    out = tmp_path / "results"
    record, _ = manifest(out)
    record["updated"] = "2026-01-01T00:00:00"
    (out / "t.json").write_text(json.dumps(record))
    write_results(spec(), record, out)
    missing = dataclasses.replace(spec(), name="needs-coco", title="A table that needs COCO", plots=())
    not_run = {"pipeline": "needs-coco", "spec": spec_to_dict(missing), "status": "not run", "runs": {},
               "runs_dir": str(out / "runs"), "notes": [],
               "missing": [{"what": "dataset 'coco' not found", "fix": "embedcache download coco"}]}
    (out / "needs-coco.json").write_text(json.dumps(not_run))
    write_results(missing, not_run, out)
    return out


def test_page_holds_every_table_status_figure_and_run_link(tmp_path: Path) -> None:
    out = _results(tmp_path)
    page = write_report(out).read_text()
    assert page.count("<section id=") == 2 and 'href="#t"' in page and 'href="#needs-coco"' in page
    assert "CBMF-add (ours)" not in page and "top-1 (ours)" in page and "top-1 (paper)" in page
    paper_top1 = dict(dict(load_reference()["cbmf-table4"].rows)["CBMF-add (Ours)"])["top1"]  # from reference.toml
    assert f"{paper_top1:.2f}" in page  # the paper's CBMF-add top-1 beside ours
    assert "embedcache download coco" in page and "embedcache run needs-coco" in page
    assert page.count("<img ") == 1 and "data:image/png;base64," in page  # t-sts.png, embedded
    links = re.findall(r'href="([^"#]+)"', page)
    assert "runs/a-0/run.json" in links and "t.md" in links
    assert all((out / link).is_file() for link in links), "every link points at a file that exists"
    assert "http://" not in page and "https://" not in page and "<script" not in page  # offline, no CDN


def test_notes_say_whether_ours_beats_the_baseline_with_spread(tmp_path: Path) -> None:
    page = render_report(_results(tmp_path))
    assert "CBMF-add vs ConVIRT on top-1:" in page and "(n=3)" in page
    md = (tmp_path / "results" / "t.md").read_text()
    assert "CBMF-add vs ConVIRT on top-1:" in md


def test_verdict_needs_a_difference_larger_than_the_spread() -> None:
    assert verdict(Cell([50.0, 52.0, 54.0]), Cell([40.0, 41.0, 42.0])).startswith("ours is better")
    assert verdict(Cell([50.0, 52.0, 54.0]), Cell([51.0, 52.0, 55.0])).startswith("no clear difference")
    assert verdict(Cell([3.0, 3.0, 4.0]), Cell([9.0, 10.0, 11.0]), lower_better=True).startswith("ours is better")
    assert verdict(Cell([50.0]), Cell([40.0])).startswith("one seed")


def test_comparison_skips_a_column_where_every_value_is_the_same() -> None:
    from embedcache.tables.compare import comparisons
    from embedcache.tables.results import TableRow

    cols = (ColumnSpec("hit@1", "a"), ColumnSpec("hit@5", "b"))
    ours = TableRow(RowSpec("mine", "x"), [Cell([0.0, 0.0]), Cell([5.0, 6.0])], [])
    base = TableRow(RowSpec("base", "y", kind="baseline"), [Cell([0.0, 0.0]), Cell([1.0, 1.5])], [])
    note = comparisons(PipelineSpec("p", "t", columns=cols), [ours, base])
    assert len(note) == 1 and note[0].startswith("mine vs base on hit@5:") and "ours is better" in note[0]


def test_empty_results_folder_says_how_to_fill_it(tmp_path: Path) -> None:
    assert "make demo" in render_report(tmp_path)


@pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH (apt-get install chromium; .ci/run does)")
def test_chromium_loads_the_page_without_errors_and_every_image(tmp_path: Path) -> None:
    out = _results(tmp_path)
    page = write_report(out)
    loaded = load_page(page, find_chromium() or "")
    assert loaded.errors == []
    assert loaded.images == 1 and loaded.broken_images == []
    assert loaded.screenshot.startswith(b"\x89PNG")
    (tmp_path / "report.png").write_bytes(loaded.screenshot)


@pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH (apt-get install chromium; .ci/run does)")
def test_browser_check_sees_a_broken_image(tmp_path: Path) -> None:
    """The browser check can fail: a page with a missing image file is caught."""
    (tmp_path / "bad.html").write_text('<!DOCTYPE html><html><body><img src="missing.png" alt="gone"></body></html>')
    loaded = load_page(tmp_path / "bad.html", find_chromium() or "")
    assert loaded.broken_images == ["gone"] and loaded.errors


def test_run_all_writes_the_page(tmp_path: Path) -> None:
    from embedcache.paths import Paths
    from embedcache.tables.runner import run_all

    (tmp_path / "pipelines").mkdir()
    out = _results(tmp_path)
    done = run_all(directory=tmp_path / "pipelines", paths=Paths(tmp_path / "data", out))
    assert done.report == out / "index.html" and 'href="#needs-coco"' in done.report.read_text()


def test_pipelines_are_found_from_any_working_directory(tmp_path, monkeypatch) -> None:
    """`embedcache tables` run outside the checkout still finds pipelines/ beside the package."""
    from embedcache.tables.reference import REFERENCE_FILE, pipelines_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDCACHE_PIPELINES_DIR", raising=False)
    assert (pipelines_dir() / REFERENCE_FILE).is_file()
