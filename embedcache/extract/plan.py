"""Stage one, before the first batch: load the dataset's splits and the encoder, fix the store's attributes."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from embedcache import __version__
from embedcache.backbones import create_encoder, resolve_spec
from embedcache.backbones.base import Encoder
from embedcache.datasets import Dataset, Split, create_dataset
from embedcache.datasets.common import file_digests
from embedcache.devices import resolve_device
from embedcache.errors import BadInputError, UserError
from embedcache.extract.gpu_decode import begun_on_pil, check_decode, decode_attrs, resolve_decode
from embedcache.extract.idle import InputTiming
from embedcache.paths import safe_name, store_path
from embedcache.store import DTYPES

OnError = Literal["fail", "skip"]
# progress(split, total) -> advance(n, **fields): called with rows done (negative: a lost shard's rows taken back);
# the Ray engine adds fields such as workers="2/2" for the view.
Progress = Callable[[str, int], Callable[..., None]]


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
    workers: list[WorkerStat] = field(default_factory=list)  # Ray path: who encoded this split's shards
    timing: InputTiming | None = None  # in process: seconds waiting for inputs vs busy (extract/idle.py)


@dataclass
class WorkerStat:
    """One Ray worker's share of a split: shards and rows it encoded, its busy seconds, its restarts."""

    name: str  # "w<slot> <host>:<pid>" (the pid of its latest incarnation)
    shards: int = 0
    items: int = 0
    seconds: float = 0.0
    restarts: int = 0

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


@dataclass
class ExtractPlan:
    """Everything fixed before the first batch: dataset, encoder, items per split, store attributes."""

    dataset: Dataset
    encoder: Encoder
    splits: dict[str, Split]
    path: Path
    attrs: dict[str, Any]
    device: torch.device
    decode_device: torch.device | None = None  # None: PIL in the workers; else JPEG bytes decoded on this device


def default_workers() -> int:
    """Decode workers: leave the model at least one core on a small machine."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True)
class ExtractCfg:
    """What to extract, as plain data: the store's inputs (a Ray worker receives it and plans the same store).

    `root` is the dataset's raw-data folder (None: its default under the data dir); `data_dir` holds the
    stores; `weights` a local folder or file, or "random" (the architecture with seeded random weights, for speed
    work only: the store is marked and every pipeline refuses it); `device` None means cuda if there is one.
    """

    dataset: str
    model: str
    root: str | Path | None = None
    data_dir: str | Path | None = None
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    store_name: str | None = None
    limit: int | None = None
    tokens: bool = False
    pooling: str | None = None
    weights: str | Path | None = None
    dtype: str = "float16"
    shard_size: int = 1024
    device: str | None = None
    decode: str = "auto"  # auto | cpu | gpu: images decoded by PIL in the workers, or from JPEG bytes on the device


@dataclass(frozen=True)
class RunCfg:
    """How to run a plan: which splits, batch size, decode workers, staleness, bad items, this process's part."""

    splits: tuple[str, ...] | None = None
    batch_size: int | None = None
    workers: int | None = None  # image decode processes (None: default_workers())
    force: bool = False
    on_error: OnError = "fail"
    part: tuple[int, int] = (0, 1)


def plan_extraction(cfg: ExtractCfg) -> ExtractPlan:
    """Load the dataset's splits and the encoder, and compute the store's attributes (its fingerprint); resolve
    `cfg.decode` (the tensor decode path adds a `decode` attribute, the PIL path none)."""
    if cfg.dtype not in DTYPES:
        raise ExtractError(f"--dtype {cfg.dtype!r} is not a store dtype; use one of {', '.join(DTYPES)}")
    check_decode(cfg.decode)
    name = cfg.store_name or cfg.dataset
    safe_name(name, "store name (--name)")  # before hours of work, not at the first write
    spec = resolve_spec(cfg.model)
    ds = create_dataset(cfg.dataset, root=cfg.root, data_dir=cfg.data_dir, **dict(cfg.dataset_options))
    if spec.modality not in ds.modalities:
        raise ExtractError(
            f"{cfg.model!r} embeds {spec.modality}, but dataset {cfg.dataset!r} has only "
            f"{', '.join(ds.modalities)}; see `embedcache models` for the {'/'.join(ds.modalities)} backbones"
        )
    splits = {s: _limit(ds.load_split(s), cfg.limit) for s in ds.splits()}
    dev = resolve_device(cfg.device)
    encoder = create_encoder(cfg.model, pooling=cfg.pooling, weights=cfg.weights, device=dev)
    attrs = {
        "backbone": cfg.model,
        **encoder.describe(),
        "modality": spec.modality,
        "dtype": cfg.dtype,
        "tokens": cfg.tokens,
        "dataset": name,
        "dataset_adapter": cfg.dataset,
        "dataset_version": ds.version,
        "dataset_options": ds.options(),
        "limit": cfg.limit,
        "split_sizes": {s: len(sp.items(spec.modality)) for s, sp in splits.items()},
        "classes": list(ds.classes),
        "label_kind": ds.label_kind,
        "shard_size": cfg.shard_size,
        "embedcache_version": __version__,
    }
    sources = file_digests(ds.source_files())
    if sources:  # only datasets read from files: the stores of generated ones keep their fingerprints
        attrs["dataset_files"] = sources
    path = store_path(name, cfg.model, cfg.data_dir)
    plan = ExtractPlan(ds, encoder, splits, path, attrs, dev)
    sample = next(iter(splits.values())).items(spec.modality)[:16] if splits else []
    if resolve_decode(cfg.decode, dev, encoder, sample, built_on_pil=begun_on_pil(path)) == "gpu":
        plan = use_tensor_decode(plan, dev)
    return plan


def use_tensor_decode(plan: ExtractPlan, device: torch.device) -> ExtractPlan:
    """The plan with its images decoded and preprocessed as tensors on `device` (the store then records it).
    plan_extraction calls it for `--decode gpu` on CUDA; the tests call it with the CPU to run the whole path."""
    if plan.encoder.tensor_preprocess() is None:
        raise BadInputError(f"backbone {plan.encoder.spec.name!r} has no tensor preprocessing; use `--decode cpu`")
    return replace(plan, decode_device=device, attrs={**plan.attrs, "decode": decode_attrs(device)})


def _limit(split: Split, limit: int | None) -> Split:
    """The first `limit` items of each modality; pairs kept only where both ends survive."""
    if limit is None:
        return split
    images, texts = split.images[:limit], split.texts[:limit]
    kept = {it.id for it in texts}
    pairs = [p for p in split.pairs if p.a in kept and p.b in kept]
    return Split(split.name, images, texts, pairs)


