"""Tiny ImageNet (tiny-imagenet-200 from cs231n.stanford.edu): 200 classes, 64x64 JPEGs.

Published layout (tiny-imagenet-200.zip; checked against public loaders that read val_annotations.txt as
tab-separated File, Class, X, Y, H, W and train/<wnid>/images/<wnid>_<n>.JPEG)::

    <root>/tiny-imagenet-200/wnids.txt               the 200 wnids, one per line
    <root>/tiny-imagenet-200/words.txt               <wnid><TAB><names, comma-separated> for all 82,115 synsets
    <root>/tiny-imagenet-200/train/<wnid>/images/<wnid>_<n>.JPEG    (500 per class)
    <root>/tiny-imagenet-200/val/images/val_<n>.JPEG               (10,000)
    <root>/tiny-imagenet-200/val/val_annotations.txt <file><TAB><wnid><TAB>x0<TAB>y0<TAB>x1<TAB>y1
    <root>/tiny-imagenet-200/test/images/test_<n>.JPEG             (no labels: not a split here)

Splits ``train`` and ``val``. Labels index the wnids sorted (torchvision ImageFolder's order); class names are
the first name of each wnid in words.txt ("goldfish" for "goldfish, Carassius auratus"), for zero-shot prompts.
Ids are the image file stems.
"""

from __future__ import annotations

from pathlib import Path

from embedcache.datasets import DATASETS
from embedcache.datasets.base import BadItemError, Dataset, DatasetFormatError, Item, Split
from embedcache.datasets.common import check_choice, contained, contained_item, find_root, read_lines, require_file
from embedcache.datasets.download import RemoteFile, Source, register_source

FOLDER = "tiny-imagenet-200"
LAYOUT = """\
<root>/tiny-imagenet-200/   (or <root> itself)
  wnids.txt  words.txt
  train/<wnid>/images/<wnid>_<n>.JPEG
  val/images/val_<n>.JPEG   val/val_annotations.txt"""


@DATASETS.register("tiny-imagenet")
class TinyImageNet(Dataset):
    """Tiny ImageNet train (100,000) and val (10,000) images with their 200 class labels."""

    name = "tiny-imagenet"
    version = "1"
    modalities = ("image",)
    label_kind = "single"

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__(root)
        self._wnids: list[str] | None = None
        self._classes: tuple[str, ...] | None = None

    def _root(self) -> Path:
        return find_root(self.name, self.root, ["wnids.txt"], LAYOUT, "embedcache download tiny-imagenet",
                         nested=(FOLDER,), data_dir=self.data_dir)

    def splits(self) -> list[str]:
        return ["train", "val"]

    def wnids(self) -> list[str]:
        """The 200 wnids, sorted: label i is wnids()[i]."""
        if self._wnids is None:
            path = self._root() / "wnids.txt"
            self._wnids = sorted({ln.strip().decode("ascii", "replace") for ln in read_lines(path) if ln.strip()})
        return self._wnids

    @property
    def classes(self) -> tuple[str, ...]:
        if self._classes is None:
            self._classes = self._read_classes()
        return self._classes

    def _read_classes(self) -> tuple[str, ...]:
        path = require_file(self._root() / "words.txt", "Tiny ImageNet class names", "It is part of the zip.")
        names: dict[str, str] = {}
        for n, raw in enumerate(read_lines(path), start=1):
            wnid, tab, words = raw.decode("utf-8", errors="replace").partition("\t")
            if not tab:
                raise DatasetFormatError(f"{path}, line {n}: expected '<wnid><TAB><names>', found {raw[:60]!r}")
            names[wnid] = words.split(",")[0].strip()
        missing = [w for w in self.wnids() if w not in names]
        if missing:
            raise DatasetFormatError(f"{path}: no names for wnid(s) {', '.join(missing[:5])} of wnids.txt")
        return tuple(names[w] for w in self.wnids())

    def source_files(self) -> dict[str, list[Path]]:
        root = self._root()
        return {name: [root / name] for name in ("wnids.txt", "words.txt", "val/val_annotations.txt")}

    def load_split(self, split: str) -> Split:
        check_choice("split", split, self.splits())
        index = {w: i for i, w in enumerate(self.wnids())}
        items = self._train(index) if split == "train" else self._val(index)
        return Split(split, items)

    def _train(self, index: dict[str, int]) -> list[Item]:
        root = self._root() / "train"
        items = []
        for wnid in self.wnids():
            try:  # a wnid is a folder name: '..' or an absolute wnid would list a folder outside the root
                folder = contained(root, f"{wnid}/images", wnid)
            except BadItemError as exc:
                raise DatasetFormatError(f"{self._root() / 'wnids.txt'}: {exc.reason}") from None
            if not folder.is_dir():
                raise DatasetFormatError(f"missing {folder}: wnids.txt lists {wnid} but train/ has no images for it")
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() in (".jpeg", ".jpg"):  # a symlink out of the folder is a bad item
                    items.append(contained_item(folder, path.name, Item(id=path.stem, label=index[wnid])))
        return items

    def _val(self, index: dict[str, int]) -> list[Item]:
        root = self._root() / "val"
        path = require_file(root / "val_annotations.txt", "Tiny ImageNet val labels", "It is part of the zip.")
        items = []
        for n, raw in enumerate(read_lines(path), start=1):
            cells = raw.decode("utf-8", errors="replace").split("\t")
            if len(cells) < 2 or not cells[0]:
                raise DatasetFormatError(f"{path}, line {n}: expected '<file><TAB><wnid><TAB>x0 y0 x1 y1', "
                                         f"found {raw[:60]!r}")
            file, wnid = cells[0], cells[1]
            error = None if wnid in index else f"wnid {wnid!r} of {path.name} line {n} is not in wnids.txt"
            items.append(contained_item(root / "images", file, Item(id=Path(file).stem, label=index.get(wnid),
                                                                     error=error)))
        return items


# the md5 as used by public loaders (e.g. the TinyImageNet VisionDataset classes that download it)
register_source(Source("tiny-imagenet", (RemoteFile("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                                                    md5="90528d7ca1a48142e341f4ef8d21d0de"),)))
