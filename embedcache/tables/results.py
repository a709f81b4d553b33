"""Result tables and figures, generated from run JSONs: results/<table>.md and .csv, plus PNG curves.

A table is built from a pipeline's manifest (results/<name>.json, written by `embedcache.tables.runner`): each
row reads one metric group of its run's JSON (one run per seed) and shows mean +- std over the seeds, the
variant used, and, from pipelines/reference.toml, the paper's number beside ours in a column labelled as
the paper's. Nothing here is typed in: rebuilding the tables (`write_all_tables`, `embedcache tables`) only
reads JSON. A pipeline that did not run still gets its table: the paper's numbers, empty cells for ours,
and what is missing with the command that gets it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedcache.tables.compare import comparisons
from embedcache.tables.reference import REFERENCE_FILE, ReferenceTable, reference_table

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from embedcache.tables.spec import ColumnSpec, PipelineSpec, PlotSpec, RowSpec

NONE = "—"


@dataclass
class Cell:
    """One (row, column): our values over seeds (already scaled) and the paper's number."""

    values: list[float] = field(default_factory=list)
    paper: float | None = None

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> float | None:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else None

    def ours(self, digits: int) -> str:
        if not self.values:
            return NONE
        text = f"{self.mean:.{digits}f}"
        return text + (f" ± {self.std:.{digits}f}" if self.std is not None else "")


@dataclass
class TableRow:
    spec: RowSpec
    cells: list[Cell]
    groups: list[dict[str, float]]  # the row's metric group of each seed's run found

    @property
    def n(self) -> int:
        """Seeds found."""
        return len(self.groups)


def _groups(row: RowSpec, manifest: dict[str, Any]) -> list[dict[str, float]]:
    """The row's metric group from each seed's run JSON (missing runs or groups are skipped)."""
    run_id, _, sub = row.run.partition("/")
    runs_dir = Path(manifest["runs_dir"])
    out = []
    for subs in manifest.get("runs", {}).get(run_id, {}).values():
        path = runs_dir / str(subs.get(sub, "")) / "run.json"
        if sub in subs and path.is_file():
            group = json.loads(path.read_text()).get("metrics", {}).get(row.metrics)
            if group is not None:
                out.append(group)
    return out


def metric_key(row: RowSpec, column: ColumnSpec) -> str | None:
    """The flat metric key of (row, column): the row's override, else `<prefix>_<metric>`; rows with
    overrides show only those columns (floors)."""
    if row.keys:
        return row.keys.get(column.label)
    return f"{row.prefix}_{column.metric}" if row.prefix else column.metric


def build_rows(spec: PipelineSpec, manifest: dict[str, Any], ref: ReferenceTable | None) -> list[TableRow]:
    """Every row of the table with its cells (scaled values over seeds, paper numbers)."""
    rows = []
    for row in spec.rows:
        groups = _groups(row, manifest)
        cells = []
        for col in spec.columns:
            key = metric_key(row, col)
            values = [g[key] * col.scale for g in groups if key is not None and key in g]
            paper = ref.value(row.ref, col.ref) if ref and row.ref and col.ref else None
            cells.append(Cell([float(v) for v in values if not math.isnan(v)], paper))
        rows.append(TableRow(row, cells, groups))
    return rows


def run_status(manifest: dict[str, Any]) -> str:
    """The pipeline's status as recorded: complete | not run | failed (an old manifest without one: complete)."""
    return str(manifest.get("status", "complete"))


def seeds_found(spec: PipelineSpec, manifest: dict[str, Any]) -> list[int]:
    """The seeds the manifest's runs were trained with; the spec's when none ran."""
    return sorted({int(s) for r in manifest.get("runs", {}).values() for s in r}) or list(spec.seeds)


def run_ids(manifest: dict[str, Any]) -> dict[str, list[str]]:
    """Run spec id -> the run ids (every seed and late-fusion method) the manifest records for it."""
    return {rid: sorted({i for subs in by_seed.values() for i in subs.values()})
            for rid, by_seed in manifest.get("runs", {}).items()}


Built = tuple[ReferenceTable | None, list[TableRow]]  # the paper's table (if any) and our rows


def build(spec: PipelineSpec, manifest: dict[str, Any]) -> Built:
    """The paper's table and our rows, read once for the markdown, the csv and the plots."""
    ref = reference_table(spec.reference) if spec.reference else None
    return ref, build_rows(spec, manifest, ref)


# ---------------------------------------------------------------- markdown and csv


def _status_lines(spec: PipelineSpec, manifest: dict[str, Any]) -> list[str]:
    if run_status(manifest) == "complete":
        return []
    lines = [f"> **{run_status(manifest).upper()}.** Nothing below is a result of ours until this is fixed:"]
    for m in manifest.get("missing", []):
        fix = m.get("fix", "")
        fix = fix if "`" in fix or not fix else f"`{fix}`"  # a prose fix keeps its own inline code
        lines.append(f"> - missing: {m['what']}" + (f" — to get it: {fix}" if fix else ""))
    lines.append(f"> then: `embedcache run {spec.name}`")
    return lines + [""]


def markdown(spec: PipelineSpec, manifest: dict[str, Any], built: Built | None = None) -> str:
    """The table as markdown: header, status, our columns beside the paper's, notes and run ids."""
    ref, rows = built or build(spec, manifest)
    seeds = seeds_found(spec, manifest)
    lines = [f"# {spec.title}", "",
             f"Source: {spec.source or 'no paper table'} · spec `{spec.path or f'pipelines/{spec.name}.toml'}` · "
             f"seeds {', '.join(map(str, seeds))} · status: **{run_status(manifest)}**", ""]
    if manifest.get("stand_ins"):
        lines += ["**REHEARSAL: stand-in backbones (random weights) on generated data. These numbers are not "
                  "results.**", ""]
    lines += _status_lines(spec, manifest)
    header = ["model", "kind", "variant", "n"]
    for col in spec.columns:
        header += [f"{col.label} (ours)"] + ([f"{col.label} (paper)"] if ref and col.ref else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r.spec.label, r.spec.kind, r.spec.variant or NONE, str(r.n)]
        for col, cell in zip(spec.columns, r.cells, strict=True):
            cells.append(cell.ours(col.digits) if run_status(manifest) == "complete" else "not run")
            if ref and col.ref:
                cells.append(NONE if cell.paper is None else f"{cell.paper:.{col.digits}f}")
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines += ["", *_footer(spec, manifest, ref, rows)]
    return "\n".join(lines) + "\n"


def footnotes(spec: PipelineSpec, ref: ReferenceTable | None) -> dict[str, str]:
    """The plain-text notes under every table (markdown and the HTML report): the legend, where the paper
    columns come from, and for a demo twin that they are not comparable."""
    notes = {"legend": "Mean ± sample std over the seeds (n = runs found). kinds: ours = the paper's method as "
                       "trained here; baseline = frozen-backbone or simpler-head rows trained here; floor = majority "
                       "/ all-positive rates."}
    if ref:
        notes["paper"] = (f"Paper columns: {ref.citation} ({ref.caption}; {ref.units}), typed from the paper into "
                          f"pipelines/{REFERENCE_FILE}. They are the authors' published numbers, not results of this "
                          "code.")
    if spec.demo:
        notes["demo"] = (f"This is a demo twin of `{spec.twin_of}` on generated data with offline backbones: the "
                         "paper columns come from the real setup and are NOT comparable; they show the layout.")
    return notes


def _footer(spec: PipelineSpec, manifest: dict[str, Any], ref: ReferenceTable | None,
            rows: list[TableRow]) -> list[str]:
    lines = list(footnotes(spec, ref).values())
    notes = list(spec.notes) + list(manifest.get("notes", []))
    if run_status(manifest) == "complete":
        notes += comparisons(spec, rows)
    lines += [""] + [f"- {n}" for n in notes] if notes else []
    runs = run_ids(manifest)
    if runs:
        lines += ["", "Runs (results/runs/<id>/run.json):"]
        lines += [f"- {rid}: " + ", ".join(ids) for rid, ids in runs.items()]
    return lines


def csv_text(spec: PipelineSpec, manifest: dict[str, Any], built: Built | None = None) -> str:
    """One line per row: status, label, kind, variant, n, then per column mean, std and the paper's number."""
    _, rows = built or build(spec, manifest)
    buf = io.StringIO()
    writer = csv.writer(buf)
    header = ["pipeline", "status", "row", "kind", "variant", "n"]
    for col in spec.columns:
        header += [col.label, f"{col.label} std", f"{col.label} paper"]
    writer.writerow(header)
    for r in rows:
        line: list[Any] = [spec.name, run_status(manifest), r.spec.label, r.spec.kind, r.spec.variant,
                           r.n]
        for cell in r.cells:
            line += [_num(cell.mean), _num(cell.std), _num(cell.paper)]
        writer.writerow(line)
    return buf.getvalue()


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"


# ---------------------------------------------------------------- figures


def _mean_groups(groups: list[dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(g) for g in groups)) if groups else set()
    return {k: float(np.mean([g[k] for g in groups])) for k in keys}


def _plot_rows(plot: PlotSpec, rows: list[TableRow]) -> list[TableRow]:
    return [r for r in rows if (r.spec.label in plot.rows if plot.rows else r.spec.kind != "floor")]


def _sts(spec: PipelineSpec, plot: PlotSpec, rows: list[TableRow], path: Path) -> Path:
    from embedcache.evaluate.plots import plot_sts_tolerance

    curves = {}
    for row in _plot_rows(plot, rows):
        mean = _mean_groups(row.groups)
        head = f"{row.spec.prefix or 'sts'}_"
        curves[row.spec.label] = {"sts_" + k[len(head):]: v for k, v in mean.items() if k.startswith(head + "acc@")}
    return plot_sts_tolerance(curves, path, prefix="sts")


def _hits(spec: PipelineSpec, plot: PlotSpec, rows: list[TableRow], path: Path) -> Path | None:
    """The hit-rate curves; None (no plot) when no k of the grid is below the gallery size (a small gallery:
    hit@k is not reported for k at or above it, so there is no point to draw)."""
    from embedcache.evaluate.plots import plot_hit_rate

    curves = {}
    for row in _plot_rows(plot, rows):
        head = f"{plot.prefix or row.spec.prefix}_hit@"
        mean = _mean_groups(row.groups)
        curves[row.spec.label] = {f"{plot.prefix or row.spec.prefix}_{k.split('_')[-1]}": v
                                  for k, v in mean.items() if k.startswith(head)}
    if not any(curves.values()):
        log.warning("%s: no hit@k below the gallery size in any row; %s not drawn", spec.name, path.name)
        return None
    return plot_hit_rate(curves, path)


def _columns(spec: PipelineSpec, plot: PlotSpec, rows: list[TableRow], path: Path) -> Path:
    """Each row's columns that have an `x` as one line (ours solid, the paper's dashed)."""
    from matplotlib.figure import Figure

    from embedcache.evaluate.plots import save_figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for row in _plot_rows(plot, rows):
        cells = [(c.x, cell) for c, cell in zip(spec.columns, row.cells, strict=True) if c.x is not None]
        ours = [(x, cell.mean) for x, cell in cells if cell.mean is not None]
        paper = [(x, cell.paper) for x, cell in cells if cell.paper is not None]
        color = None
        if ours:
            color = ax.plot(*zip(*ours, strict=True), marker="o", label=f"{row.spec.label} (ours)")[0].get_color()
        if paper:
            ax.plot(*zip(*paper, strict=True), linestyle="--", marker="x", color=color,
                    label=f"{row.spec.ref} (paper)")
    ax.set(xlabel=plot.prefix or "x", ylabel="value")
    ax.set_title(spec.name, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


PLOTTERS = {"sts-tolerance": _sts, "hit-rate": _hits, "columns": _columns}


def write_results(spec: PipelineSpec, manifest: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """results/<name>.md and .csv, and every plot of the spec when the pipeline ran; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, table = out / f"{spec.name}.md", out / f"{spec.name}.csv"
    built = build(spec, manifest)
    md.write_text(markdown(spec, manifest, built))
    table.write_text(csv_text(spec, manifest, built))
    written = [md, table]
    if run_status(manifest) == "complete":
        plots = [PLOTTERS[p.kind](spec, p, built[1], out / p.file) for p in spec.plots]
        written += [p for p in plots if p is not None]
    return written


def load_manifests(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every pipeline manifest in `out_dir` (results/<name>.json), papers' pipelines first, then demo twins;
    a JSON file that is not a manifest (or not JSON) is passed over."""
    found = []
    for path in sorted(Path(out_dir).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and "pipeline" in record and "spec" in record:
            found.append(record)
    return sorted(found, key=lambda r: (bool(r["spec"].get("pipeline", r["spec"]).get("demo", False)),
                                        r["pipeline"]))


def manifest_spec(record: dict[str, Any], out_dir: str | Path) -> PipelineSpec:
    """The spec a manifest recorded, with `path` the spec file it was read from."""
    from embedcache.tables.spec import spec_from_dict

    spec = spec_from_dict(record["spec"], str(Path(out_dir) / f"{record['pipeline']}.json"))
    return dataclasses.replace(spec, path=record.get("spec_file", ""))


def write_all_tables(out_dir: str | Path) -> list[Path]:
    """Rebuild every table and plot from the manifests in `out_dir` (results/*.json) and the run JSONs they
    name; trains and evaluates nothing."""
    written = []
    for record in load_manifests(out_dir):
        written += write_results(manifest_spec(record, out_dir), record, out_dir)
    return written
