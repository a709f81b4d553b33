"""COCO Captions (2014 or 2017) with the 80 instance categories as multi-labels.

Published layout (images.cocodataset.org: annotations/annotations_trainval2014.zip unpacks to ``annotations/``,
zips/train2014.zip to ``train2014/``; checked against public download scripts such as
github Vitonka/image-captioning datasets/coco.sh)::

    <root>/annotations/captions_train2014.json    {"images": [{"id", "file_name", ...}],
                                                    "annotations": [{"id", "image_id", "caption"}]}
    <root>/annotations/instances_train2014.json   {"categories": [{"id", "name", "supercategory"}],
                                                    "annotations": [{"image_id", "category_id", ...}]}
    <root>/train2014/COCO_train2014_000000000009.jpg   (2017: train2017/000000000009.jpg)
    (and the same for val2014 / val2017)

Splits ``train`` and ``val``. Image items: id = COCO image id, image = file path. Text items: id = caption
annotation id, link = its image id, the first `max_captions` captions of each image by annotation id (5: the
~414k pairs of COCO 2014 train that CBMF uses). Labels (both modalities): the sorted indices of the categories
present in the image, in the order of the 80 category ids; `classes` are the category names.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from embedcache.datasets import DATASETS
from embedcache.datasets.base import Dataset, DatasetFormatError, Item, Split
from embedcache.datasets.common import check_choice, contained_item, find_root, require_file
from embedcache.datasets.download import RemoteFile, Source, register_source

LAYOUT = """\
<root>/
  annotations/captions_train{year}.json  captions_val{year}.json
  annotations/instances_train{year}.json instances_val{year}.json   (for the 80-category multi-labels)
  train{year}/<file_name from the json>  val{year}/<file_name>"""


@DATASETS.register("coco")
class Coco(Dataset):
    """COCO Captions: images, up to `max_captions` captions each (linked), and 80-category multi-labels."""

    name = "coco"
    version = "1"
    modalities = ("image", "text")
    label_kind = "multi"

    def __init__(self, root: str | Path | None = None, *, year: int = 2014, max_captions: int = 5,
                 labels: bool = True) -> None:
        check_choice("year", int(year), (2014, 2017))
        super().__init__(root, year=int(year), max_captions=int(max_captions), labels=bool(labels))
        self._names: tuple[str, ...] | None = None

    def _root(self) -> Path:
        year = self._options["year"]
        fix = f"embedcache download {'coco' if year == 2014 else 'coco-2017'}"
        return find_root(self.name, self.root, [f"annotations/captions_train{year}.json"],
                         LAYOUT.format(year=year), fix, nested=("coco",), data_dir=self.data_dir)

    def splits(self) -> list[str]:
        return ["train", "val"]

    def source_files(self) -> dict[str, list[Path]]:
        ann = self._root() / "annotations"
        kinds = ("captions", "instances") if self._options["labels"] else ("captions",)
        names = [f"{kind}_{split}{self._options['year']}.json" for kind in kinds for split in self.splits()]
        return {name: [ann / name] for name in names}

    @property
    def classes(self) -> tuple[str, ...]:
        if not self._options["labels"]:
            return ()
        if self._names is None:  # load_split already read them; else read the smaller val file
            path = self._instances_file("val")
            self._names = tuple(name for _, name in self._categories(_load_json(path), path))
        return self._names

    def load_split(self, split: str) -> Split:
        check_choice("split", split, self.splits())
        try:
            return self._read(split)
        except (KeyError, TypeError) as exc:  # a record without 'id', 'image_id', 'file_name', ...
            raise DatasetFormatError(f"COCO {split} annotations: a record lacks or mistypes {exc}; expected the "
                                     f"COCO annotation format (images: id, file_name; annotations: id, image_id, "
                                     f"caption / category_id)") from None

    def _read(self, split: str) -> Split:
        root, year = self._root(), self._options["year"]
        folder = f"{split}{year}"
        path = require_file(root / "annotations" / f"captions_{folder}.json", "COCO captions file",
                            f"Unpack annotations_trainval{year}.zip into {root}.")
        captions = _load_json(path)
        images = _check_list(captions, "images", path)
        labels = self._labels(split) if self._options["labels"] else {}
        image_items = [  # file_name must stay inside <root>/<split><year>/ (absolute names and '..' are refused)
            contained_item(root / folder, str(im["file_name"]), Item(
                id=str(im["id"]), label=labels.get(im["id"], ()) if self._options["labels"] else None))
            for im in sorted(images, key=lambda im: im["id"])
        ]
        texts = self._captions(captions, labels, path)
        return Split(split, image_items, texts)

    def _captions(self, data: dict[str, Any], labels: dict[int, tuple[int, ...]], path: Path) -> list[Item]:
        known = {im["id"] for im in data["images"]}
        per_image: dict[int, int] = defaultdict(int)
        items = []
        for ann in sorted(_check_list(data, "annotations", path), key=lambda a: a["id"]):
            image_id = ann["image_id"]
            per_image[image_id] += 1
            if per_image[image_id] > self._options["max_captions"]:
                continue
            error = None if image_id in known else f"caption links to image id {image_id}, not listed in {path.name}"
            text = ann.get("caption")
            if error is None and not isinstance(text, str):
                error = f"caption is {type(text).__name__}, expected a string"
            items.append(Item(id=str(ann["id"]), text=text if isinstance(text, str) else None, link=str(image_id),
                              label=labels.get(image_id, ()) if self._options["labels"] else None, error=error))
        return items

    def _instances_file(self, split: str) -> Path:
        root, year = self._root(), self._options["year"]
        return require_file(root / "annotations" / f"instances_{split}{year}.json", "COCO instances file",
                            f"Unpack annotations_trainval{year}.zip into {root}, or pass the option labels=false "
                            f"to read captions without the 80-category labels.")

    @staticmethod
    def _categories(data: dict[str, Any], path: Path) -> list[tuple[int, str]]:
        """(category id, name) sorted by id: label index i is the i-th smallest id (80 of them, ids 1..90)."""
        return sorted((c["id"], c["name"]) for c in _check_list(data, "categories", path))

    def _labels(self, split: str) -> dict[int, tuple[int, ...]]:
        """image id -> sorted category indices (index = position of the category id among the sorted ids)."""
        path = self._instances_file(split)
        data = _load_json(path)
        cats = self._categories(data, path)
        self._names = self._names or tuple(name for _, name in cats)
        index = {cid: i for i, (cid, _) in enumerate(cats)}
        present: dict[int, set[int]] = defaultdict(set)
        for ann in _check_list(data, "annotations", path):
            if ann["category_id"] not in index:
                raise DatasetFormatError(f"{path}: annotation {ann.get('id')} has category_id {ann['category_id']},"
                                         f" not among the file's categories")
            present[ann["image_id"]].add(index[ann["category_id"]])
        return {image_id: tuple(sorted(s)) for image_id, s in present.items()}


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{path}: expected a JSON object at the top level, found {type(data).__name__}")
    return data


def _check_list(data: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    value = data.get(key)
    if not isinstance(value, list):
        raise DatasetFormatError(f"{path}: expected a list under {key!r} (COCO annotation format); "
                                 f"found {type(value).__name__}")
    return value


# COCO publishes no checksums. Both years share <data-dir>/raw/coco (annotations/ names differ by year).
COCO = "http://images.cocodataset.org"
register_source(*(Source(name, (RemoteFile(f"{COCO}/annotations/annotations_trainval{year}.zip"),
                                RemoteFile(f"{COCO}/zips/train{year}.zip"), RemoteFile(f"{COCO}/zips/val{year}.zip")),
                         dataset="coco") for year, name in ((2014, "coco"), (2017, "coco-2017"))))
