"""What a pipeline would build before it spends anything: `embedcache run PIPELINE --plan`.

For each store: rows per split, pooled width, token rows (counted from the model's own tokenizer on a sample
of the texts, or its fixed image token count) and the estimated size on disk, or what is already there; for
each mined pairing the expected pair count; the runs and evaluations with those already done. Widths and
token counts come from the backbone itself when its weights load here (the rehearsal's stand-ins included),
else from `REAL_SHAPES`, the published widths of the registered models.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedcache.paths import store_path
from embedcache.tables.spec import PipelineSpec, StoreSpec

# name -> (pooled width, token width, image tokens per item): the published models' shapes, used when the
# weights are not here (ViT-B/16: 196 patches + CLS at 224 px; ResNets/VGG: the 7x7 grid; CLIP-B/32: 49 + CLS)
REAL_SHAPES: dict[str, tuple[int, int, int]] = {
    "vit": (768, 768, 197), "resnet50": (2048, 2048, 49), "resnet152": (2048, 2048, 49), "vgg16": (4096, 512, 49),
    "effnet-lite0": (1280, 1280, 49), "clip-image": (512, 768, 50), "clip-text": (512, 512, 0),
    "bert": (768, 768, 0), "roberta": (768, 768, 0), "twitter-roberta": (768, 768, 0), "bge": (768, 768, 0),
    "minilm": (384, 384, 0), "mpnet": (768, 768, 0),
}
# dataset -> modality -> split -> rows of the published release (used when the data is not here)
PUBLISHED_ROWS: dict[str, dict[str, dict[str, int]]] = {
    "coco": {"image": {"train": 82_783, "val": 40_504}, "text": {"train": 413_915, "val": 202_520}},
    "flickr8k": {"image": {"train": 6_000, "dev": 1_000, "test": 1_000},
                 "text": {"train": 30_000, "dev": 5_000, "test": 5_000}},
    "cifar10": {"image": {"train": 50_000, "test": 10_000}},
    "cifar100": {"image": {"train": 50_000, "test": 10_000}},
    "tiny-imagenet": {"image": {"train": 100_000, "val": 10_000}},
    "qqp": {"text": {"train": 727_692, "dev": 80_860}},  # two per pair: an upper bound (questions repeat)
    "mrpc": {"text": {"train": 7_336, "dev": 816}},
    "stsb": {"text": {"train": 11_498, "dev": 3_000}},
    "mvsa-single": {"image": {"train": 3_608, "val": 451, "test": 452},
                    "text": {"train": 3_608, "val": 451, "test": 452}},
    "mvsa-multiple": {"image": {"train": 13_619, "val": 1_702, "test": 1_703},  # 17,024 posts after cleaning
                      "text": {"train": 13_619, "val": 1_702, "test": 1_703}},
    "mmsd": {"image": {"train": 19_816, "valid": 2_410, "test": 2_409},
             "text": {"train": 19_816, "valid": 2_410, "test": 2_409}},
}
CAPTION_TOKENS = 16  # word pieces of a typical caption or tweet, special tokens included (COCO with BERT: ~14)
SAMPLE = 2000  # texts tokenised to estimate a split's token rows (all of them below this)
ID_BYTES = 40  # one variable-length utf-8 id in HDF5: its 16-byte reference plus the global-heap object
STORE_OVERHEAD = 8 << 10  # HDF5 superblock, root group and the JSON attributes of one store
SPLIT_OVERHEAD = 4 << 10  # one split's group and dataset headers
PAIR_BYTES = 2 * ID_BYTES + 4  # one graded pair: two ids and a float32 score


@dataclass
class StorePlan:
    """One store: where, rows per split, widths, token rows, estimated bytes, and whether it is done."""

    spec: StoreSpec
    path: Path
    rows: dict[str, int] = field(default_factory=dict)
    dim: int = 0
    token_dim: int = 0
    token_rows: dict[str, int] = field(default_factory=dict)
    est_bytes: int = 0
    done_bytes: int | None = None  # the file's size when the store exists
    shape_from: str = "model"  # model | published widths | store
    error: str = ""


@dataclass
class PipelinePlan:
    """Everything `--plan` shows for one pipeline."""

    name: str
    stores: list[StorePlan]
    mined: list[str]
    runs: list[str]
    evals: list[str]


def estimate_bytes(rows: int, dim: int, token_rows: int, token_dim: int, *, itemsize: int = 2,
                   labels: int = 8, links: bool = False, pairs: int = 0) -> int:
    """Bytes of one split on disk: ids, pooled (rows, dim), tokens (token_rows, token_dim) + offsets, labels
    (bytes per row), links, graded pairs."""
    tokens = token_rows * token_dim * itemsize + (rows + 1) * 8 if token_rows else 0
    return rows * (ID_BYTES + dim * itemsize + labels + (ID_BYTES if links else 0)) + tokens + pairs * PAIR_BYTES


def _texts_tokens(encoder: Any, texts: Sequence[str], seed: int = 0) -> int:
    """Token rows of `texts` under the encoder's tokenizer: counted on a seeded sample, scaled to all."""
    if not texts:
        return 0
    sample = list(texts) if len(texts) <= SAMPLE else random.Random(seed).sample(list(texts), SAMPLE)
    mask = encoder.tokenize(sample)["attention_mask"]
    return round(int(mask.sum()) * len(texts) / len(sample))


def _image_tokens(encoder: Any) -> int:
    """Tokens per image of an image encoder: one blank image through its transform and model."""
    from PIL import Image

    x = encoder.image_transform()(Image.new("RGB", (64, 64)))[None]
    out = encoder.encode(x.to(getattr(encoder, "device", "cpu")), tokens=True)
    return int(out.mask.sum()) if out.mask is not None else int(out.tokens.shape[1])


def plan_store(st: StoreSpec, data_dir: str | Path | None, weights: Mapping[str, Path] | None = None) -> StorePlan:
    """Rows, widths, token rows and estimated size of the store `st` (reading the dataset, loading the model)."""
    from embedcache.backbones import create_encoder, resolve_spec
    from embedcache.datasets import create_dataset

    plan = StorePlan(st, store_path(st.store, st.backbone, data_dir))
    if plan.path.exists():
        plan.done_bytes = plan.path.stat().st_size
        if _from_store(plan):
            return plan
    spec = resolve_spec(st.backbone)
    try:
        ds = create_dataset(st.dataset, root=st.root or None, data_dir=data_dir, **dict(st.options))
        splits = {name: ds.load_split(name) for name in ds.splits()}
    except Exception as err:  # data not here: the published counts when known, else the plan says why
        published = PUBLISHED_ROWS.get(st.dataset, {}).get(spec.modality)
        if published is None:
            plan.error = f"{type(err).__name__}: {str(err).splitlines()[0]}"
            return plan
        return _published(plan, spec, published)
    items = {name: [it for it in sp.items(spec.modality) if not it.error][: st.limit] for name, sp in splits.items()}
    plan.rows = {name: len(its) for name, its in items.items()}
    try:
        encoder = create_encoder(st.backbone, weights=(weights or {}).get(st.backbone), device="cpu")
        plan.dim, plan.token_dim = encoder.dim, encoder.token_dim
        per_image = _image_tokens(encoder) if spec.modality == "image" and st.tokens else 0
    except Exception:  # weights not here: the published shapes
        encoder, plan.shape_from = None, "published widths"
        plan.dim, plan.token_dim, per_image = REAL_SHAPES.get(st.backbone, (0, 0, 0))
    if st.tokens:
        for name, its in items.items():
            if spec.modality == "image":
                plan.token_rows[name] = per_image * len(its)
            elif encoder is not None:
                plan.token_rows[name] = _texts_tokens(encoder, [it.text or "" for it in its])
            else:  # no tokenizer: ~1.3 word pieces per word plus the two special tokens, capped
                cap = spec.max_length or 512
                plan.token_rows[name] = sum(min(cap, int(1.3 * len((it.text or "").split())) + 2) for it in its)
    labels = len(ds.classes) if ds.label_kind == "multi" else 8
    links = "image" in ds.modalities and "text" in ds.modalities
    plan.est_bytes = STORE_OVERHEAD + SPLIT_OVERHEAD * len(plan.rows) + sum(
        estimate_bytes(n, plan.dim, plan.token_rows.get(name, 0), plan.token_dim, labels=labels, links=links,
                       pairs=len(splits[name].pairs))
        for name, n in plan.rows.items())
    return plan


def _published(plan: StorePlan, spec: Any, rows: dict[str, int]) -> StorePlan:
    """The plan of a store whose data is not here, from the release's row counts and the model's published
    shape (text: CAPTION_TOKENS per item)."""
    plan.rows, plan.shape_from = dict(rows), "published counts and widths (data not here)"
    plan.dim, plan.token_dim, per_image = REAL_SHAPES.get(spec.name, (0, 0, 0))
    if plan.spec.tokens:
        per_item = per_image if spec.modality == "image" else CAPTION_TOKENS
        plan.token_rows = {name: n * per_item for name, n in rows.items()}
    plan.est_bytes = STORE_OVERHEAD + SPLIT_OVERHEAD * len(rows) + sum(
        estimate_bytes(n, plan.dim, plan.token_rows.get(name, 0), plan.token_dim) for name, n in rows.items())
    return plan


def _from_store(plan: StorePlan) -> bool:
    """Rows, widths and token rows of an existing store, read from it (exact, and no dataset to read); False when
    it cannot be opened (damaged, in progress)."""
    from embedcache.store import open_store

    try:
        with open_store(plan.path) as store:
            for name in store.splits:
                split = store.split(name)
                plan.rows[name], plan.dim = len(split), split.dim
                if split.has_tokens:
                    plan.token_dim, plan.token_rows[name] = int(split.token_dim or 0), int(split.offsets()[-1])
    except Exception:  # unreadable here: planned from the dataset like a new one
        plan.rows, plan.token_rows = {}, {}
        return False
    plan.est_bytes, plan.shape_from = plan.done_bytes or 0, "store"
    return True


def _mined(spec: PipelineSpec, stores: list[StorePlan], data_dir: str | Path | None) -> list[str]:
    """One line per mined pairing: captions, and the pairs expected within images (each caption with itself and
    both orders of every other caption of its image: at most sum of n_i^2)."""
    from embedcache.datasets import create_dataset

    out, counted = [], {}
    for run in spec.runs:
        if run.train.get("pairing") != "mined":
            continue
        split_name = str(run.train.get("train_split", "train"))
        if (run.dataset, split_name) not in counted:  # sibling runs mine the same captions: read them once
            st = next((s.spec for s in stores if s.spec.store == run.dataset), None)
            ds = create_dataset(run.dataset, root=(st.root or None) if st else None, data_dir=data_dir,
                                **(dict(st.options) if st else {}))
            per_image: dict[str, int] = {}
            for it in ds.load_split(split_name).texts:
                per_image[it.link or it.id] = per_image.get(it.link or it.id, 0) + 1
            counted[(run.dataset, split_name)] = per_image
        per_image = counted[(run.dataset, split_name)]
        captions, upper = sum(per_image.values()), sum(n * n for n in per_image.values())
        out.append(f"{run.id}: {captions:,} captions of {len(per_image):,} images -> between "
                   f"{captions:,} (self pairs) and {upper:,} pairs at cosine >= {run.train.get('threshold')}")
    return out


def plan_pipeline(spec: PipelineSpec, *, data_dir: str | Path | None = None, seeds: Sequence[int] = (0, 1, 2),
                  results_dir: str | Path | None = None, weights: Mapping[str, Path] | None = None) -> PipelinePlan:
    """The stores, mined pairs, runs and evaluations `run_pipeline(spec)` would do, and which are done."""
    from embedcache.paths import results_dir as default_results_dir

    stores = [plan_store(st, data_dir, weights) for st in spec.stores]
    try:
        mined = _mined(spec, stores, data_dir)
    except Exception as err:  # missing data
        mined = [f"(cannot count: {type(err).__name__}: {str(err).splitlines()[0]})"]
    out = Path(results_dir) if results_dir is not None else default_results_dir()
    record = _read_manifest(out / f"{spec.name}.json")
    done_runs = {(rid, seed) for rid, by_seed in (record.get("runs") or {}).items() for seed in by_seed}
    runs, evals = [], []
    for run in spec.runs:
        for seed in run.seeds or seeds:
            mark = "done" if (run.id, str(seed)) in done_runs else "to train"
            runs.append(f"{run.id} seed {seed} ({run.head or run.trainer}, {run.dataset} "
                        f"{'+'.join(run.backbones)}): {mark}")
            evals += [f"{run.id} seed {seed}: {ev.task} on {ev.dataset or run.dataset} "
                      f"{dict(ev.options) or ''}".rstrip() for ev in run.evals]
    return PipelinePlan(spec.name, stores, mined, runs, evals)


def _read_manifest(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def human(n: float) -> str:
    """Bytes as B / KB / MB / GB / TB (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def format_plan(plan: PipelinePlan) -> str:
    """The plan as text: one line per store, mined pairing, run and evaluation."""
    lines = [f"pipeline {plan.name}", "  stores:"]
    for s in plan.stores:
        what = f"{s.spec.store}/{s.spec.backbone}"
        if s.error:
            lines.append(f"    {what}: cannot plan ({s.error})")
            continue
        rows = ", ".join(f"{k} {v:,}" for k, v in s.rows.items())
        toks = (f"tokens {sum(s.token_rows.values()):,} x {s.token_dim}" if s.spec.tokens else "pooled only")
        done = f"; exists, {human(s.done_bytes)} on disk" if s.done_bytes is not None else ""
        lines.append(f"    {what}: rows {rows}; pooled {s.dim}-d; {toks}; ~{human(s.est_bytes)} fp16"
                     f" ({s.shape_from}){done}")
    total = sum(s.est_bytes for s in plan.stores if s.done_bytes is None)
    lines.append(f"  to write: ~{human(total)} in {sum(s.done_bytes is None for s in plan.stores)} store(s)")
    lines += ["  mined pairs:"] + [f"    {m}" for m in plan.mined] if plan.mined else []
    lines += ["  runs:"] + [f"    {r}" for r in plan.runs] + ["  evaluations:"] + [f"    {e}" for e in plan.evals]
    return "\n".join(lines)
