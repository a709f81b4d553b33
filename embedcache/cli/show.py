"""What `train` and `eval` print: the run, its headline beside a frozen baseline, where the full curves went."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from embedcache.cli.common import out


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def show_trained(run: Any, *, data_dir: Path | None = None, device: str | None = None) -> None:
    """The run id and directory, its training summary, and its validation headline beside the frozen-store
    baseline (embedcache.fusion.headline); everything else is in run.json."""
    from embedcache.fusion.headline import validation_headline

    out.print(f"run [bold]{run.id}[/] in {run.dir}")
    summary = run.metrics.get("train", {})
    if summary:
        out.print("  " + ", ".join(f"{k}={v:.4g}" for k, v in summary.items() if isinstance(v, (int, float))),
                  highlight=False)
    lines, note = validation_headline(run, data_dir=data_dir, device=device)
    if lines:
        table = Table("metric", "head", "frozen stores", "chance", title="validation headline")
        for line in lines:
            table.add_row(line.metric, _fmt(line.head), _fmt(line.baseline), _fmt(line.chance))
        out.print(table)
    out.print(f"  {note}; every metric: {run.dir / 'run.json'}", highlight=False)


def show_eval(run_ref: str, task: str, metrics: dict[str, float], *, dataset: str | None = None) -> None:
    """The evaluation's headline metrics (retrieval: R@1/5/10 both ways, median rank, a few hit@k within the
    gallery) and its full curves drawn to <run>/<task>-curves.png; every key is in the run's JSON."""
    from embedcache.fusion.headline import headline_metrics, write_curves
    from embedcache.fusion.runs import open_run
    from embedcache.fusion.tasks import metrics_key

    run = open_run(run_ref)
    key = metrics_key(task, dataset or run.inputs[0]["dataset"], run.inputs[0]["dataset"])
    info = run.record.get("evals", {}).get(key, {})
    shown = headline_metrics(task, metrics, info)
    if info.get("split_chosen"):  # no split option: the task says which split it picked
        out.print(info["split_chosen"])
    split = f" (split {info['split']!r})" if info.get("split") else ""
    sizes = ", ".join(f"{k}={v}" for k, v in info.items() if isinstance(v, int))
    table = Table("metric", "value", title=f"{task}{split}" + (f": {sizes}" if sizes else ""))
    for name, value in shown.items():
        table.add_row(name, f"{value:.4f}")
    out.print(table)
    png = write_curves(task, metrics, run.dir / f"{key}-curves.png")
    where = f"{len(metrics)} metrics in {run.dir / 'run.json'} (group '{key}')"
    out.print(f"  {where}" + (f"; curves: {png}" if png else ""), highlight=False)


def show_logged(run: Any, logger: str, log_dir: Path | None) -> None:
    """Send the finished run to an experiment tracker (embedcache.fusion.tracking) and say where it went."""
    from embedcache.fusion.tracking import log_run
    from embedcache.paths import results_dir

    where = log_run(run, logger, log_dir or results_dir() / "tb")
    out.print(f"  logged to {logger}: {where} (tensorboard --logdir {where.parent})", highlight=False)
