"""results/index.html: every table, status, note and figure on one self-contained page.

Built only from what `embedcache run` already wrote (results/<name>.json manifests, the run JSONs they name,
the PNGs beside them), so `embedcache tables` rebuilds it without training anything. The page works offline:
no scripts, no CDN, inline CSS, figures embedded as data: URIs; links to run JSONs, tables and CSVs are
relative paths to files that exist. Ours and the paper's numbers sit side by side, the paper's labelled so.
"""

from __future__ import annotations

import base64
import html
import os
import time
from pathlib import Path
from typing import Any

from embedcache.tables.compare import comparisons
from embedcache.tables.results import (
    NONE,
    TableRow,
    build,
    footnotes,
    load_manifests,
    manifest_spec,
    run_ids,
    run_status,
    seeds_found,
)

REPORT_FILE = "index.html"

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;color:#222}
h1{font-size:1.6em}h2{border-top:1px solid #ccc;padding-top:1em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,th:first-child,td.l{text-align:left}th{background:#f2f2f2}td.paper,th.paper{color:#666;
background:#fafafa;font-style:italic}.complete{color:#11772d}.not-run,.failed{color:#b00020}
.status{font-weight:bold}.missing{background:#fff3f3;border-left:4px solid #b00020;padding:.4em 1em}
code{background:#f4f4f4;padding:0 3px}img{max-width:100%;border:1px solid #eee}.meta{color:#555}
.demo{background:#f6f8ff;border-left:4px solid #4060c0;padding:.4em 1em}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _href(path: Path, out_dir: Path) -> str:
    return _e(Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix())


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _status_block(spec: Any, record: dict[str, Any]) -> list[str]:
    """What is missing and the commands that get it, for a pipeline that did not run."""
    if run_status(record) == "complete":
        return []
    items = [f"<li>missing: {_e(m.get('what', ''))}" + (f" — to get it: <code>{_e(m['fix'])}</code>"
                                                          if m.get("fix") else "") + "</li>"
             for m in record.get("missing", [])]
    return ['<div class="missing"><p><b>Not run.</b> Nothing in this table is a result of ours until this is '
            'fixed:</p><ul>', *items, f"</ul><p>then: <code>embedcache run {_e(spec.name)}</code></p></div>"]


def _table(spec: Any, record: dict[str, Any], ref: Any, rows: list[TableRow]) -> list[str]:
    """The table: model, kind, variant, seeds, then per column ours (mean ± std) and the paper's number."""
    done = run_status(record) == "complete"
    head = ["<th>model</th><th>kind</th><th>variant</th><th>n</th>"]
    for col in spec.columns:
        head.append(f"<th>{_e(col.label)} (ours)</th>")
        if ref and col.ref:
            head.append(f'<th class="paper">{_e(col.label)} (paper)</th>')
    lines = ["<table>", "<tr>" + "".join(head) + "</tr>"]
    for r in rows:
        cells = [f"<td>{_e(r.spec.label)}</td>", f'<td class="l">{_e(r.spec.kind)}</td>',
                 f'<td class="l">{_e(r.spec.variant or NONE)}</td>', f"<td>{r.n}</td>"]
        for col, cell in zip(spec.columns, r.cells, strict=True):
            cells.append(f"<td>{_e(cell.ours(col.digits) if done else 'not run')}</td>")
            if ref and col.ref:
                paper = NONE if cell.paper is None else f"{cell.paper:.{col.digits}f}"
                cells.append(f'<td class="paper">{_e(paper)}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return lines + ["</table>"]


def _notes(spec: Any, record: dict[str, Any], ref: Any, rows: list[TableRow]) -> list[str]:
    notes = list(spec.notes) + list(record.get("notes", []))
    if run_status(record) == "complete":
        notes += comparisons(spec, rows)
    css = {"legend": "meta", "paper": "meta", "demo": "demo"}
    lines = [f'<p class="{css[key]}">{_e(text)}</p>' for key, text in footnotes(spec, ref).items()]
    if notes:
        lines += ["<h3>Notes and deviations</h3>", "<ul>", *[f"<li>{_e(n)}</li>" for n in notes], "</ul>"]
    return lines


def _figures(spec: Any, record: dict[str, Any], out_dir: Path) -> list[str]:
    if run_status(record) != "complete":
        return []
    lines = []
    for plot in spec.plots:
        path = out_dir / plot.file
        if path.is_file():
            lines.append(f'<figure><img src="{_data_uri(path)}" alt="{_e(plot.kind)}: {_e(plot.file)}">'
                         f"<figcaption>{_e(plot.file)} ({_e(plot.kind)})</figcaption></figure>")
    return lines


def _links(spec: Any, record: dict[str, Any], out_dir: Path) -> list[str]:
    """Links to the table's markdown/csv/manifest and to every run JSON that exists."""
    files = [out_dir / f"{spec.name}.{ext}" for ext in ("md", "csv", "json")]
    links = [f'<a href="{_href(p, out_dir)}">{_e(p.name)}</a>' for p in files if p.is_file()]
    lines = ['<p class="meta">Files: ' + " · ".join(links) + "</p>"] if links else []
    runs_dir = Path(record.get("runs_dir", out_dir / "runs"))
    runs = []
    for rid, ids in run_ids(record).items():
        found = [f'<a href="{_href(runs_dir / i / "run.json", out_dir)}">{_e(i)}</a>' for i in ids
                 if (runs_dir / i / "run.json").is_file()]
        if found:
            runs.append(f"<li>{_e(rid)}: " + ", ".join(found) + "</li>")
    return lines + (["<details><summary>Run JSONs</summary><ul>", *runs, "</ul></details>"] if runs else [])


def pipeline_section(record: dict[str, Any], out_dir: Path) -> str:
    """One pipeline's section: title, source, status, what is missing, the table, notes, figures, links."""
    spec = manifest_spec(record, out_dir)
    ref, rows = build(spec, record)
    status = run_status(record)
    seeds = seeds_found(spec, record)
    parts = [f'<section id="{_e(spec.name)}">', f"<h2>{_e(spec.title)}</h2>",
             f'<p class="meta"><code>{_e(spec.name)}</code> · source: {_e(spec.source or "no paper table")} · spec '
             f"<code>{_e(spec.path or f'pipelines/{spec.name}.toml')}</code> · seeds {_e(', '.join(map(str, seeds)))}"
             f' · status: <span class="status {_e(status.replace(" ", "-"))}">{_e(status)}</span>'
             f" · updated {_e(record.get('updated', '?'))}</p>"]
    parts += _status_block(spec, record)
    parts += _table(spec, record, ref, rows)
    parts += _notes(spec, record, ref, rows)
    parts += _figures(spec, record, out_dir)
    parts += _links(spec, record, out_dir)
    return "\n".join(parts + ["</section>"])


def _index(records: list[dict[str, Any]]) -> list[str]:
    lines = ["<table>", "<tr><th>pipeline</th><th>status</th><th>title</th><th>demo</th></tr>"]
    for r in records:
        spec = r["spec"].get("pipeline", r["spec"])
        status = run_status(r)
        lines.append(f'<tr><td><a href="#{_e(r["pipeline"])}">{_e(r["pipeline"])}</a></td>'
                     f'<td class="l status {_e(status.replace(" ", "-"))}">{_e(status)}</td>'
                     f'<td class="l">{_e(spec.get("title", ""))}</td><td class="l">'
                     f'{"yes" if spec.get("demo") else ""}</td></tr>')
    return lines + ["</table>"]


def render_report(out_dir: str | Path) -> str:
    """The page as one HTML string (see the module docstring)."""
    out = Path(out_dir)
    records = load_manifests(out)
    done = sum(run_status(r) == "complete" for r in records)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width,initial-scale=1">',
             "<title>embedcache results</title>", f"<style>{CSS}</style>", "</head><body>",
             "<h1>embedcache results</h1>",
             f'<p class="meta">{len(records)} tables, {done} complete, {len(records) - done} not run · written '
             f"{_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))} from the manifests in this folder; rebuild with "
             "<code>embedcache tables</code>, rerun with <code>embedcache run</code>.</p>"]
    if not records:
        parts.append("<p>No results yet: run <code>make demo</code> or <code>embedcache run</code>.</p>")
    parts += _index(records)
    parts += [pipeline_section(r, out) for r in records]
    return "\n".join(parts + ["</body></html>"]) + "\n"


def write_report(out_dir: str | Path) -> Path:
    """Write results/index.html (atomically: a reader never sees half a page) and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_report(out), encoding="utf-8")
    tmp.replace(path)
    return path
