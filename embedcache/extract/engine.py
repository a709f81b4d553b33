"""Stage one, the in-process engine: run a frozen backbone over one dataset's items and write its store.

Each split's items are cut into fixed shards (`shard_size` rows, in the dataset's order). A shard is
encoded in batches that never cross its boundary, so a resumed run forms exactly the same batches as
an uninterrupted one and produces the same numbers. Images are decoded and preprocessed in DataLoader
worker processes; text is tokenised per batch after sorting the shard by length; finished shards are
handed to a background thread that writes them, so the model never waits on HDF5.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedcache.datasets import BadItemError, Item, Split
from embedcache.datasets.images import check_text, load_image
from embedcache.extract.gpu_decode import TensorDecodeItems, collate_prepared, finish_batch
from embedcache.extract.idle import InputTiming, idle_warning
from embedcache.extract.plan import (
    ExtractCfg,
    ExtractError,
    ExtractPlan,
    OnError,
    Progress,
    RunCfg,
    SplitReport,
    default_workers,
    plan_extraction,
)
from embedcache.store import ShardData, StoreWriter, open_store

log = logging.getLogger(__name__)

# encode(plan, split, shards, run, advance) -> (index, ShardData) per finished shard, in any order: the
# in-process encode_shards below, or a pool of Ray workers (extract/ray_engine.py).
ShardEncoder = Callable[[ExtractPlan, str, dict[int, list[Item]], RunCfg, Callable[..., None]],
                        Iterator[tuple[int, ShardData]]]


def extract(
    cfg: ExtractCfg, run: RunCfg = RunCfg(), *, progress: Progress | None = None,
) -> tuple[Path, list[SplitReport]]:
    """Embed `cfg.dataset` with backbone `cfg.model` into <data-dir>/stores/<dataset>/<model>.h5, in this process.

    Resumes from finished shards; a split already complete with the same fingerprint is left as it is.
    `progress(split, total)` returns a callback advanced by the number of rows done (the CLI's bars).
    Returns the store path and one report per split.
    """
    plan = plan_extraction(cfg)
    return plan.path, run_plan(plan, run, progress=progress)


def run_plan(
    plan: ExtractPlan, run: RunCfg = RunCfg(), *, progress: Progress | None = None, encode: ShardEncoder | None = None,
) -> list[SplitReport]:
    """Execute a plan: encode every missing shard of the chosen splits (with `encode`, default in process), write
    each through the store writer as it finishes, and merge finished splits."""
    chosen = list(run.splits or plan.splits)
    unknown = [s for s in chosen if s not in plan.splits]
    if unknown:
        raise ExtractError(f"unknown split(s) {unknown} for {plan.attrs['dataset']!r}; known: {', '.join(plan.splits)}")
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    reports = []
    with StoreWriter(plan.path, plan.attrs, force=run.force, part=run.part) as writer:
        for name in chosen:
            reports.append(_extract_split(plan, writer, name, run, progress, encode))
    return reports


def split_shards(plan: ExtractPlan, split: str) -> list[list[Item]]:
    """The split's items in store order (repeated ids marked bad) cut into shards of `shard_size`; at least one
    shard, empty for an empty split. Both engines cut here, so a shard's items never depend on the engine."""
    items = _mark_duplicates(plan.splits[split].items(plan.encoder.spec.modality))
    size = plan.attrs["shard_size"]
    return [items[a:a + size] for a in range(0, len(items), size)] or [[]]


def encode_shards(
    plan: ExtractPlan, split: str, shards: dict[int, list[Item]], run: RunCfg, advance: Callable[..., None],
    timing: InputTiming | None = None,
) -> Iterator[tuple[int, ShardData]]:
    """In process: encode whole shards in order, in batches that never cross a shard's boundary. `timing`, when
    given, accumulates the seconds spent waiting for inputs vs busy with the model."""
    image = plan.encoder.spec.modality == "image"
    encode = _encode_images if image else _encode_texts
    return encode(plan, shards, tokens=plan.attrs["tokens"], batch_size=run.batch_size or (64 if image else 128),
                  workers=run.workers, on_error=run.on_error, advance=advance,
                  timing=timing or InputTiming(input_cause(plan)))


def input_cause(plan: ExtractPlan) -> str:
    """What the model waits on in this plan (a key of extract.idle.CAUSES)."""
    if plan.encoder.spec.modality == "text":
        return "tokeniser"
    return "image-decode" if plan.decode_device is None else "disk-read"


def _extract_split(
    plan: ExtractPlan, writer: StoreWriter, name: str, run: RunCfg, progress: Progress | None,
    encode: ShardEncoder | None,
) -> SplitReport:
    report = SplitReport(name)
    if encode is None:  # in process: this split's input wait is measured (a Ray pool's workers are not)
        report.timing = InputTiming(input_cause(plan))
        encode = partial(encode_shards, timing=report.timing)
    if writer.has_split(name):
        report.status = "up to date"
        return report
    split = plan.splits[name]
    every = split_shards(plan, name)
    n_shards = len(every)
    done = writer.done_shards(name)
    k, n = run.part
    shards = {i: every[i] for i in range(n_shards) if i % n == k and i not in done}
    advance = progress(name, sum(len(s) for s in shards.values())) if progress else (lambda n, **fields: None)
    start = time.perf_counter()
    with _BackgroundWriter(writer, name) as sink:
        for index, data in encode(plan, name, shards, run, advance):
            sink.put(index, data)
    report.seconds = time.perf_counter() - start
    if report.timing is not None and (warning := idle_warning(report.timing, plan.device.type)):
        log.warning("split %s: %s", name, warning)
    pairs = _pairs(split)
    if writer.finish_split(name, n_shards, pairs=pairs):
        with open_store(plan.path) as store:
            sp = store.split(name)
            report.rows, report.skipped = len(sp), list(sp.skipped)
    else:
        report.status = "partial"
        report.rows = sum(len(s) for s in shards.values())
    return report


def _pairs(split: Split) -> tuple[list[str], list[str], np.ndarray] | None:
    if not split.pairs:
        return None
    return [p.a for p in split.pairs], [p.b for p in split.pairs], np.array([p.score for p in split.pairs], np.float32)


class _BackgroundWriter:
    """Writes finished shards on a thread so the next shard's batches start at once."""

    def __init__(self, writer: StoreWriter, split: str) -> None:
        self.writer, self.split = writer, split
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _BackgroundWriter:
        self.thread.start()
        return self

    def _run(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write_shard(self.split, *job)
                except BaseException as exc:  # surfaced in the main thread by put()/__exit__
                    self.error = exc

    def put(self, index: int, data: ShardData) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((index, data))

    def __exit__(self, *exc: object) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error


# --- per-item checks -------------------------------------------------------------------------------


def _bad(item_id: str, reason: str, on_error: OnError, skipped: list[tuple[str, str]]) -> None:
    if on_error == "fail":
        raise ExtractError(
            f"item {item_id!r}: {reason}\n"
            f"Fix or remove it, or rerun with `--on-error skip` to record it as skipped and go on."
        )
    skipped.append((item_id, reason))


def _mark_duplicates(items: list[Item]) -> list[Item]:
    """A repeated id is an error of the later occurrence (a store row must name one item)."""
    seen: set[str] = set()
    out = []
    for it in items:
        if it.id in seen and not it.error:
            it = dataclasses.replace(it, error=f"duplicate id {it.id!r} in this split")
        seen.add(it.id)
        out.append(it)
    return out


def _annotations(plan: ExtractPlan, items: list[Item]) -> tuple[np.ndarray | None, list[str] | None]:
    """Labels (int64, -1 for none; or multi-hot uint8) and links for the kept rows."""
    kind = plan.attrs["label_kind"]
    labels = None
    if kind == "single":
        labels = np.array([-1 if it.label is None else int(it.label) for it in items], np.int64)
    elif kind == "multi":
        labels = np.zeros((len(items), len(plan.attrs["classes"])), np.uint8)
        for row, it in enumerate(items):
            labels[row, list(it.label or ())] = 1
    links = [it.link or "" for it in items] if any(it.link for it in items) else None
    return labels, links


def _shard_data(
    plan: ExtractPlan, items: list[Item], pooled: list[np.ndarray], token_rows: list[np.ndarray] | None,
    skipped: list[tuple[str, str]],
) -> ShardData:
    labels, links = _annotations(plan, items)
    data = ShardData(
        ids=[it.id for it in items],
        pooled=np.stack(pooled) if pooled else np.zeros((0, plan.encoder.dim), np.float32),
        labels=labels, links=links, skipped=skipped,
    )
    if token_rows is not None:
        data.lengths = np.array([len(t) for t in token_rows], np.int64)
        data.tokens = np.concatenate(token_rows) if token_rows else np.zeros((0, plan.encoder.token_dim), np.float32)
    return data


def _outputs(plan: ExtractPlan, batch: Any, tokens: bool) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    out = plan.encoder.encode(batch, tokens=tokens)
    pooled = list(out.pooled.float().cpu().numpy())
    if not tokens:
        return pooled, None
    mask = out.mask.cpu().numpy()
    toks = out.tokens.float().cpu().numpy()
    return pooled, [toks[i][mask[i]] for i in range(len(pooled))]


# --- images: decoded in worker processes -----------------------------------------------------------


class _ImageItems(torch.utils.data.Dataset):
    """Item -> (position, tensor or None, reason). Runs in worker processes (no h5py here)."""

    def __init__(self, items: list[Item], transform: Callable[[Any], torch.Tensor]) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, pos: int) -> tuple[int, torch.Tensor | None, str | None]:
        item = self.items[pos]
        if item.error:
            return pos, None, item.error
        try:
            return pos, self.transform(load_image(item.image, item.id)), None
        except BadItemError as exc:
            return pos, None, exc.reason


def _collate(batch: list[tuple[int, torch.Tensor | None, str | None]]) -> tuple[list[int], torch.Tensor | None, list]:
    """In the worker: stack the decoded items (so pin_memory pins the batch) and pass the failures on."""
    good = [(pos, x) for pos, x, _ in batch if x is not None]
    bad = [(pos, reason) for pos, x, reason in batch if x is None]
    return [pos for pos, _ in good], torch.stack([x for _, x in good]) if good else None, bad


def _as_is(batch: Any) -> Any:
    return batch


def _batches(shards: dict[int, list[Item]], batch_size: int, offset: dict[int, int]) -> list[list[int]]:
    """Batches of global positions that never cross a shard boundary (deterministic composition)."""
    out = []
    for index, items in shards.items():
        base = offset[index]
        out += [list(range(base + s, base + min(s + batch_size, len(items)))) for s in range(0, len(items), batch_size)]
    return out


def _encode_images(
    plan: ExtractPlan, shards: dict[int, list[Item]], *, tokens: bool, batch_size: int, workers: int | None,
    on_error: OnError, advance: Callable[[int], None], timing: InputTiming,
) -> Iterator[tuple[int, ShardData]]:
    flat, offset = [], {}
    for index, items in shards.items():
        offset[index] = len(flat)
        flat += items
    n_workers = default_workers() if workers is None else workers
    transform = plan.encoder.image_transform()
    tensor_path = plan.decode_device is not None  # workers read JPEG bytes; decoded below, on the device
    # finish(batch from the loader) -> (positions, (B, 3, H, W) inputs or None, [(position, reason)])
    finish = (partial(finish_batch, items=flat, prep=plan.encoder.tensor_preprocess(), device=plan.decode_device,
                      transform=transform) if tensor_path else _as_is)
    loader = torch.utils.data.DataLoader(
        TensorDecodeItems(flat, transform) if tensor_path else _ImageItems(flat, transform),
        batch_sampler=_batches(shards, batch_size, offset),
        num_workers=n_workers,
        collate_fn=collate_prepared if tensor_path else _collate,
        pin_memory=plan.device.type == "cuda",
        prefetch_factor=4 if n_workers else None,
        persistent_workers=False,
    )
    batches = iter(loader)
    for index, items in shards.items():
        kept: list[Item] = []
        pooled: list[np.ndarray] = []
        token_rows: list[np.ndarray] | None = [] if tokens else None
        skipped: list[tuple[str, str]] = []
        for _ in range(math.ceil(len(items) / batch_size)):
            with timing.waiting():
                raw = next(batches)
            with timing.busy():
                positions, x, bad = finish(raw)
            for pos, reason in bad:
                _bad(flat[pos].id, reason, on_error, skipped)
            if positions:
                with timing.busy():
                    p, t = _outputs(plan, x.to(plan.device, non_blocking=True), tokens)
                kept += [flat[pos] for pos in positions]
                pooled += p
                if token_rows is not None:
                    token_rows += t
            advance(len(positions) + len(bad))
        yield index, _shard_data(plan, kept, pooled, token_rows, skipped)


# --- text: tokenised per batch, batched by length ----------------------------------------------------


def _encode_texts(
    plan: ExtractPlan, shards: dict[int, list[Item]], *, tokens: bool, batch_size: int, workers: int | None,
    on_error: OnError, advance: Callable[[int], None], timing: InputTiming,
) -> Iterator[tuple[int, ShardData]]:
    for index, items in shards.items():
        skipped: list[tuple[str, str]] = []
        good: list[tuple[Item, str]] = []
        for item in items:
            try:
                if item.error:
                    raise BadItemError(item.id, item.error)
                good.append((item, check_text(item.text, item.id)))
            except BadItemError as exc:
                _bad(item.id, exc.reason, on_error, skipped)
        # Longest first within the shard: little padding per batch; rows go back to dataset order below.
        order = sorted(range(len(good)), key=lambda i: -len(good[i][1]))
        pooled: list[np.ndarray | None] = [None] * len(good)
        token_rows: list[np.ndarray | None] = [None] * len(good)
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            with timing.waiting():  # the device idles while the main thread tokenises
                batch = plan.encoder.tokenize([good[i][1] for i in chunk])
            with timing.busy():
                p, t = _outputs(plan, {k: v.to(plan.device) for k, v in batch.items()}, tokens)
            for j, i in enumerate(chunk):
                pooled[i] = p[j]
                if t is not None:
                    token_rows[i] = t[j]
            advance(len(chunk))
        advance(len(items) - len(good))
        yield index, _shard_data(plan, [it for it, _ in good], pooled, token_rows if tokens else None, skipped)
