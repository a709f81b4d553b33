"""Writers of the datasets' published layouts, for the tests' small fixtures and the rehearsal's stand-in data.

Each `write_*` writes one dataset family exactly as its release unpacks (file names, headers, encodings, JSON
fields) from content it is given, so the tests pass their hand-made rows (quirks included) and the rehearsal
(`benchmarks/rehearsal.py`) passes generated rows at the papers' real counts. `generate(name, root, scale)`
makes that generated data: small images (32x32 or 64x64) and varied text, `SIZES` rows per split times
`scale`, deterministic for a seed. Only the layouts are real: the content is generated, never real data.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------- content helpers

WORDS = {
    "subject": "man woman child dog cat horse bird girl boy player surfer skier chef cyclist cow giraffe".split(),
    "verb": "rides holds watches carries eats chases throws sits-near walks-past jumps-over looks-at".split(),
    "object": "surfboard frisbee pizza bicycle kite umbrella bench train bus ball laptop cake sandwich".split(),
    "place": "beach park kitchen street field station table river road snow city garden".split(),
    "adj": "red small large old young wooden bright crowded empty white black green happy".split(),
}


def sentence(rng: np.random.Generator, theme: Sequence[str] | None = None) -> str:
    """A varied English-like caption: `theme` (subject, object, place) fixes the nouns, the rest varies."""
    pick = lambda key: WORDS[key][int(rng.integers(len(WORDS[key])))]  # noqa: E731  (rng.choice: 10x slower)
    subject, obj, place = theme or (pick("subject"), pick("object"), pick("place"))
    forms = (f"A {pick('adj')} {subject} {pick('verb').replace('-', ' ')} a {obj} in the {place}.",
             f"{subject.capitalize()} with a {pick('adj')} {obj} near a {pick('adj')} {place}",
             f"there is a {subject} and a {obj} at the {place}",
             f"A {subject} {pick('verb').replace('-', ' ')} the {pick('adj')} {obj} while people watch from the "
             f"{place} on a {pick('adj')} day.")
    tail = ("", "", " today", " at night", " in the rain", f" with {int(rng.integers(2, 9))} others",
            f" next to a {pick('adj')} {pick('object')}", f" behind the {pick('place')}")
    return str(forms[int(rng.integers(len(forms)))]).rstrip(".") + str(tail[int(rng.integers(len(tail)))]) + "."


def theme(rng: np.random.Generator) -> tuple[str, str, str]:
    """The nouns one image's captions share (so captions of one image are alike, as COCO's are)."""
    return tuple(WORDS[k][int(rng.integers(len(WORDS[k])))] for k in ("subject", "object", "place"))  # type: ignore[return-value]


def image_array(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8: a colour gradient with a block of another colour, unlike its neighbours."""
    base = rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, size)[:, None, None] * rng.integers(-80, 80, 3)
    img = np.clip(base + ramp + np.zeros((size, size, 3)), 0, 255).astype(np.uint8)
    y, x = rng.integers(0, size // 2, 2)
    img[y:y + size // 3, x:x + size // 3] = rng.integers(0, 256, 3)
    return img


def save_image(path: Path, array: np.ndarray, fmt: str = "JPEG") -> None:
    from PIL import Image

    Image.fromarray(array).save(path, fmt)


def write_lines(path: Path, lines: Iterable[str | bytes]) -> None:
    """`lines` joined by newlines (bytes kept as given: the tests write non-UTF-8 lines on purpose)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(ln if isinstance(ln, bytes) else ln.encode() for ln in lines) + b"\n")


# ---------------------------------------------------------------- the published layouts


@dataclass
class CocoImage:
    """One COCO image: its id, pixels, captions (annotation ids are assigned in order) and category ids. pixels None:
    the caller wrote the file itself (e.g. in parallel), of `size` (height, width)."""

    image_id: int
    pixels: np.ndarray | None
    captions: list[str]
    categories: list[int] = field(default_factory=list)
    size: tuple[int, int] | None = None


def coco_file_name(year: int, split: str, image_id: int) -> str:
    """2014 file names carry the split prefix; 2017 ones are the bare zero-padded id."""
    return f"COCO_{split}{year}_{image_id:012d}.jpg" if year == 2014 else f"{image_id:012d}.jpg"


def write_coco(root: Path, splits: Mapping[str, Sequence[CocoImage]], categories: Sequence[dict], *,
               year: int = 2014, instances: bool = True, extra_captions: Mapping[str, list[dict]] | None = None,
               first_ann_id: int = 101, reverse: bool = False) -> Path:
    """annotations/captions_<split><year>.json (+ instances_*) and <split><year>/<file_name>.jpg.
    `extra_captions` are raw annotation records appended as given (e.g. one pointing at an unlisted image)."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id, obj_id = first_ann_id, 1
    for split, images in splits.items():
        folder = root / f"{split}{year}"
        folder.mkdir(parents=True, exist_ok=True)
        imgs, caps, objs = [], [], []
        for im in images:
            name = coco_file_name(year, split, im.image_id)
            if im.pixels is not None:
                save_image(folder / name, im.pixels)
            h, w = im.pixels.shape[:2] if im.pixels is not None else im.size
            imgs.append({"id": im.image_id, "file_name": name, "height": h, "width": w})
            for text in im.captions:
                caps.append({"id": ann_id, "image_id": im.image_id, "caption": text})
                ann_id += 1
            for cat in im.categories:
                objs.append({"id": obj_id, "image_id": im.image_id, "category_id": cat})
                obj_id += 1
        caps += list((extra_captions or {}).get(split, []))
        info = {"description": "embedcache fixture (generated)", "year": year}
        (root / "annotations" / f"captions_{split}{year}.json").write_text(
            json.dumps({"info": info, "images": imgs, "licenses": [], "annotations": caps[::-1] if reverse else caps}))
        if instances:
            (root / "annotations" / f"instances_{split}{year}.json").write_text(
                json.dumps({"info": info, "images": imgs, "annotations": objs, "categories": list(categories)}))
    return root


def write_flickr(root: Path, captions: Mapping[str, Sequence[str | bytes]], split_lists: Mapping[str, Sequence[str]],
                 *, pixels: Callable[[str], np.ndarray], text_dir: str = "Flickr8k_text",
                 extra_lines: Sequence[bytes] = ()) -> Path:
    """Flicker8k_Dataset/<name>.jpg (sic), <text_dir>/Flickr8k.token.txt ('<name>#k<TAB>caption', or the given
    bytes for a line) and the three Flickr_8k.<split>Images.txt lists."""
    images = root / "Flicker8k_Dataset"
    images.mkdir(parents=True, exist_ok=True)
    text = root / text_dir if text_dir else root
    lines: list[bytes] = []
    for name, caps in captions.items():
        save_image(images / name, pixels(name))
        lines += [c if isinstance(c, bytes) else f"{name}#{k}\t{c}".encode() for k, c in enumerate(caps)]
    write_lines(text / "Flickr8k.token.txt", lines + list(extra_lines))
    files = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}
    for split, names in split_lists.items():
        write_lines(text / files[split], names)
    return root


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_rows(n: int, seed: int) -> np.ndarray:
    """(n, 3072) uint8 in the release's channel-major order: 1024 red, 1024 green, 1024 blue values per row."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, batches: Sequence[tuple[np.ndarray, list[int]]], test: tuple[np.ndarray, list[int]],
                  names: Sequence[str]) -> Path:
    """cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta (pickled dicts, protocol 2)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for b, (data, labels) in enumerate(batches, 1):
        _dump(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "data": data, "labels": labels,
                                            "filenames": [f"img_{b}_{i}.png" for i in range(len(labels))]})
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": test[0], "labels": test[1],
                                  "filenames": [f"test_{i}.png" for i in range(len(test[1]))]})
    _dump(folder / "batches.meta", {"label_names": list(names), "num_cases_per_batch": len(batches[0][1]),
                                    "num_vis": 3072})
    return root


def write_cifar100(root: Path, splits: Mapping[str, tuple[np.ndarray, list[int], list[int]]]) -> Path:
    """cifar-100-python/train, test (data, fine_labels, coarse_labels) and meta (100 fine, 20 coarse names)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, (data, fine, coarse) in splits.items():
        _dump(folder / split, {"data": data, "fine_labels": fine, "coarse_labels": coarse,
                               "filenames": [f"{i}.png" for i in range(len(fine))]})
    _dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                            "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return root


def write_tiny_imagenet(parent: Path, wnids: Sequence[str], words: Mapping[str, str], per_class: int,
                        val: Sequence[tuple[str, str]], pixels: Callable[[str], np.ndarray]) -> Path:
    """tiny-imagenet-200/: wnids.txt, words.txt, train/<wnid>/images/<wnid>_<k>.JPEG + boxes, val/images +
    val_annotations.txt, an empty test/images."""
    root = parent / "tiny-imagenet-200"
    root.mkdir(parents=True, exist_ok=True)
    write_lines(root / "wnids.txt", wnids)
    write_lines(root / "words.txt", [f"{w}\t{name}" for w, name in words.items()])
    for wnid in wnids:
        images = root / "train" / wnid / "images"
        images.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            save_image(images / f"{wnid}_{k}.JPEG", pixels(f"{wnid}_{k}"))
        write_lines(root / "train" / wnid / f"{wnid}_boxes.txt", [f"{wnid}_{k}.JPEG\t0\t0\t63\t63"
                                                                  for k in range(per_class)])
    (root / "val" / "images").mkdir(parents=True, exist_ok=True)
    for name, _ in val:
        save_image(root / "val" / "images" / name, pixels(name))
    write_lines(root / "val" / "val_annotations.txt", [f"{n}\t{w}\t0\t32\t44\t62" for n, w in val])
    (root / "test" / "images").mkdir(parents=True, exist_ok=True)
    return root


QQP_HEADER = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"


def write_glue(folder: Path, files: Mapping[str, Sequence[str | bytes]]) -> Path:
    """GLUE TSVs in `folder` (QQP/, STS-B/, MRPC/): file name -> lines, header first, as given."""
    for name, lines in files.items():
        write_lines(folder / name, lines)
    return folder


def write_mvsa(root: Path, label_rows: Sequence[str], posts: Mapping[str, str | bytes],
               pixels: Callable[[str], np.ndarray], annotators: int = 1) -> Path:
    """labelResultAll.txt ('ID<TAB>text,image' once per annotator) and data/<id>.txt + data/<id>.jpg."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    write_lines(root / "labelResultAll.txt", ["ID\t" + "\t".join(["text,image"] * annotators), *label_rows])
    for post, text in posts.items():
        (root / "data" / f"{post}.txt").write_bytes(text if isinstance(text, bytes) else text.encode())
        save_image(root / "data" / f"{post}.jpg", pixels(post))
    return root


def write_mmsd(root: Path, text_files: Mapping[str, Sequence[str]], image_ids: Iterable[str],
               pixels: Callable[[str], np.ndarray]) -> Path:
    """text/train.txt, valid2.txt, test2.txt (one python-literal list per line) and dataset_image/<id>.jpg."""
    (root / "dataset_image").mkdir(parents=True, exist_ok=True)
    for name, lines in text_files.items():
        write_lines(root / "text" / name, lines)
    for image_id in image_ids:
        save_image(root / "dataset_image" / f"{image_id}.jpg", pixels(image_id))
    return root
