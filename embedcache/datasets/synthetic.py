"""`shapes`: the project's own generated dataset, the offline stand-in for COCO, CIFAR, Flickr and STS-B.

Images of 1-3 simple objects (10 shape classes, 8 colours, 3 sizes, 9 positions) on plain or gradient
backgrounds with noise; captions from 9 templates with synonyms; graded caption pairs scored 0..5 (drawn,
described and scored by embedcache.datasets.scenes). Everything follows from the seed. Layout on disk
(text files UTF-8, tab-separated, one header line):

    <root>/meta.json          name, version, size, seed, captions_per_image, image_size, classes, colours, splits
    <root>/images/<id>.jpg    128x128 RGB JPEG, quality 90
    <root>/annotations.tsv    image_id  split  label  labels   (label: class of the largest object;
                                                                labels: comma-separated classes present)
    <root>/captions.tsv       caption_id  image_id  caption
    <root>/pairs.tsv          split  caption_id_a  caption_id_b  score   (0..5, both captions in `split`)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from embedcache import paths
from embedcache.datasets import DATASETS
from embedcache.datasets.base import Dataset, DatasetFormatError, Item, Pair, Split
from embedcache.datasets.common import decode, read_lines
from embedcache.datasets.scenes import (
    CLASSES,
    COLOURS,
    DIFFICULTIES,
    IMAGE_SIZE,
    Mention,
    Scene,
    make_captions,
    pair_score,
    pick,
    render,
)
from embedcache.errors import BadInputError

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
DEFAULT_SIZE = 1000  # images: 3,000 captions; sized so `make demo` stays within minutes on a 2-core CPU
SPLITS = ("train", "val", "test")
LABEL_KINDS = ("single", "multi")
HEADERS = {
    "annotations.tsv": ("image_id", "split", "label", "labels"),
    "captions.tsv": ("caption_id", "image_id", "caption"),
    "pairs.tsv": ("split", "caption_id_a", "caption_id_b", "score"),
}


# ---------------------------------------------------------------- generation


@dataclass(frozen=True)
class Caption:
    """A generated caption and the objects it mentions (kept in memory only, to score pairs)."""

    id: str
    image: int  # index of the image
    text: str
    mentions: list[Mention]


def assign_splits(size: int, seed: int, train: float = 0.8, val: float = 0.1) -> list[str]:
    """train/val/rest (80/10/10 by default) by image, from a seeded permutation: split name per image index."""
    order = np.random.default_rng([seed, 1]).permutation(size)
    n_train, n_val = round(train * size), round(val * size)
    names = np.empty(size, dtype=object)
    names[order[:n_train]], names[order[n_train:n_train + n_val]], names[order[n_train + n_val:]] = SPLITS
    return list(names)


PAIR_KINDS = ("self", "main", "shape", "any")


def _pair_partner(rng: np.random.Generator, i: int, scenes: list[Scene], pools: dict[tuple, list[int]]) -> int:
    """An image to pair with image i: itself, another with the same main shape and colour, one sharing a
    shape, or any, in equal parts, so that gold scores spread over 0..5."""
    objs = scenes[i].objects
    kind = PAIR_KINDS[int(rng.integers(len(PAIR_KINDS)))]
    if kind == "self":
        return i
    other = objs[int(rng.integers(len(objs)))]
    pool = pools[{"main": ("main", objs[0].shape, objs[0].colour), "shape": ("shape", other.shape), "any": ()}[kind]]
    k = int(rng.integers(len(pool)))
    return pool[(k + 1) % len(pool)] if pool[k] == i else pool[k]  # i itself only when it is alone


def make_pairs(rng: np.random.Generator, split_images: list[int], scenes: list[Scene],
               captions_of: list[list[Caption]], per_image: int = 1) -> list[tuple[str, str, float]]:
    """About `per_image` graded pairs per image of the split: (caption_id_a, caption_id_b, score)."""
    pools: dict[tuple, list[int]] = defaultdict(list)
    for i in split_images:
        pools[()].append(i)
        pools[("main", scenes[i].objects[0].shape, scenes[i].objects[0].colour)].append(i)
        for o in scenes[i].objects:
            pools[("shape", o.shape)].append(i)
    pairs = []
    for i in [i for _ in range(per_image) for i in split_images]:
        j = _pair_partner(rng, i, scenes, pools)
        a = pick(rng, captions_of[i])
        b = pick(rng, [c for c in captions_of[j] if c.id != a.id] or captions_of[j])
        if a.id != b.id:
            pairs.append((a.id, b.id, pair_score(i == j, a.mentions, b.mentions)))
    return pairs


def _tsv(header: tuple[str, ...], rows: Iterator[tuple[Any, ...]]) -> bytes:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _write_dataset(out: Path, size: int, seed: int, captions_per_image: int, difficulty: str = "easy") -> None:
    """Draw every image, caption and pair into `out` (a fresh directory). Image i uses its own generator
    (seed, 0, i), so pixels do not depend on the order or the number of images drawn before it."""
    how = DIFFICULTIES.get(difficulty)
    splits = assign_splits(size, seed, how.train, how.val)
    scenes, captions_of = [], []
    (out / "images").mkdir(parents=True)
    for i in range(size):
        rng = np.random.default_rng([seed, 0, i])
        scene = how.sample(rng)
        Image.fromarray(render(scene, rng)).save(out / "images" / f"{image_id(i)}.jpg", quality=90)
        texts = make_captions(rng, scene, captions_per_image)
        captions_of.append([Caption(f"{image_id(i)}-c{k}", i, t, m) for k, (t, m) in enumerate(texts)])
        scenes.append(scene)
    pair_rng = np.random.default_rng([seed, 2])
    pairs = [(name, *p) for name in SPLITS
             for p in make_pairs(pair_rng, [i for i in range(size) if splits[i] == name], scenes, captions_of,
                                 how.pairs_per_image)]
    annotations = ((image_id(i), splits[i], sc.objects[0].shape, ",".join(str(s) for s in sorted(
        {o.shape for o in sc.objects}))) for i, sc in enumerate(scenes))
    captions = ((c.id, image_id(c.image), c.text) for cs in captions_of for c in cs)
    for name, rows in (("annotations.tsv", annotations), ("captions.tsv", captions), ("pairs.tsv", iter(pairs))):
        (out / name).write_bytes(_tsv(HEADERS[name], rows))
    meta = {"name": "shapes", "version": FORMAT_VERSION, "size": size, "seed": seed,
            "captions_per_image": captions_per_image, "image_size": IMAGE_SIZE, "classes": list(CLASSES),
            **({} if difficulty == "easy" else {"difficulty": difficulty}),
            "colours": list(COLOURS), "splits": {n: splits.count(n) for n in SPLITS},
            "pairs": {n: sum(p[0] == n for p in pairs) for n in SPLITS}}
    (out / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")  # last: marks it whole


def image_id(i: int) -> str:
    return f"shape{i:06d}"


def _meta_mismatch(root: Path, size: int, seed: int, captions_per_image: int, difficulty: str = "easy"
                   ) -> str | None:
    """None when root/meta.json describes this exact dataset, else what differs."""
    meta = {"difficulty": "easy", **json.loads((root / "meta.json").read_text())}
    want = {"version": FORMAT_VERSION, "size": size, "seed": seed, "captions_per_image": captions_per_image,
            "difficulty": difficulty}
    diff = [f"{k}={meta.get(k)!r} (asked {v!r})" for k, v in want.items() if meta.get(k) != v]
    return ", ".join(diff) or None


def generate_shapes(root: Path, size: int = DEFAULT_SIZE, seed: int = 0, captions_per_image: int = 3,
                    overwrite: bool = False, difficulty: str = "easy") -> Path:
    """Write the shapes dataset to `root`, deterministically from `seed`, and return `root`. It is built in a
    sibling temp directory and renamed into place, so a crash never leaves a half dataset that looks whole.
    An existing identical dataset is kept; a different one is an error unless `overwrite`. difficulty: "easy"
    (the original scenes) or "hard" (cluttered, occluded, noisy: embedcache.datasets.scenes.sample_hard_scene)."""
    DIFFICULTIES.get(difficulty)  # an unknown difficulty fails here, listing the known ones
    if size < 10 or captions_per_image < 1:
        raise BadInputError(f"shapes needs size >= 10 and captions_per_image >= 1; got {size}, {captions_per_image}")
    root = Path(root)
    if (root / "meta.json").exists() and not overwrite:
        if (diff := _meta_mismatch(root, size, seed, captions_per_image, difficulty)) is None:
            return root
        raise FileExistsError(f"{root} holds another shapes dataset ({diff}); pass overwrite=True or another root")
    _remove_stale_temps(root)
    tmp = root.with_name(f"{root.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_dataset(tmp, size, seed, captions_per_image, difficulty)
        _publish(tmp, root, size, seed, captions_per_image, difficulty)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _remove_stale_temps(root: Path) -> None:
    """Delete temp directories left by killed generators of this host (their pid no longer runs)."""
    for stale in root.parent.glob(f"{root.name}.tmp-{socket.gethostname()}-*"):
        try:
            os.kill(int(stale.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (ValueError, PermissionError):  # not our name pattern, or alive under another user
            continue


def _publish(tmp: Path, root: Path, size: int, seed: int, captions_per_image: int, difficulty: str = "easy"
             ) -> None:
    """Rename tmp -> root; an old root is moved aside first. A concurrent writer that published the same
    dataset first wins and ours is dropped."""
    old = root.with_name(f"{root.name}.old-{os.getpid()}")
    if root.exists() and not (root.is_dir() and not any(root.iterdir())):
        if not (root / "meta.json").exists():
            raise FileExistsError(f"{root} exists and is not a shapes dataset; remove it or choose another root")
        os.replace(root, old)
    try:
        os.replace(tmp, root)
    except OSError:
        if not (root / "meta.json").exists() or _meta_mismatch(root, size, seed, captions_per_image, difficulty):
            raise
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- reading


def _rows(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """(line number, fields) of a TSV file in the layout above; the header is checked, blank lines skipped."""
    header = HEADERS[path.name]
    try:
        lines = read_lines(path)  # byte-order mark and \r dropped
    except FileNotFoundError:
        raise DatasetFormatError(f"{path} is missing; delete {path.parent} and it is regenerated on next use") from None
    first = lines[0] if lines else b""
    if first.split(b"\t") != [h.encode() for h in header]:
        raise DatasetFormatError(f"{path}:1: expected the header {chr(9).join(header)!r}, found {first[:80]!r}")
    for lineno, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split(b"\t")
        if len(fields) != len(header):
            raise DatasetFormatError(f"{path}:{lineno}: expected {len(header)} tab-separated fields "
                                     f"({', '.join(header)}), found {len(fields)}: {line[:80]!r}")
        yield lineno, fields


def _field(path: Path, lineno: int, raw: bytes, parse: Callable[[str], Any] = str) -> Any:
    """One structural field (id, split, number): strict UTF-8 and `parse`, else a format error naming the line."""
    try:
        return parse(raw.decode("utf-8"))
    except ValueError as err:  # UnicodeDecodeError is a ValueError
        raise DatasetFormatError(f"{path}:{lineno}: bad field {raw[:40]!r}: {err}") from None


def _class_index(text: str) -> int:
    if not 0 <= (value := int(text)) < len(CLASSES):
        raise BadInputError(f"class index {value} outside 0..{len(CLASSES) - 1}")
    return value


def _split_name(text: str) -> str:
    if text not in SPLITS:
        raise BadInputError(f"split must be one of {', '.join(SPLITS)}")
    return text


def _score(text: str) -> float:
    if not 0.0 <= (value := float(text)) <= 5.0:
        raise BadInputError(f"score {value} outside 0..5")
    return value


def read_annotations(path: Path) -> dict[str, tuple[str, int, tuple[int, ...]]]:
    """image_id -> (split, label, labels)."""
    out: dict[str, tuple[str, int, tuple[int, ...]]] = {}
    for n, (iid, split, label, labels) in _rows(path):
        image = _field(path, n, iid)
        if image in out:
            raise DatasetFormatError(f"{path}:{n}: image id {image!r} appears twice")
        multi = _field(path, n, labels, lambda t: tuple(_class_index(v) for v in t.split(",")))
        out[image] = (_field(path, n, split, _split_name), _field(path, n, label, _class_index), multi)
    return out


def read_captions(path: Path, images: dict[str, tuple[str, int, tuple[int, ...]]]) -> list[tuple[str, Item]]:
    """(split, caption Item without label) per line. A caption that is not UTF-8 becomes an Item with `error`
    (one bad caption must not sink the dataset); a caption of an unknown image is a format error."""
    out, seen = [], set()
    for n, (cid_raw, iid_raw, raw) in _rows(path):
        cid, iid = _field(path, n, cid_raw), _field(path, n, iid_raw)
        if iid not in images:
            raise DatasetFormatError(f"{path}:{n}: caption {cid!r} refers to image {iid!r}, "
                                     f"which is not in {path.with_name('annotations.tsv')}")
        if cid in seen:
            raise DatasetFormatError(f"{path}:{n}: caption id {cid!r} appears twice")
        seen.add(cid)
        text, error = decode(raw, cid)
        out.append((images[iid][0], Item(id=cid, text=text, link=iid, error=error)))
    return out


def read_pairs(path: Path, caption_split: dict[str, str]) -> list[tuple[str, Pair]]:
    """(split, Pair) per line; both captions must exist and belong to the pair's split."""
    out = []
    for n, (split_raw, a_raw, b_raw, score) in _rows(path):
        split, a, b = _field(path, n, split_raw, _split_name), _field(path, n, a_raw), _field(path, n, b_raw)
        for cid in (a, b):
            if caption_split.get(cid) != split:
                raise DatasetFormatError(f"{path}:{n}: pair caption {cid!r} is not a {split} caption in "
                                         f"{path.with_name('captions.tsv')}")
        out.append((split, Pair(a, b, _field(path, n, score, _score))))
    return out


def default_root(size: int, seed: int, captions_per_image: int, data_dir: str | Path | None = None,
                 difficulty: str = "easy") -> Path:
    """<data-dir>/raw/shapes/shapes-<size>-s<seed>[-c<captions>][-<difficulty>] (suffixes only when not the
    defaults: 3 captions, easy)."""
    suffix = "" if captions_per_image == 3 else f"-c{captions_per_image}"
    suffix += "" if difficulty == "easy" else f"-{difficulty}"
    return paths.raw_dir("shapes", data_dir) / f"shapes-{size}-s{seed}{suffix}"


@DATASETS.register("shapes")
class ShapesDataset(Dataset):
    """The generated shapes dataset (see the module docstring for the layout). Generated on first use when
    its root holds none; `labels="multi"` gives each image the tuple of classes present; `difficulty="hard"`
    draws cluttered, partly occluded, noisy scenes (the demo twins use it so no row sits at its ceiling)."""

    name = "shapes"
    origin = "generated"

    def __init__(self, root: str | Path | None = None, size: int = DEFAULT_SIZE, seed: int = 0,
                 captions_per_image: int = 3, labels: str = "single", difficulty: str = "easy") -> None:
        if labels not in LABEL_KINDS:
            raise BadInputError(f"unknown labels {labels!r} for shapes; known: {', '.join(LABEL_KINDS)}")
        DIFFICULTIES.get(difficulty)
        size, seed, captions_per_image = int(size), int(seed), int(captions_per_image)
        hard = {} if difficulty == "easy" else {"difficulty": difficulty}  # easy stores keep their fingerprints
        super().__init__(root, size=size, seed=seed, captions_per_image=captions_per_image, labels=labels, **hard)
        self.size, self.seed, self.captions_per_image, self.difficulty = size, seed, captions_per_image, difficulty
        self.label_kind = labels  # type: ignore[assignment]
        self.version = f"{FORMAT_VERSION}-n{size}-s{seed}-c{captions_per_image}" + (f"-{difficulty}" if hard else "")

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES

    def splits(self) -> list[str]:
        return list(SPLITS)

    @property
    def data_root(self) -> Path:
        if self.root is not None:
            return self.root
        return default_root(self.size, self.seed, self.captions_per_image, self.data_dir, self.difficulty)

    def ensure(self) -> Path:
        """The dataset root, generated first when it holds no dataset; a different dataset there is an error."""
        root = self.data_root
        if not (root / "meta.json").exists():
            log.info("generating the shapes dataset (%d images, seed %d) in %s", self.size, self.seed, root)
            generate_shapes(root, self.size, self.seed, self.captions_per_image, difficulty=self.difficulty)
        if diff := _meta_mismatch(root, self.size, self.seed, self.captions_per_image, self.difficulty):
            raise DatasetFormatError(f"{root} holds another shapes dataset ({diff}); pass matching options, "
                                     "another root, or delete it to regenerate")
        return root

    @cached_property
    def _tables(self) -> tuple[Path, dict, list, list]:
        root = self.ensure().resolve()
        images = read_annotations(root / "annotations.tsv")
        captions = read_captions(root / "captions.tsv", images)
        pairs = read_pairs(root / "pairs.tsv", {item.id: split for split, item in captions})
        return root, images, captions, pairs

    def load_split(self, split: str) -> Split:
        """Images (path, label), captions (text or error, the image's label, link) and pairs of `split`."""
        if split not in SPLITS:
            raise BadInputError(f"unknown split {split!r} for shapes; known: {', '.join(SPLITS)}")
        root, images, captions, pairs = self._tables
        labels = {iid: (multi if self.label_kind == "multi" else label) for iid, (_, label, multi) in images.items()}
        return Split(
            name=split,
            images=[Item(id=iid, image=str(root / "images" / f"{iid}.jpg"), label=labels[iid])
                    for iid, (s, _, _) in images.items() if s == split],
            texts=[Item(id=c.id, text=c.text, label=labels[c.link], link=c.link, error=c.error)
                   for s, c in captions if s == split],
            pairs=[p for s, p in pairs if s == split],
        )
