"""The dataset contract: what an adapter gives stage one (items, splits, labels, links, pairs).

An adapter reads one dataset family in its real published layout and returns, per split, the image
items and text items (each with the dataset's own id), their labels, the caption -> image links and
the graded text pairs. Stage one embeds the items of one modality into a store and records the
annotations beside them, so stage two never needs the raw data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from embedcache.errors import UserError

Modality = Literal["image", "text"]
LabelKind = Literal["none", "single", "multi"]
# Where an adapter's items come from: a published dataset read from its layout (with a download source or a
# request), the user's own files in a generic layout, generated on first use, or derived from another dataset.
Origin = Literal["published", "user", "generated", "derived"]

# An image is a file path, the encoded bytes of a file, or a decoded uint8 array (H, W) or (H, W, C).
ImageSource = str | bytes | np.ndarray


@dataclass(frozen=True, eq=False)
class Item:
    """One thing to embed. `label` is a class index (single) or a tuple of class indices (multi)."""

    id: str
    image: ImageSource | None = None
    text: str | None = None
    label: int | tuple[int, ...] | None = None
    link: str | None = None  # id of the item this one belongs to in the other modality (caption -> image)
    error: str | None = None  # set by the adapter when the item is broken at the source (e.g. non-UTF-8 text)


@dataclass(frozen=True)
class Pair:
    """Two text items of the same split and their gold score (STS-B 0..5) or label (MRPC/QQP 0/1)."""

    a: str
    b: str
    score: float


@dataclass
class Split:
    """Everything one split holds. Ids are unique within a modality and split."""

    name: str
    images: list[Item] = field(default_factory=list)
    texts: list[Item] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)

    def items(self, modality: Modality) -> list[Item]:
        return self.images if modality == "image" else self.texts


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A dataset's files are missing: says where we looked, the layout expected and how to get it."""

    def __init__(self, name: str, looked: list[Path | str], layout: str, fix: str) -> None:
        where = "\n".join(f"  - {p}" for p in looked)
        super().__init__(
            f"dataset {name!r} not found. Looked in:\n{where}\nExpected layout:\n{layout.rstrip()}\nTo get it: {fix}",
            fix=fix,
        )


class DatasetFormatError(UserError, ValueError):
    """A dataset's files exist but do not match the published layout (names the file and line)."""


class BadItemError(ValueError):
    """One item cannot be used (corrupt image, empty caption, ...): `--on-error skip` records the reason."""

    def __init__(self, item_id: str, reason: str) -> None:
        super().__init__(f"item {item_id!r}: {reason}")
        self.item_id = item_id
        self.reason = reason


class Dataset(ABC):
    """One dataset adapter. Subclasses set the class attributes and implement `splits`/`load_split`.

    `root` is a local copy in the published layout (None: the adapter's default locations, first
    `<data_dir>/raw/<name>`). Options are plain keyword arguments; `options()` returns them for the fingerprint.
    `data_dir` (set by `create_dataset`; None: $EMBEDCACHE_DATA_DIR or ./data) is where, not what: it is no option.
    """

    name: str = ""
    data_dir: Path | None = None
    version: str = "1"
    modalities: tuple[Modality, ...] = ("image", "text")
    label_kind: LabelKind = "none"
    origin: ClassVar[Origin] = "published"  # "published": `embedcache download <name>` knows it (tests check)

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        self.root = Path(root) if root is not None else None
        self._options = options

    def options(self) -> dict[str, Any]:
        """Settings that change the items produced (they enter the store fingerprint)."""
        return dict(self._options)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, in label-index order (empty when the dataset has no labels)."""
        return ()

    def source_files(self) -> dict[str, list[Path]]:
        """The raw files whose content decides the items (annotations, captions, labels, split lists), under a
        label naming them. Their digests (`common.file_digests`) enter the store fingerprint, so a caption file
        edited in place marks the store stale. Image files are left out (a changed image is not detected)."""
        return {}

    @abstractmethod
    def splits(self) -> list[str]:
        """The split names, in a stable order (e.g. ['train', 'val', 'test'])."""

    @abstractmethod
    def load_split(self, split: str) -> Split:
        """Read one split. Raise DatasetNotFoundError / DatasetFormatError with actionable messages."""
