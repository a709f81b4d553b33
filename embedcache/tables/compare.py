"""Generated notes: does our method beat each baseline here, as the paper says it does, and by how much spread?

For every `ours` row against every `baseline` row, on the table's first column where both have numbers, one
sentence: both means ± seed std, the difference, whether it is larger than the seeds' spread, and what the
paper's own columns show for the same pair. Nothing is typed in; it reads the built rows only.
"""

from __future__ import annotations

from typing import Any

Cell = Any  # embedcache.tables.results.Cell (not imported: results imports this module)
TableRow = Any

LOWER_IS_BETTER = ("rank", "loss", "medr", "error")


def _lower_better(label: str) -> bool:
    return any(word in label.lower() for word in LOWER_IS_BETTER)


def _fmt(cell: Cell, digits: int) -> str:
    return cell.ours(digits) + (f" (n={len(cell.values)})" if cell.values else "")


def verdict(ours: Cell, base: Cell, lower_better: bool = False) -> str:
    """'higher' / 'lower' / 'tied within the seeds' spread' / 'one seed: no spread to judge by' for our row
    against a baseline: a difference counts only when it exceeds the larger of the two seed stds."""
    assert ours.mean is not None and base.mean is not None
    diff = ours.mean - base.mean
    if ours.std is None or base.std is None:
        return "one seed each, so no spread to judge by"
    if abs(diff) <= max(ours.std, base.std):
        return "no clear difference (within the seeds' spread)"
    better = diff < 0 if lower_better else diff > 0
    return "ours is better, beyond the seeds' spread" if better else "ours is worse, beyond the seeds' spread"


def _paper_says(ours: Cell, base: Cell, lower_better: bool) -> str:
    if ours.paper is None or base.paper is None:
        return ""
    better = ours.paper < base.paper if lower_better else ours.paper > base.paper
    return f"; the paper: {ours.paper:g} vs {base.paper:g} ({'ours better' if better else 'ours not better'})"


def _first_shared(spec: Any, a: TableRow, b: TableRow) -> int | None:
    """The first column where both rows have numbers, skipping columns where both sit at the same value
    (e.g. a hit@1 of 0 everywhere says nothing about which is better)."""
    shared = [i for i, _ in enumerate(spec.columns) if a.cells[i].values and b.cells[i].values]
    informative = [i for i in shared if set(a.cells[i].values) | set(b.cells[i].values) != {a.cells[i].values[0]}]
    return (informative or shared or [None])[0]


def comparisons(spec: Any, rows: list[TableRow]) -> list[str]:
    """One sentence per (ours row, baseline row) pair with numbers in a shared column (see module doc)."""
    lines = []
    for a in (r for r in rows if r.spec.kind == "ours"):
        for b in (r for r in rows if r.spec.kind == "baseline"):
            i = _first_shared(spec, a, b)
            if i is None:
                continue
            col = spec.columns[i]
            lower = _lower_better(col.label)
            diff = a.cells[i].mean - b.cells[i].mean  # type: ignore[operator]
            lines.append(f"{a.spec.label} vs {b.spec.label} on {col.label}: {_fmt(a.cells[i], col.digits)} vs "
                         f"{_fmt(b.cells[i], col.digits)}, difference {diff:+.{col.digits}f}: "
                         f"{verdict(a.cells[i], b.cells[i], lower)}{_paper_says(a.cells[i], b.cells[i], lower)}.")
    return lines
