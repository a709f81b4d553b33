"""Figures from flat metric dicts: the STS tolerance curves (CBMF Fig. 3) and the hit-rate curve (Fig. 4).

The only non-pure helpers of evaluate/: they write image files. They draw on matplotlib's object API
with the Agg canvas, so no pyplot state or display backend is touched. `metrics` is one run's flat
dict, or a mapping of run label -> flat dict to draw several runs (BERT, RoBERTa, CBMF) on one figure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from embedcache.errors import BadInputError

Metrics = Mapping[str, float]
Runs = Mapping[str, Metrics]


def plot_sts_tolerance(metrics: Metrics | Runs, path: str | Path, *, prefix: str = "sts") -> Path:
    """Accuracy vs error tolerance from `sts_metrics` keys: one panel for all pairs and one per
    similarity band, one line per run. Returns the written path (format from its suffix)."""
    runs = _as_runs(metrics)
    panels = _sts_panels(runs, prefix)
    if not panels:
        raise BadInputError(f"no '{prefix}_acc@<tolerance>' keys found; pass the dict returned by sts_metrics")
    fig = Figure(figsize=(4 * len(panels), 3.6), layout="constrained")
    for ax, (panel, per_run) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items(), strict=True):
        for label, curve in per_run.items():
            ax.plot(*_xy(curve), label=label or None, linewidth=2)
        ax.set(title="all pairs" if panel == "" else f"gold {panel}", xlabel="error tolerance", ylabel="accuracy",
               ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        if any(per_run):
            ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_hit_rate(metrics: Metrics | Runs, path: str | Path) -> Path:
    """Hit rate vs k from every `<prefix>_hit@<k>` curve in the dict(s), one line per run and prefix
    (e.g. image_to_text and text_to_image). Returns the written path."""
    curves: dict[str, dict[int, float]] = {}
    for label, run in _as_runs(metrics).items():
        for key, value in run.items():
            match = re.fullmatch(r"(?P<prefix>.*)_hit@(?P<k>\d+)", key)
            if match:
                name = " ".join(s for s in (label, match["prefix"]) if s)
                curves.setdefault(name, {})[int(match["k"])] = float(value)
    if not curves:
        raise BadInputError("no '<prefix>_hit@<k>' keys found; pass the dict returned by retrieval_metrics")
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for name, curve in curves.items():
        ax.plot(*_xy(curve), label=name, linewidth=2)
    ax.set(xlabel="k (top-k retrieved)", ylabel="hit rate", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _sts_panels(runs: Runs, prefix: str) -> dict[str, dict[str, dict[float, float]]]:
    """panel ('' for all pairs, else the band name) -> run label -> {tolerance: accuracy}."""
    head = re.escape(f"{prefix}_") if prefix else ""
    pattern = re.compile(rf"{head}acc@(?P<tol>\d+\.\d+)(?:_band(?P<band>.+))?")
    panels: dict[str, dict[str, dict[float, float]]] = {}
    for label, run in runs.items():
        for key, value in run.items():
            match = pattern.fullmatch(key)
            if match:
                panel = panels.setdefault(match["band"] or "", {})
                panel.setdefault(label, {})[float(match["tol"])] = float(value)
    return dict(sorted(panels.items(), key=lambda kv: (kv[0] != "", kv[0])))


def _xy(curve: Mapping[float, float]) -> tuple[list[float], list[float]]:
    """A {x: y} curve as sorted x and y lists."""
    xs = sorted(curve)
    return xs, [curve[x] for x in xs]


def _as_runs(metrics: Metrics | Runs) -> Runs:
    values = list(metrics.values())
    if values and all(isinstance(v, Mapping) for v in values):
        return metrics  # type: ignore[return-value]
    return {"": metrics}  # type: ignore[dict-item]


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` to `path` (format from its suffix, 120 dpi) through the Agg canvas; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_figure(str(out), dpi=120)
    return out
