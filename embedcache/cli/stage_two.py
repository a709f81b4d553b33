"""Stage-two commands: train, eval, embed, pairs, runs, heads. Nothing here imports transformers or timm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from embedcache.cli.common import out, parse_options, use_data_dir, user_errors
from embedcache.cli.show import show_eval, show_logged, show_trained

Opt = Annotated[list[str] | None, typer.Option("--option", "-o", help="Head option KEY=VALUE (repeatable).")]
RamBudget = Annotated[float | None, typer.Option(
    "--ram-budget", min=1e-9, help="GiB of RAM for token arrays; larger ones are streamed from the store in blocks "
    "(default: 60% of the free RAM).")]


def _bytes(gib: float | None) -> int | None:
    return None if gib is None else int(gib * 2**30)


def register(app: typer.Typer) -> None:
    """Add the stage-two commands to `app`."""
    for fn in (train, eval_, embed, pairs, runs, heads):
        app.command(fn.__name__.rstrip("_"))(fn)


def train(
    head: Annotated[str, typer.Argument(help="A head (`embedcache heads`), e.g. cbmf-add, mlp-concat, late-min-loss, "
                                             "or your own: path/to/my_heads.py:NAME (docs/own-head.md).")],
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
    precision: Annotated[str, typer.Option("--precision", help="The head's compute: fp32, or bf16 (autocast; "
                                                               "recorded in the run id).")] = "fp32",
    stores: Annotated[str, typer.Option("--stores", help="On a GPU: auto (on the device when they fit its free "
                                                         "memory, else host memory), device, host.")] = "auto",
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the head's loss (GPU; slow to "
                                                             "start).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Train again even if this exact run exists.")] = False,
    ram_budget: RamBudget = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
    log: Annotated[str | None, typer.Option(
        "--log", help="Also log per-epoch scalars and final metrics to: tensorboard (pip install "
        "'embedcache[tensorboard]').")] = None,
    log_dir: Annotated[Path | None, typer.Option("--log-dir", help="Where --log writes (default: results/tb).")] = None,
) -> None:
    """Stage two: train a head from the stores and write its run (one JSON + checkpoint under results/runs)."""
    from embedcache.fusion.tracking import LOGGERS
    from embedcache.fusion.trainers import DataSpec, RunOptions, TrainCfg, fit_run
    from embedcache.fusion.user_heads import resolve_head

    data = DataSpec(setting=setting, dataset=dataset, backbones=tuple(backbone or ()), tokens=tokens,
                    ram_budget=_bytes(ram_budget))
    run = RunOptions(data_dir=use_data_dir(data_dir), device=device, force=force, stores=stores, compile=compile_)
    options = {**parse_options(option), **({"targets": targets} if targets else {})}
    with user_errors():
        head = resolve_head(head)  # my_heads.py:NAME imports the file, which registers NAME
        if log:
            LOGGERS.get(log)  # an unknown logger fails before training, not after
        cfg = TrainCfg(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, precision=precision)
        done = fit_run(head, data, cfg, run, options)
        for result in done.values():
            show_trained(result, data_dir=run.data_dir, device=device)
            if log:
                show_logged(result, log, log_dir)


def _print_run(run: Any) -> None:
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
    """Run an evaluation task on a trained run and record its metrics in the run's JSON. Without `-o split=...`
    a task evaluates the `test` split, or `val` when the stores have no `test` split; the output says which."""
    from embedcache.fusion.tasks import evaluate_run

    with user_errors():
        metrics = evaluate_run(run, task, dataset=dataset, data_dir=use_data_dir(data_dir), device=device,
                               ram_budget=_bytes(ram_budget), **parse_options(option))
        show_eval(run, task, metrics, dataset=dataset)


def embed(
    run: Annotated[str, typer.Argument(help="A run id or run directory.")],
    store: Annotated[str, typer.Option("--store", help="Input store: DATASET/BACKBONE or a path.")],
    out_path: Annotated[Path | None, typer.Option("--out", help="Output store path.")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    force: Annotated[bool, typer.Option("--force")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Write a trained head's output embeddings for a store as a new, reusable store."""
    from embedcache.fusion.export import ExportCfg
    from embedcache.fusion.export import embed as run_embed

    with user_errors():
        path = run_embed(run, store=_store_ref(store, data_dir), cfg=ExportCfg(out=out_path, force=force),
                         device=device, data_dir=use_data_dir(data_dir))
    out.print(f"wrote {path}")


def _store_ref(ref: str, data_dir: Path | None) -> Path:
    from embedcache.paths import store_path

    if ref.endswith(".h5") or Path(ref).exists():
        return Path(ref)
    dataset, _, backbone = ref.partition("/")
    return store_path(dataset, backbone, use_data_dir(data_dir))


def pairs(
    dataset: Annotated[str, typer.Argument(help="A captioned dataset with a sentence-embedding store.")],
    model: Annotated[str, typer.Option("--model", "-m", help="The sentence-embedding store's backbone.")] = "minilm",
    threshold: Annotated[float, typer.Option("--threshold", help="Cosine threshold.")] = 0.7,
    split: Annotated[str, typer.Option("--split")] = "train",
    scope: Annotated[str, typer.Option("--scope", help="'image': captions of the same image (the authors'); "
                                       "'topk': each caption's --top-k nearest across images.")] = "image",
    top_k: Annotated[int | None, typer.Option("--top-k", help="Bound of --scope topk.")] = None,
    force: Annotated[bool, typer.Option("--force")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Mine caption pairs with cosine >= threshold (the CBMF text-text training set), stored and versioned."""
    from embedcache.fusion.mining import ensure_pairs

    with user_errors():
        mined = ensure_pairs(_store_ref(f"{dataset}/{model}", data_dir), split, threshold, scope=scope, top_k=top_k,
                             force=force, data_dir=use_data_dir(data_dir))
    where = "within each image" if scope == "image" else f"top {top_k} per caption across images"
    out.print(f"{len(mined)} pairs with cosine >= {threshold} {where} in {dataset}/{split} ({model})")


def runs() -> None:
    """Every finished run: id, head, stores, seed, headline metrics."""
    from embedcache.fusion.runs import list_runs

    table = Table("run", "head", "inputs", "seed", "metrics")
    for run in list_runs():
        rec = run.record
        inputs = ", ".join(f"{i.get('dataset')}/{i.get('backbone')}" for i in rec.get("inputs", []))
        flat = _flatten(run.metrics)
        shown = ", ".join(f"{k}={v:.3f}" for k, v in list(flat.items())[:3])
        table.add_row(run.id, str(rec.get("head", {}).get("name", rec.get("task", "-"))), inputs,
                      str(rec.get("seed", "-")), shown)
    out.print(table)


def heads() -> None:
    """Every name `embedcache train` accepts (heads, late fusions, floors), its trainer and default setting."""
    from embedcache.fusion.trainers import trainable

    table = Table("name", "kind", "default setting", "description")
    for name, trainer in trainable():
        table.add_row(name, trainer.name, trainer.default_setting(name) or "-", trainer.describe(name))
    out.print(table)
