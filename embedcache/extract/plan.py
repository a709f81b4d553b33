"""Stage one, before the first batch: load the dataset's splits and the encoder, fix the store's attributes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from embedcache import __version__
from embedcache.backbones import create_encoder, resolve_spec
from embedcache.backbones.base import Encoder
from embedcache.datasets import Dataset, Split, create_dataset
from embedcache.datasets.common import file_digests
from embedcache.devices import resolve_device
from embedcache.errors import UserError
from embedcache.paths import safe_name, store_path
from embedcache.store import DTYPES

OnError = Literal["fail", "skip"]


class ExtractError(UserError, RuntimeError):
    """An item could not be embedded under `--on-error fail` (names the item and the fix)."""


@dataclass
class SplitReport:
    """What happened to one split: shown in the summary table and returned to callers."""

    split: str
    rows: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    status: str = "extracted"  # extracted | up to date | partial (this part's shards done, others pending)


@dataclass
class ExtractPlan:
    """Everything fixed before the first batch: dataset, encoder, items per split, store attributes."""

    dataset: Dataset
    encoder: Encoder
    splits: dict[str, Split]
    path: Path
    attrs: dict[str, Any]
    device: torch.device


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_workers() -> int:
    """Decode workers: leave the model at least one core on a small machine."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def plan_extraction(
    dataset: str,
    model: str,
    *,
    root: str | Path | None = None,
    data_dir: str | Path | None = None,
    dataset_options: dict[str, Any] | None = None,
    store_name: str | None = None,
    limit: int | None = None,
    tokens: bool = False,
    pooling: str | None = None,
    weights: str | Path | None = None,
    dtype: str = "float16",
    shard_size: int = 1024,
    device: str | None = None,
) -> ExtractPlan:
    """Load the dataset's splits and the encoder, and compute the store's attributes (its fingerprint)."""
    if dtype not in DTYPES:
        raise ExtractError(f"--dtype {dtype!r} is not a store dtype; use one of {', '.join(DTYPES)}")
    safe_name(store_name or dataset, "store name (--name)")  # before hours of work, not at the first write
    spec = resolve_spec(model)
    ds = create_dataset(dataset, root=root, data_dir=data_dir, **(dataset_options or {}))
    if spec.modality not in ds.modalities:
        raise ExtractError(
            f"{model!r} embeds {spec.modality}, but dataset {dataset!r} has only {', '.join(ds.modalities)}; "
            f"see `embedcache models` for the {'/'.join(ds.modalities)} backbones"
        )
    splits = {name: _limit(ds.load_split(name), limit) for name in ds.splits()}
    dev = resolve_device(device)
    encoder = create_encoder(model, pooling=pooling, weights=weights, device=dev)
    name = store_name or dataset
    attrs = {
        "backbone": model,
        **encoder.describe(),
        "modality": spec.modality,
        "dtype": dtype,
        "tokens": tokens,
        "dataset": name,
        "dataset_adapter": dataset,
        "dataset_version": ds.version,
        "dataset_options": ds.options(),
        "limit": limit,
        "split_sizes": {s: len(sp.items(spec.modality)) for s, sp in splits.items()},
        "classes": list(ds.classes),
        "label_kind": ds.label_kind,
        "shard_size": shard_size,
        "embedcache_version": __version__,
    }
    sources = file_digests(ds.source_files())
    if sources:  # only datasets read from files: the stores of generated ones keep their fingerprints
        attrs["dataset_files"] = sources
    return ExtractPlan(ds, encoder, splits, store_path(name, model, data_dir), attrs, dev)


def _limit(split: Split, limit: int | None) -> Split:
    """The first `limit` items of each modality; pairs kept only where both ends survive."""
    if limit is None:
        return split
    images, texts = split.images[:limit], split.texts[:limit]
    kept = {it.id for it in texts}
    pairs = [p for p in split.pairs if p.a in kept and p.b in kept]
    return Split(split.name, images, texts, pairs)


