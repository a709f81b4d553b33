"""Stage-one commands: extract, download, ls, info, datasets, models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from embedcache.cli.common import DataDir, out, parse_options, progress, size, use_data_dir, user_errors


def register(app: typer.Typer) -> None:
    """Add the stage-one commands to `app`."""
    for fn in (extract, download, ls, info, verify, datasets, models):
        app.command(fn.__name__)(fn)


def extract(
    dataset: Annotated[str, typer.Argument(help="A registered dataset (see `embedcache datasets`).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Backbone name, or hf:<id|dir> / timm:<name>.")],
    split: Annotated[list[str] | None, typer.Option("--split", help="Split(s) to extract (default: all).")] = None,
    tokens: Annotated[bool, typer.Option("--tokens", help="Also store token sequences (ragged).")] = False,
    root: Annotated[Path | None, typer.Option("--root", help="Local copy of the raw data.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Store name for generic datasets.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Dataset option KEY=VALUE.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: cuda if any).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=0, help="Image decode processes.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="First N items of each split.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild a store whose fingerprint changed.")] = False,
    on_error: Annotated[str, typer.Option("--on-error", help="fail | skip (skips are recorded).")] = "fail",
    pooling: Annotated[str | None, typer.Option("--pooling", help="Override the backbone's pooling.")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="Local weights for the backbone.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float16 | float32 on disk.")] = "float16",
    part: Annotated[str, typer.Option("--part", help="K/N: this process writes every N-th shard.")] = "0/1",
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Rows per resumable shard.")] = 1024,
    ray: Annotated[bool, typer.Option("--ray", help="Encode the shards on a pool of Ray workers.")] = False,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="auto | HOST:PORT | ray://HOST:PORT (default: as ray.init(), else a local cluster).")
    ] = None,
    gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", min=0, help="GPUs per Ray worker.")] = 0,
    cpus_per_worker: Annotated[float, typer.Option("--cpus-per-worker", min=0, help="CPUs per Ray worker.")] = 1,
    max_workers: Annotated[int | None, typer.Option("--max-workers", min=1, help="Ray workers at most.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Stage one: embed DATASET with a frozen backbone into <data-dir>/stores/DATASET/MODEL.h5."""
    from embedcache.extract import ExtractCfg, RunCfg
    from embedcache.extract import extract as run_extract

    if on_error not in ("fail", "skip"):
        raise typer.BadParameter("--on-error must be 'fail' or 'skip'")
    k, n = parse_part(part)
    cfg = ExtractCfg(dataset, model, root=root, data_dir=use_data_dir(data_dir), dataset_options=parse_options(option),
                     store_name=name, limit=limit, tokens=tokens, pooling=pooling, weights=weights, dtype=dtype,
                     shard_size=shard_size, device=device)
    run = RunCfg(splits=tuple(split) if split else None, batch_size=batch_size, workers=workers, force=force,
                 on_error=on_error, part=(k, n))
    bars = progress()
    with user_errors(), bars:
        if not ray:
            path, reports = run_extract(cfg, run, progress=_bar_factory(bars))
        else:
            from embedcache.extract.ray_engine import ClusterCfg, extract_on_ray

            cluster = ClusterCfg(address=ray_address, max_workers=max_workers, gpus_per_worker=gpus_per_worker,
                                 cpus_per_worker=cpus_per_worker)
            path, reports = extract_on_ray(cfg, run, cluster, progress=_bar_factory(bars))
    _extract_summary(path, reports)
    _worker_summary(reports)


def parse_part(part: str) -> tuple[int, int]:
    """--part K/N as (k, n) with 0 <= k < n, else a usage error with an example."""
    k, sep, n = part.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise typer.BadParameter(f"expects K/N with 0 <= K < N (process K of N, e.g. 0/4); found {part!r}",
                                 param_hint="--part")
    return int(k), int(n)


def _bar_factory(bars: Progress):
    import time

    def make(split: str, total: int):
        task = bars.add_task(split, total=total, rate="")
        start = time.perf_counter()
        done = [0]

        def advance(n: int, workers: str = "") -> None:
            done[0] += n  # n < 0: a lost Ray worker's rows, to be redone
            rate = done[0] / max(time.perf_counter() - start, 1e-9)
            alive = f"  workers {workers}" if workers else ""
            bars.update(task, advance=n, rate=f"{rate:8.1f} items/s{alive}")

        return advance

    return make


def _worker_summary(reports) -> None:
    """Ray runs: one row per worker over all splits (shards, rows, busy seconds, items/s, restarts)."""
    from embedcache.extract import WorkerStat

    total: dict[str, WorkerStat] = {}
    for r in reports:
        for w in r.workers:
            t = total.setdefault(w.name.split()[0], WorkerStat(w.name))
            t.name, t.shards, t.items, t.seconds, t.restarts = (
                w.name, t.shards + w.shards, t.items + w.items, t.seconds + w.seconds, t.restarts + w.restarts)
    if not total:
        return
    table = Table(title="Ray workers")
    for col in ("worker", "shards", "items", "busy", "items/s", "restarts"):
        table.add_column(col, justify="left" if col == "worker" else "right")
    for t in total.values():
        table.add_row(t.name, str(t.shards), str(t.items), f"{t.seconds:.1f}s", f"{t.items_per_s:.1f}", str(t.restarts))
    out.print(table)


def _extract_summary(path: Path, reports) -> None:
    from embedcache.store import open_store

    table = Table(title=str(path))
    for col in ("split", "status", "rows", "dim", "dtype", "tokens", "skipped", "time"):
        table.add_column(col, justify="right" if col in ("rows", "dim", "skipped", "time") else "left")
    complete = path.exists()
    store = open_store(path) if complete else None
    try:
        for r in reports:
            sp = store.split(r.split) if store and r.split in store.splits else None
            table.add_row(
                r.split, r.status, str(len(sp) if sp else r.rows), str(sp.dim if sp else "-"),
                store.attrs["dtype"] if store else "-", "yes" if sp is not None and sp.has_tokens else "no",
                str(len(sp.skipped) if sp else len(r.skipped)), f"{r.seconds:.1f}s",
            )
    finally:
        if store:
            store.close()
    out.print(table)
    if complete:
        out.print(f"size on disk: {size(path.stat().st_size)}")
    if all(r.status == "up to date" for r in reports):
        out.print("nothing to do: every split is already extracted with the same fingerprint")
    for r in reports:
        for item_id, reason in r.skipped[:10]:
            out.print(f"[yellow]skipped[/] {r.split}/{escape(item_id)}: {escape(reason)}")
        if len(r.skipped) > 10:
            out.print(f"[yellow]... and {len(r.skipped) - 10} more skipped in {r.split}[/] (see `embedcache info`)")


def download(
    dataset: Annotated[str, typer.Argument(help="A dataset with an official download (see `embedcache datasets`).")],
    dest: Annotated[Path | None, typer.Option("--dest", help="Target folder (default <data-dir>/raw/DATASET).")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="A mirror serving the same file names.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Fetch a dataset's official archives into its published layout (resumable, checksummed)."""
    from embedcache.datasets.download import default_dest
    from embedcache.datasets.download import download as run_download

    with user_errors():
        path = run_download(dataset, dest or default_dest(dataset, use_data_dir(data_dir)), base_url=base_url)
    out.print(f"{dataset} is in {path}")


def ls(data_dir: DataDir = None) -> None:
    """Every store under <data-dir>/stores: splits, rows, dim, size, fingerprint, complete or not."""
    from embedcache.store import list_stores

    stores = list_stores(use_data_dir(data_dir))
    if not stores:
        out.print(f"no stores under {use_data_dir(data_dir) / 'stores'}; make one with `embedcache extract`")
        return
    table = Table()
    for col in ("store", "splits (rows)", "dim", "tokens", "skipped", "size", "fingerprint", "state"):
        table.add_column(col, overflow="fold")
    for s in stores:
        state = "complete" if s.complete and not s.shards_pending else f"in progress ({s.shards_pending} shards)"
        if s.damaged:  # listed, not fatal: the healthy stores still show
            state = f"[red]damaged[/]: {escape(s.damaged)}"
        elif s.not_results:  # never to be mistaken for a real backbone's vectors
            state += f", [yellow]{escape(s.not_results)}[/]"
        table.add_row(
            f"{s.dataset}/{s.backbone}", " ".join(f"{k}:{v}" for k, v in s.splits.items()), str(s.dim or "-"),
            "yes" if s.tokens else "no", str(s.skipped), size(s.size_bytes), (s.fingerprint or "-")[:8], state,
        )
    out.print(table)


def info(
    store: Annotated[str, typer.Argument(help="A store path, or DATASET/BACKBONE.")],
    data_dir: DataDir = None,
) -> None:
    """A store's attributes and splits."""
    from embedcache.store import open_store

    with user_errors():
        path = _store_arg(store, data_dir)
        st = open_store(path)
    with user_errors(), st:
        table = Table(title=str(path), show_header=False)
        for key, value in sorted(st.attrs.items()):
            table.add_row(key, escape(json.dumps(value) if not isinstance(value, str) else value))
        out.print(table)
        splits = Table()
        for col in ("split", "rows", "dim", "tokens", "token rows", "labels", "links", "pairs", "skipped"):
            splits.add_column(col)
        for name in st.splits:
            sp = st.split(name)
            splits.add_row(
                name, str(len(sp)), str(sp.dim), "yes" if sp.has_tokens else "no",
                str(int(sp.offsets()[-1])) if sp.has_tokens else "-",
                "-" if sp.labels is None else str(sp.labels.shape), "yes" if sp.links is not None else "no",
                "-" if sp.pairs is None else str(len(sp.pairs[0])), str(len(sp.skipped)),
            )
        out.print(splits)
        for name in st.splits:
            for item_id, reason in st.split(name).skipped:
                out.print(f"[yellow]skipped[/] {name}/{escape(item_id)}: {escape(reason)}")


def _store_arg(store: str, data_dir: Path | None) -> Path:
    """A store path, or DATASET/BACKBONE under the data dir."""
    from embedcache.paths import store_path

    path = Path(store)
    if not path.suffix == ".h5" and "/" in store:
        dataset, backbone = store.split("/", 1)
        path = store_path(dataset, backbone, use_data_dir(data_dir))
    return path


def verify(
    stores: Annotated[list[str] | None, typer.Argument(help="Store paths or DATASET/BACKBONE (default: all).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Check stores: structure, shapes, ids and token offsets, finite values, the fingerprint recomputed from the
    attributes and the checksums recorded at write time. One line per problem; exit 1 if any store is damaged."""
    from embedcache.store import list_stores, verify_store

    with user_errors():
        paths = [_store_arg(s, data_dir) for s in stores] if stores else [
            s.path for s in list_stores(use_data_dir(data_dir))]
    if not paths:
        out.print(f"no stores under {use_data_dir(data_dir) / 'stores'}")
    damaged = 0
    for path in paths:
        problems = verify_store(path)
        damaged += bool(problems)
        for problem in problems:
            out.print(f"[red]damaged[/] {escape(str(path))}: {escape(problem)}", soft_wrap=True)
        if not problems:
            out.print(f"ok {escape(str(path))}", soft_wrap=True)
    if damaged:
        out.print(f"{damaged} of {len(paths)} store(s) damaged: rebuild each with "
                  "`embedcache extract DATASET --model BACKBONE --force`")
        raise typer.Exit(1)


def datasets() -> None:
    """The registered datasets."""
    from embedcache.datasets import DATASETS

    table = Table()
    for col in ("name", "modalities", "labels", "description"):
        table.add_column(col)
    for name in DATASETS.names():
        cls = DATASETS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        table.add_row(name, ",".join(cls.modalities), cls.label_kind, doc)
    out.print(table)


def models() -> None:
    """The registered backbones (any other: --model hf:<id|dir> or timm:<name>)."""
    from embedcache.backbones import BACKBONES

    table = Table()
    for col in ("name", "modality", "library", "model id", "revision", "pooling", "offline weights"):
        table.add_column(col)
    for name in BACKBONES.names():
        s = BACKBONES.get(name)
        table.add_row(name, s.modality, s.library, s.model_id, s.revision[:12], s.pooling, s.offline or "-")
    out.print(table)
