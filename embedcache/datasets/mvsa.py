"""MVSA-Single and MVSA-Multiple (Niu et al. 2016): tweets (image + text) with sentiment labels.

Published layout (the MCRLab release, requested from the authors; checked against public loaders that read
``MVSA_Single/labelResultAll.txt`` and ``data/<id>.txt`` / ``data/<id>.jpg``, e.g. the MultiSentiNet README
(github xunan0812/MultiSentiNet) for the cleaning rule)::

    <root>/labelResultAll.txt   MVSA-Single:   "ID<TAB>text,image" then "<id><TAB><text label>,<image label>"
                                MVSA-Multiple: "ID<TAB>text,image<TAB>text,image<TAB>text,image" (3 annotators)
    <root>/data/<id>.jpg        the tweet's image
    <root>/data/<id>.txt        the tweet's text (mostly UTF-8; some files are not)

Cleaning (../shared/seed-notes.md; MultiSentiNet's table): MVSA-Multiple first takes, per modality, the label
at least 2 of the 3 annotators agree on (posts without one are dropped). Then a post keeps the label both
modalities share; positive or negative beside neutral wins; positive against negative drops the post
(MVSA-Single: 4,869 posts -> 4,511). The kept posts, sorted by id, are split 8:1:1 by a seeded shuffle
(option `seed`). Items of both modalities have the post id; text items link to the image of their post.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from embedcache.datasets import DATASETS
from embedcache.datasets.base import BadItemError, Dataset, DatasetFormatError, Item, Split
from embedcache.datasets.common import (
    check_choice,
    contained,
    contained_item,
    decode,
    find_root,
    read_lines,
    seeded_split,
)
from embedcache.datasets.download import Source, register_source

CLASSES = ("negative", "neutral", "positive")
SPLITS = ("train", "val", "test")
FIX = ("no direct download exists: request MVSA from its authors (MCRLab, University of Ottawa: "
       "http://mcrlab.net/research/mvsa-sentiment-analysis-on-multi-view-social-data/) and unpack it so that "
       "labelResultAll.txt and data/ sit in {where}")


def combine(text: str | None, image: str | None) -> str | None:
    """One post label from its text and image labels (None: drop the post)."""
    if text is None or image is None:
        return None
    if text == image:
        return text
    if "neutral" in (text, image):
        return image if text == "neutral" else text
    return None  # positive vs negative


def majority(labels: list[str]) -> str | None:
    """The label more than half the annotators gave (2 of 3; the only one of 1), else None."""
    label, count = Counter(labels).most_common(1)[0]
    return label if 2 * count > len(labels) else None


class _Mvsa(Dataset):
    modalities = ("image", "text")
    label_kind = "single"
    folder = ""  # the folder the release unpacks to
    annotators = 1

    def __init__(self, root: str | Path | None = None, *, seed: int = 0, non_utf8: str = "latin-1") -> None:
        super().__init__(root, seed=int(seed), non_utf8=check_choice("non_utf8", non_utf8, ("latin-1", "error")))
        self._parts: dict[str, list[str]] | None = None
        self._labels: dict[str, int] = {}

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES

    def splits(self) -> list[str]:
        return list(SPLITS)

    def _root(self) -> Path:
        cols = "<TAB>".join(["text,image"] * self.annotators)
        layout = (f"<root>/   (the release's {self.folder}/ folder, or its parent)\n"
                  f"  labelResultAll.txt   header 'ID<TAB>{cols}'\n  data/<id>.jpg  data/<id>.txt")
        return find_root(self.name, self.root, ["labelResultAll.txt", "data"], layout,
                         FIX.format(where=f"<data-dir>/raw/{self.name}/ (or pass --root)"), nested=(self.folder,),
                         data_dir=self.data_dir)

    def posts(self) -> dict[str, int]:
        """post id -> label index, after the cleaning rule."""
        path = self._root() / "labelResultAll.txt"
        lines = read_lines(path)
        if not lines or not lines[0].startswith(b"ID"):
            raise DatasetFormatError(f"{path}, line 1: expected the header 'ID<TAB>text,image...'")
        out = {}
        for n, raw in enumerate(lines[1:], start=2):
            if raw.strip():
                post, label = self._parse(raw.decode("utf-8", errors="replace"), path, n)
                if label is not None:
                    out[post] = CLASSES.index(label)
        return out

    def _parse(self, line: str, path: Path, n: int) -> tuple[str, str | None]:
        cells = line.strip().split("\t")
        pairs = [c.split(",") for c in cells[1:]]
        if len(cells) != 1 + self.annotators or any(len(p) != 2 or set(p) - set(CLASSES) for p in pairs):
            raise DatasetFormatError(
                f"{path}, line {n}: expected '<id>' and {self.annotators} '<text label>,<image label>' "
                f"column(s) of {'/'.join(CLASSES)}, found {line.strip()[:80]!r}")
        text = majority([p[0] for p in pairs])
        image = majority([p[1] for p in pairs])
        return cells[0], combine(text, image)

    def source_files(self) -> dict[str, list[Path]]:
        root = self._root()
        return {"labelResultAll.txt": [root / "labelResultAll.txt"], "data/*.txt": sorted(root.glob("data/*.txt"))}

    def load_split(self, split: str) -> Split:
        check_choice("split", split, self.splits())
        if self._parts is None:
            self._labels = self.posts()
            ids = sorted(self._labels, key=lambda s: (len(s), s))  # numeric order for numeric ids
            self._parts = dict(zip(SPLITS, seeded_split(ids, self._options["seed"], (0.8, 0.1, 0.1)), strict=True))
        data = self._root() / "data"
        ids = sorted(self._parts[split], key=lambda s: (len(s), s))
        images = [self._image(data, i) for i in ids]
        texts = [self._text(data, i) for i in ids]
        return Split(split, images, texts)

    def _image(self, data: Path, post: str) -> Item:
        item = contained_item(data, f"{post}.jpg", Item(id=post, label=self._labels[post]))
        if item.error is None and not Path(item.image).is_file():
            return dataclasses.replace(item, error=f"missing image file {item.image}")
        return item

    def _text(self, data: Path, post: str) -> Item:
        try:  # the post id comes from labelResultAll.txt: '..' or a symlink must not read a file outside data/
            path = contained(data, f"{post}.txt", post)
        except BadItemError as exc:
            return Item(id=post, link=post, label=self._labels[post], error=exc.reason)
        if not path.is_file():
            return Item(id=post, link=post, label=self._labels[post], error=f"missing text file {path}")
        raw = path.read_bytes().strip()
        if self._options["non_utf8"] == "latin-1" and not _is_utf8(raw):
            raw = raw.decode("latin-1").encode("utf-8")  # public MVSA loaders read such files as latin-1
        text, error = decode(raw, post)
        if error is None and not text.strip():
            text, error = None, "empty text"
        return Item(id=post, text=text.strip() if text else None, link=post, label=self._labels[post], error=error)


@DATASETS.register("mvsa-single")
class MvsaSingle(_Mvsa):
    """MVSA-Single: one annotator's text and image labels per post."""

    name = "mvsa-single"
    version = "1"
    folder = "MVSA_Single"
    annotators = 1


@DATASETS.register("mvsa-multiple")
class MvsaMultiple(_Mvsa):
    """MVSA-Multiple: three annotators; per-modality majority, then the same combination rule."""

    name = "mvsa-multiple"
    version = "1"
    folder = "MVSA"
    annotators = 3


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# No direct download: `embedcache download mvsa-*` says where to ask and the layout to unpack to.
_REQUEST = ("request MVSA-{kind} from its authors (MCRLab, University of Ottawa: "
            "http://mcrlab.net/research/mvsa-sentiment-analysis-on-multi-view-social-data/)")
register_source(
    Source("mvsa-single", request=_REQUEST.format(kind="Single"),
           layout="<dest>/labelResultAll.txt, <dest>/data/<id>.jpg, <dest>/data/<id>.txt"),
    Source("mvsa-multiple", request=_REQUEST.format(kind="Multiple"),
           layout="<dest>/labelResultAll.txt (3 annotators), <dest>/data/<id>.jpg, <dest>/data/<id>.txt"),
)
