"""Table commands: run (pipelines -> tables), pipelines, tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from embedcache.cli.common import out
from embedcache.paths import Paths


def register(app: typer.Typer) -> None:
    """Add the table commands to `app`."""
    for fn in (run, pipelines, tables):
        app.command(fn.__name__)(fn)


def run(
    pipeline: Annotated[list[str] | None, typer.Argument(help="Pipeline names or TOML paths (default: all).")] = None,
    demo: Annotated[bool | None, typer.Option("--demo/--papers", help="Only the offline demo twins / only the "
                                                                      "papers' own pipelines (default: both).")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Seeds per run (default: the spec's).")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Only show what would be built (stores with rows, widths, "
                                                      "tokens and size on disk; mined pairs; runs; evaluations) "
                                                      "and what is done; run nothing.")] = False,
) -> None:
    """Regenerate result tables: extract missing stores, train each head over its seeds, evaluate, write
    results/<table>.md/.csv/.png and the page results/index.html. Pipelines that cannot run still write their
    table with what is missing; the exit code is non-zero when any did not run. --plan shows what a run would
    build and spend first."""
    from embedcache.tables.runner import run_all

    if plan:
        show_plans(pipeline, demo, seeds, data_dir)
        return

    result = run_all(pipeline or None, demo=demo, paths=Paths.resolve(data_dir),
                     seeds=seeds, progress=True, device=device)
    out.print(result.summary(), highlight=False, markup=False)
    for r in result.results:
        for path in r.outputs:
            if str(path).endswith(".md"):
                out.print(f"table: {path}")
    if result.report is not None:
        out.print(f"report: {result.report}")
    raise typer.Exit(result.exit_code)


def show_plans(names: list[str] | None, demo: bool | None, seeds: int | None, data_dir: Path | None) -> None:
    """Print `embedcache.tables.plan` for each selected pipeline."""
    from embedcache.tables.plan import format_plan, plan_pipeline
    from embedcache.tables.runner import load_pipeline, resolve_seeds, select_pipelines

    paths = Paths.resolve(data_dir)
    for name in select_pipelines(names or None, demo=demo):
        spec = load_pipeline(name)
        chosen = resolve_seeds(spec, seeds)
        plan = plan_pipeline(spec, data_dir=paths.data_dir, results_dir=paths.results_dir, seeds=chosen)
        out.print(format_plan(plan), highlight=False, markup=False)


def pipelines() -> None:
    """The pipeline specs under pipelines/ (one per paper table or figure, plus the offline demo twins)."""
    from embedcache.tables.runner import load_pipeline, select_pipelines

    table = Table("name", "demo", "title")
    for name in select_pipelines():
        spec = load_pipeline(name)
        table.add_row(spec.name, "yes" if spec.demo else "", spec.title)
    out.print(table)


def tables() -> None:
    """Rebuild every results/<table>.md/.csv/.png and the page results/index.html from the recorded runs,
    without training anything."""
    from embedcache.paths import results_dir
    from embedcache.tables.report import write_report
    from embedcache.tables.results import write_all_tables

    for path in write_all_tables(results_dir()):
        out.print(f"wrote {path}")
    out.print(f"report: {write_report(results_dir())}")
