"""Stage-two commands of the `embedcache` app: train, eval, embed, pairs, runs, heads.

Registered onto the app defined in cli.py; nothing here imports transformers or timm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

Opt = Annotated[list[str] | None, typer.Option("--option", "-o", help="Head option KEY=VALUE (repeatable).")]
RamBudget = Annotated[float | None, typer.Option(
    "--ram-budget", min=1e-9, help="GiB of RAM for token arrays; larger ones are streamed from the store in blocks "
    "(default: 60% of the free RAM).")]


def _bytes(gib: float | None) -> int | None:
    return None if gib is None else int(gib * 2**30)


def register(app: typer.Typer) -> None:
    """Add the stage-two commands to `app`."""
    for fn in (train, eval_, embed, pairs, runs, heads, run, pipelines, tables):
        app.command(fn.__name__.rstrip("_"))(fn)


def _cli():  # the shared helpers of cli.py, imported late (cli imports this module)
    from embedcache import cli

    return cli


def train(
    head: Annotated[str, typer.Argument(help="A head (`embedcache heads`), e.g. cbmf-add, mlp-concat, late-min-loss.")],
    setting: Annotated[str | None, typer.Option("--setting", help="Training setting (default: the head's).")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset of the stores.")] = None,
    backbone: Annotated[list[str] | None, typer.Option("--backbone", "-b", help="Store per modality.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2)] = 64,
    lr: Annotated[float, typer.Option("--lr")] = 1e-3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    tokens: Annotated[bool | None, typer.Option("--tokens/--pooled", help="Token sequences or pooled.")] = None,
    targets: Annotated[str | None, typer.Option("--targets", help="Contrastive targets: soft | hard.")] = None,
    option: Opt = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    force: Annotated[bool, typer.Option("--force", help="Train again even if this exact run exists.")] = False,
    ram_budget: RamBudget = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Stage two: train a head from the stores and write its run (one JSON + checkpoint under results/runs)."""
    from embedcache.heads import HEADS
    from embedcache.late_fusion import LATE_FUSIONS

    cli = _cli()
    common: dict[str, Any] = dict(
        setting=setting, dataset=dataset, backbones=backbone or None, data_dir=cli._use_data_dir(data_dir), seed=seed,
        force=force,
    )
    fit: dict[str, Any] = dict(epochs=epochs, batch_size=batch_size, lr=lr, device=device)
    with cli._user_errors():
        if head in LATE_FUSIONS:
            from embedcache.late_fusion import late_fusion

            done = late_fusion([head], **common, **fit)
            for run in done.values():
                _print_run(run)
            return
        if getattr(HEADS.get(head), "task", "align") == "classify":
            from embedcache.classify import train_classifier

            run = train_classifier(head, **common, **fit, tokens=tokens, options=cli._parse_options(option),
                                   ram_budget=_bytes(ram_budget))
        else:
            from embedcache.train import train as run_train

            run = run_train(head, **common, **fit, tokens=tokens, targets=targets, options=cli._parse_options(option),
                            ram_budget=_bytes(ram_budget))
    _print_run(run)


def _print_run(run: Any) -> None:
    out = _cli().out
    out.print(f"run [bold]{run.id}[/] in {run.dir}")
    flat = _flatten(run.metrics)
    if flat:
        table = Table("metric", "value")
        for key, value in list(flat.items())[:40]:
            table.add_row(key, f"{value:.4f}")
        out.print(table)
        if len(flat) > 40:
            out.print(f"... {len(flat) - 40} more in {run.dir / 'run.json'}")


def _flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def eval_(
    run: Annotated[str, typer.Argument(help="A run id or run directory.")],
    task: Annotated[str, typer.Option("--task", help="retrieval | zero-shot | linear-probe | finetune | sts | "
                                                     "pair-classification")],
    dataset: Annotated[str | None, typer.Option("--dataset", help="Evaluate on another dataset's stores.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Task option KEY=VALUE.")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    ram_budget: RamBudget = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Run an evaluation task on a trained run and record its metrics in the run's JSON."""
    from embedcache.tasks import evaluate_run

    cli = _cli()
    with cli._user_errors():
        metrics = evaluate_run(run, task, dataset=dataset, data_dir=cli._use_data_dir(data_dir), device=device,
                               ram_budget=_bytes(ram_budget), **cli._parse_options(option))
    table = Table("metric", "value", title=f"{task} on {run}")
    for key, value in list(metrics.items())[:40]:
        table.add_row(key, f"{value:.4f}")
    cli.out.print(table)


def embed(
    run: Annotated[str, typer.Argument(help="A run id or run directory.")],
    store: Annotated[str, typer.Option("--store", help="Input store: DATASET/BACKBONE or a path.")],
    out_path: Annotated[Path | None, typer.Option("--out", help="Output store path.")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    force: Annotated[bool, typer.Option("--force")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Write a trained head's output embeddings for a store as a new, reusable store."""
    from embedcache.embed import embed as run_embed

    cli = _cli()
    with cli._user_errors():
        path = run_embed(run, store=_store_ref(store, data_dir), out=out_path, device=device, force=force,
                         data_dir=cli._use_data_dir(data_dir))
    cli.out.print(f"wrote {path}")


def _store_ref(ref: str, data_dir: Path | None) -> Path:
    from embedcache.paths import store_path

    if ref.endswith(".h5") or Path(ref).exists():
        return Path(ref)
    dataset, _, backbone = ref.partition("/")
    return store_path(dataset, backbone, _cli()._use_data_dir(data_dir))


def pairs(
    dataset: Annotated[str, typer.Argument(help="A captioned dataset with a sentence-embedding store.")],
    model: Annotated[str, typer.Option("--model", "-m", help="The sentence-embedding store's backbone.")] = "minilm",
    threshold: Annotated[float, typer.Option("--threshold", help="Cosine threshold.")] = 0.7,
    split: Annotated[str, typer.Option("--split")] = "train",
    force: Annotated[bool, typer.Option("--force")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Mine caption pairs with cosine >= threshold (the CBMF text-text training set), stored and versioned."""
    from embedcache.pairs import ensure_pairs

    cli = _cli()
    with cli._user_errors():
        mined = ensure_pairs(_store_ref(f"{dataset}/{model}", data_dir), split, threshold, force=force,
                             data_dir=cli._use_data_dir(data_dir))
    cli.out.print(f"{len(mined)} pairs with cosine >= {threshold} in {dataset}/{split} ({model})")


def runs() -> None:
    """Every finished run: id, head, stores, seed, headline metrics."""
    from embedcache.runs import list_runs

    table = Table("run", "head", "inputs", "seed", "metrics")
    for run in list_runs():
        rec = run.record
        inputs = ", ".join(f"{i.get('dataset')}/{i.get('backbone')}" for i in rec.get("inputs", []))
        flat = _flatten(run.metrics)
        shown = ", ".join(f"{k}={v:.3f}" for k, v in list(flat.items())[:3])
        table.add_row(run.id, str(rec.get("head", {}).get("name", rec.get("task", "-"))), inputs,
                      str(rec.get("seed", "-")), shown)
    _cli().out.print(table)


def heads() -> None:
    """The registered heads and late fusions, with their default training settings."""
    from embedcache.heads import HEADS
    from embedcache.late_fusion import LATE_FUSIONS

    table = Table("name", "kind", "default setting", "description")
    for name in HEADS.names():
        cls = HEADS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        table.add_row(name, getattr(cls, "task", "align"), cls.setting_for(name), doc)
    for name in LATE_FUSIONS.names():
        doc = (LATE_FUSIONS.get(name).__doc__ or "").strip().splitlines()
        table.add_row(name, "late fusion", "mvsa-single-late", doc[0] if doc else "")
    _cli().out.print(table)


def run(
    pipeline: Annotated[list[str] | None, typer.Argument(help="Pipeline names or TOML paths (default: all).")] = None,
    demo: Annotated[bool | None, typer.Option("--demo/--papers", help="Only the offline demo twins / only the "
                                                                      "papers' own pipelines (default: both).")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Seeds per run (default: the spec's).")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Regenerate result tables: extract missing stores, train each head over its seeds, evaluate, write
    results/<table>.md/.csv/.png. Pipelines that cannot run still write their table with what is missing;
    the exit code is non-zero when any did not run."""
    from embedcache.pipeline import run_all

    cli = _cli()
    result = run_all(pipeline or None, demo=demo, data_dir=cli._use_data_dir(data_dir),
                     seeds=list(range(seeds)) if seeds else None, progress=True, device=device)
    cli.out.print(result.summary(), highlight=False, markup=False)
    for r in result.results:
        for path in r.outputs:
            if str(path).endswith(".md"):
                cli.out.print(f"table: {path}")
    raise typer.Exit(result.exit_code)


def pipelines() -> None:
    """The pipeline specs under pipelines/ (one per paper table or figure, plus the offline demo twins)."""
    from embedcache.pipeline import load_pipeline, select_pipelines

    table = Table("name", "demo", "title")
    for name in select_pipelines():
        spec = load_pipeline(name)
        table.add_row(spec.name, "yes" if spec.demo else "", spec.title)
    _cli().out.print(table)


def tables() -> None:
    """Rebuild every results/<table>.md/.csv/.png from the recorded runs, without training anything."""
    from embedcache.paths import results_dir
    from embedcache.results import write_all_tables

    for path in write_all_tables(results_dir()):
        _cli().out.print(f"wrote {path}")
