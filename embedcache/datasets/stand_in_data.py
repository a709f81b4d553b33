"""Stand-in data for the rehearsal: every paper dataset in its published layout at the papers' real row counts.

`generate(name, root, scale)` writes `name` under `root` through the same layout writers as the tests'
fixtures (`embedcache.datasets.fixtures`), with `SIZES` rows per split times `scale` (at least a few rows),
small images and varied generated text. Deterministic for a seed; the content means nothing (only the layouts
and the counts are real), and `benchmarks/rehearsal.py` writes it only under its own data dir.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from embedcache.datasets import fixtures as fx
from embedcache.registry import Registry

# rows per split at scale 1.0, from the papers and the releases (GLUE splits: the labelled ones)
SIZES: dict[str, dict[str, int]] = {
    "coco": {"train": 82_783, "val": 40_504},  # images; 5 captions each
    "flickr8k": {"train": 6_000, "dev": 1_000, "test": 1_000, "unlisted": 91},  # 8,091 images, 40,455 captions
    "cifar10": {"train": 50_000, "test": 10_000},
    "cifar100": {"train": 50_000, "test": 10_000},
    "tiny-imagenet": {"train": 100_000, "val": 10_000},
    "qqp": {"train": 363_846, "dev": 40_430},
    "mrpc": {"train": 3_668, "dev": 408},
    "stsb": {"train": 5_749, "dev": 1_500},
    "mvsa-single": {"posts": 4_869},
    "mvsa-multiple": {"posts": 19_600},
    "mmsd": {"train": 19_816, "val": 2_410, "test": 2_409},
}
# posts at least: the 8:1:1 split leaves ~45 validation posts, enough for late fusion's validation scores (with
# 30 posts a random stand-in can score 0 on all 3 validation posts, and min-loss weighting rightly refuses that)
MVSA_FLOOR = 500
GENERATORS: Registry[Callable[[Path, float, int], Path]] = Registry("stand-in dataset")


def scaled(n: int, scale: float, floor: int = 4) -> int:
    """`n` rows at `scale`, never fewer than `floor` (every split keeps a few rows)."""
    return max(floor, round(n * scale))


def pixels(size: int, seed: int) -> Callable[[str], np.ndarray]:
    """name -> the deterministic (size, size, 3) image of that name."""
    return lambda name: fx.image_array(np.random.default_rng([seed, zlib.crc32(name.encode())]), size)


def generate(name: str, root: Path, scale: float = 1.0, seed: int = 0) -> Path:
    """Write stand-in dataset `name` under `root` (its raw folder) once; a finished one is kept."""
    done = root / ".stand-in-complete"
    if done.is_file() and done.read_text() == f"{scale} {seed}":
        return root
    GENERATORS.get(name)(root, scale, seed)
    done.write_text(f"{scale} {seed}")
    return root


@GENERATORS.register("coco")
def _coco(root: Path, scale: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    cat_ids = sorted(rng.choice(np.arange(1, 91), 80, replace=False).tolist())  # 80 ids with gaps, as COCO's
    categories = [{"id": c, "name": f"category{c}", "supercategory": "thing"} for c in cat_ids]
    splits, image_id = {}, 1
    for split, n in SIZES["coco"].items():
        images = []
        for _ in range(scaled(n, scale)):
            th = fx.theme(rng)
            caps = [fx.sentence(rng, th) for _ in range(5 + int(rng.random() < 0.02))]  # a few have 6, as COCO
            cats = rng.choice(cat_ids, int(rng.integers(1, 4)), replace=False).tolist()
            images.append(fx.CocoImage(image_id, fx.image_array(rng, 32), caps, cats))
            image_id += int(rng.integers(1, 4))
        splits[split] = images
    return fx.write_coco(root, splits, categories)


@GENERATORS.register("flickr8k")
def _flickr(root: Path, scale: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    lists, captions = {}, {}
    for split, n in SIZES["flickr8k"].items():
        names = [f"{int(rng.integers(10**9, 4 * 10**9))}_{int(rng.integers(16**9)):09x}.jpg"
                 for _ in range(scaled(n, scale))]
        for name in names:
            th = fx.theme(rng)
            captions[name] = [fx.sentence(rng, th) + " ." for _ in range(5)]
        if split != "unlisted":  # in the image folder and the token file, in no split list (as the release)
            lists[split] = names
    return fx.write_flickr(root, captions, lists, pixels=pixels(32, seed))


def _cifar_labels(n: int, classes: int, rng: np.random.Generator) -> list[int]:
    return rng.integers(0, classes, n).tolist()


@GENERATORS.register("cifar10")
def _cifar10(root: Path, scale: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    per_batch = scaled(SIZES["cifar10"]["train"] // 5, scale)
    batches = [(fx.cifar_rows(per_batch, seed + b), _cifar_labels(per_batch, 10, rng)) for b in range(1, 6)]
    n_test = scaled(SIZES["cifar10"]["test"], scale)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return fx.write_cifar10(root, batches, (fx.cifar_rows(n_test, seed), _cifar_labels(n_test, 10, rng)), names)


@GENERATORS.register("cifar100")
def _cifar100(root: Path, scale: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in SIZES["cifar100"].items():
        fine = _cifar_labels(scaled(n, scale), 100, rng)
        splits[split] = (fx.cifar_rows(len(fine), seed + len(splits)), fine, [f // 5 for f in fine])
    return fx.write_cifar100(root, splits)


@GENERATORS.register("tiny-imagenet")
def _tiny(root: Path, scale: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    wnids = [f"n{rng.integers(10**7, 10**8):08d}" for _ in range(200)]
    words = {w: f"thing{i}, object{i}" for i, w in enumerate(wnids)}
    per_class = max(1, scaled(SIZES["tiny-imagenet"]["train"], scale) // 200)
    n_val = scaled(SIZES["tiny-imagenet"]["val"], scale)
    val = [(f"val_{i}.JPEG", wnids[int(rng.integers(200))]) for i in range(n_val)]
    return fx.write_tiny_imagenet(root, wnids, words, per_class, val, pixels(64, seed)).parent


def _pair_rows(n: int, rng: np.random.Generator) -> list[tuple[str, str, float]]:
    """(sentence 1, sentence 2, similarity in [0, 1]): half share a theme (similar), half do not."""
    rows = []
    for _ in range(n):
        same = rng.random() < 0.4
        th = fx.theme(rng)
        rows.append((fx.sentence(rng, th), fx.sentence(rng, th if same else None), float(same)))
    return rows


@GENERATORS.register("qqp")
def _qqp(root: Path, scale: float, seed: int) -> Path:
    rng, files, qid, row = np.random.default_rng(seed), {}, 1, 0
    for split, n in SIZES["qqp"].items():
        lines = [fx.QQP_HEADER]
        for a, b, same in _pair_rows(scaled(n, scale), rng):
            lines.append(f"{row}\t{qid}\t{qid + 1}\t{a.rstrip('.')}?\t{b.rstrip('.')}?\t{int(same)}")
            qid, row = qid + 2, row + 1
        files[f"{split}.tsv"] = lines
    return fx.write_glue(root / "QQP", files).parent


@GENERATORS.register("mrpc")
def _mrpc(root: Path, scale: float, seed: int) -> Path:
    rng, files, sid = np.random.default_rng(seed), {}, 100_000
    for split, n in SIZES["mrpc"].items():
        lines = ["\ufeff" + fx.MRPC_HEADER if split == "train" else fx.MRPC_HEADER]
        for a, b, same in _pair_rows(scaled(n, scale), rng):
            lines.append(f"{int(same)}\t{sid}\t{sid + 1}\t{a}\t{b}")
            sid += 2
        files[f"{split}.tsv"] = lines
    return fx.write_glue(root / "MRPC", files).parent


@GENERATORS.register("stsb")
def _stsb(root: Path, scale: float, seed: int) -> Path:
    rng, files = np.random.default_rng(seed), {}
    for split, n in SIZES["stsb"].items():
        lines = [fx.STSB_HEADER]
        for i, (a, b, same) in enumerate(_pair_rows(scaled(n, scale), rng)):
            score = float(np.clip(5 * same + rng.normal(0, 1.2) * (1 if same else 0.5) + (0 if same else 1), 0, 5))
            lines.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{a}\t{b}\t{score:.3f}")
        files[f"{split}.tsv"] = lines
    return fx.write_glue(root / "STS-B", files).parent


LABELS = ("negative", "neutral", "positive")


def _tweet(rng: np.random.Generator) -> str:
    return f"RT @user{int(rng.integers(999))}: {fx.sentence(rng)} #{fx.WORDS['adj'][int(rng.integers(13))]} "


@GENERATORS.register("mvsa-single")
def _mvsa_single(root: Path, scale: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    n = scaled(SIZES["mvsa-single"]["posts"], scale, floor=MVSA_FLOOR)
    labels = [f"{k + 1}\t{LABELS[rng.integers(3)]},{LABELS[rng.integers(3)]}" for k in range(n)]
    posts = {str(k + 1): _tweet(rng) for k in range(n)}
    return fx.write_mvsa(root / "MVSA_Single", labels, posts, pixels(32, seed)).parent


@GENERATORS.register("mvsa-multiple")
def _mvsa_multiple(root: Path, scale: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    n = scaled(SIZES["mvsa-multiple"]["posts"], scale, floor=MVSA_FLOOR)
    rows = []
    for k in range(n):
        text, image = LABELS[rng.integers(3)], LABELS[rng.integers(3)]  # mostly agreeing annotators
        votes = [f"{text},{image}" if rng.random() < 0.8 else f"{LABELS[rng.integers(3)]},{image}" for _ in range(3)]
        rows.append(f"{k + 1}\t" + "\t".join(votes))
    posts = {str(k + 1): _tweet(rng) for k in range(n)}
    return fx.write_mvsa(root / "MVSA", rows, posts, pixels(32, seed), annotators=3).parent


@GENERATORS.register("mmsd")
def _mmsd(root: Path, scale: float, seed: int) -> Path:
    rng, files, ids, tid = np.random.default_rng(seed), {}, [], 682_716_753_374_351_360
    for split, name in (("train", "train.txt"), ("val", "valid2.txt"), ("test", "test2.txt")):
        lines = []
        for _ in range(scaled(SIZES["mmsd"][split], scale)):
            tid += int(rng.integers(1, 10**6))
            label = int(rng.integers(2))
            text = fx.sentence(rng).lower().replace(".", " .")
            lines.append(repr([str(tid), text, label] if split == "train" else [str(tid), text, label, label]))
            ids.append(str(tid))
        files[name] = lines
    return fx.write_mmsd(root, files, ids, pixels(32, seed))
