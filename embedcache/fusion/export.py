"""A trained head's outputs as a new store: aligned embeddings become reusable inputs themselves.

`embed(run, store=...)` passes every split of one store through the head side it was trained for (matched
by backbone name, else by modality) and writes `<data-dir>/stores/<dataset>/run_<run id>_<backbone>.h5`
with StoreWriter: ids, labels, links and pairs copied from the source, pooled = the head's (N, d) outputs.
The store's attrs name the run, the head and the source store's fingerprint, so it is refused as stale when
either changes. Token-level outputs are not written (pooled outputs only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedcache import __version__
from embedcache.devices import resolve_device
from embedcache.errors import BadInputError
from embedcache.fusion.heads import Head
from embedcache.fusion.runs import Run, open_run
from embedcache.fusion.views import View, load_view
from embedcache.paths import store_path
from embedcache.store import ShardData, StoreWriter, open_store

SHARD_ROWS = 50_000
# Tokens per evaluation batch: the fusion encoder's feed-forward holds (rows, T, 4d) activations, so 1,024 ViT
# rows of 197 tokens held ~1.6 GB at d=512; 32k tokens keep it near 50 MB whatever the rows' lengths.
TOKEN_BUDGET = 32_768


def encode_view(head: Head, m: int, view: View, *, rows: np.ndarray | None = None, batch_size: int = 1024,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Head side `m` over every row of `view` (or only `rows`, in their order), eval mode, no gradients ->
    (N, out_dim) fp32 CPU. With tokens, a batch holds at most TOKEN_BUDGET tokens (of the longest row) as well
    as `batch_size` rows."""
    device = device or next(head.parameters()).device
    view.to(device)
    head.eval()
    if view.uses_tokens:
        batch_size = max(1, min(batch_size, TOKEN_BUDGET // max(1, view.max_tokens())))
    wanted = None if rows is None else torch.from_numpy(np.unique(rows))  # sorted, each row encoded once
    out = torch.zeros(len(view) if wanted is None else len(wanted), head.out_dim)  # batches come sorted by length
    with torch.no_grad():
        for batch in view.in_order(batch_size, by_length=True, only=wanted):  # block by block when streamed
            at = batch.cpu() if wanted is None else torch.searchsorted(wanted, batch.cpu())
            out[at] = head.encode(m, *view.gather(batch)).float().cpu()
    return out if wanted is None else out[torch.searchsorted(wanted, torch.from_numpy(rows))]


def match_input(run: Run, attrs: dict[str, Any], dim: int) -> int:
    """The head input a store feeds: the one with the store's backbone, else the only one of its modality."""
    inputs = run.inputs
    by_backbone = [i for i, x in enumerate(inputs) if x["backbone"] == attrs.get("backbone")]
    by_modality = [i for i, x in enumerate(inputs) if x["modality"] == attrs.get("modality")]
    found = by_backbone if len(by_backbone) == 1 else by_modality if len(by_modality) == 1 else []
    if not found:
        sides = ", ".join(f"{i}: {x['backbone']} ({x['modality']})" for i, x in enumerate(inputs))
        raise BadInputError(f"cannot tell which input of run {run.id} the store of backbone {attrs.get('backbone')!r} "
                            f"({attrs.get('modality')}) feeds; its inputs are {sides}. Pass modality=INDEX")
    m = found[0]
    if run.head_spec.in_dims[m] != dim:
        raise BadInputError(f"run {run.id} input {m} takes {run.head_spec.in_dims[m]}-d vectors but the store holds "
                            f"{dim}-d ones ({attrs.get('backbone')}); embed a store of {inputs[m]['backbone']}")
    return m


@dataclass(frozen=True)
class ExportCfg:
    """What `embed` writes. modality: the head input index (default: matched by backbone, else by modality);
    splits: the source splits to pass (default all); the new store is `<dataset>/<name>` (default name
    `run:<run id>:<source backbone>`, dataset the source's) unless `out` is given; `batch_size` rows per
    forward pass; `dtype` recorded in the attrs; `force` replaces a stale store of the same path."""

    modality: int | None = None
    splits: tuple[str, ...] | None = None
    out: str | Path | None = None
    name: str | None = None
    dataset: str | None = None
    batch_size: int = 1024
    dtype: str = "float32"
    force: bool = False


EXPORT = ExportCfg()


def embed(
    run: str | Path | Run, *, store: str | Path, cfg: ExportCfg = EXPORT, data_dir: str | Path | None = None,
    device: str | None = None, runs_root: str | Path | None = None,
) -> Path:
    """Write the outputs of `run`'s head on every split (or `cfg.splits`) of `store` as a new store (where and
    under which name: `cfg`); returns its path. Token inputs are used when the run trained on tokens. A store
    with the same fingerprint is kept; a stale one needs `cfg.force`.
    """
    run = run if isinstance(run, Run) else open_run(run, runs_root)
    with open_store(Path(store)) as src:
        attrs, source_fp, names = dict(src.attrs), src.fingerprint, list(cfg.splits or src.splits)
        dim = src.split(names[0]).dim
    m = match_input(run, attrs, dim) if cfg.modality is None else cfg.modality
    tokens = bool(run.inputs[m]["tokens"])
    backbone = cfg.name or f"run:{run.id}:{attrs.get('backbone', Path(store).stem)}"
    dataset = cfg.dataset or str(attrs.get("dataset", Path(store).parent.name))
    path = Path(cfg.out) if cfg.out else store_path(dataset, backbone, data_dir)
    new_attrs = {
        "backbone": backbone, "modality": attrs.get("modality", ""), "dataset": dataset, "dtype": cfg.dtype,
        "classes": attrs.get("classes", []), "label_kind": attrs.get("label_kind", "none"), "tokens": False,
        "model_id": f"run:{run.id}", "run_id": run.id, "head": run.record["head"], "head_input": m,
        "source_store": str(store),
        "source_fingerprint": source_fp, "source_tokens": tokens, "splits": names, "embedcache_version": __version__,
    }
    dev = resolve_device(device)
    head = run.load_head(dev)
    with StoreWriter(path, new_attrs, force=cfg.force) as writer:
        for split in names:
            if writer.has_split(split):
                continue
            view = load_view(store, split, tokens=tokens)
            emb = encode_view(head, m, view, batch_size=cfg.batch_size, device=dev).numpy()
            _write_split(writer, split, view, emb)
    return path


def _write_split(writer: StoreWriter, split: str, view: View, emb: np.ndarray) -> None:
    starts = list(range(0, max(1, len(view)), SHARD_ROWS))
    for k, a in enumerate(starts):
        b = min(len(view), a + SHARD_ROWS)
        writer.write_shard(split, k, ShardData(
            ids=[str(i) for i in view.ids[a:b]], pooled=emb[a:b],
            labels=None if view.labels is None else view.labels[a:b],
            links=None if view.links is None else [str(x) for x in view.links[a:b]]))
    writer.finish_split(split, len(starts), pairs=None if view.pairs is None else (
        [str(x) for x in view.pairs[0]], [str(x) for x in view.pairs[1]], np.asarray(view.pairs[2])))
