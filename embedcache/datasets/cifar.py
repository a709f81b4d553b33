"""CIFAR-10 and CIFAR-100, the python-pickle release, read through a restricted unpickler (never pickle.load).

Published layout (cifar-10-python.tar.gz / cifar-100-python.tar.gz from www.cs.toronto.edu/~kriz, file names and
keys as listed in torchvision/datasets/cifar.py)::

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta (key label_names)
    <root>/cifar-100-python/train, test, meta (keys fine_label_names, coarse_label_names)

Each batch is a pickled dict: ``data`` (N, 3072) uint8 channel-major rows, ``labels`` (CIFAR-10) or
``fine_labels``/``coarse_labels`` (CIFAR-100). The batches are unpickled by `safe_pickle.load_data_pickle`, which
admits only dicts, lists, strings, numbers and numpy arrays: a batch whose pickle names any other callable is a
DatasetFormatError and nothing in it runs (a plain pickle.load, as torchvision's reader does, would run it).
`embedcache download` verifies the archive's md5 once. Images are uint8 (32, 32, 3) rows of one contiguous
array (torchvision's HWC decoding); ids are the row index within the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedcache.datasets import DATASETS
from embedcache.datasets.base import Dataset, DatasetFormatError, Item, Split
from embedcache.datasets.common import check_choice, find_root
from embedcache.datasets.download import RemoteFile, Source, register_source
from embedcache.datasets.safe_pickle import load_data_pickle


@dataclass(frozen=True)
class CifarFiles:
    """One release's folder and file names (torchvision's train_list / test_list / meta)."""

    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    names_key: str  # the meta key of the class names


CIFAR10 = CifarFiles("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                     "batches.meta", "label_names")
CIFAR100 = CifarFiles("cifar-100-python", ("train",), ("test",), "meta", "fine_label_names")


class _CifarBase(Dataset):
    modalities = ("image",)
    label_kind = "single"
    files = CIFAR10

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        self._classes: tuple[str, ...] | None = None

    def splits(self) -> list[str]:
        return ["train", "test"]

    def _folder(self) -> Path:
        f = self.files
        layout = f"<root>/{f.folder}/{', '.join(f.train + f.test + (f.meta,))}"
        return find_root(self.name, self.root, [f"{f.folder}/{f.meta}"], layout,
                         f"embedcache download {self.name}") / f.folder

    def source_files(self) -> dict[str, list[Path]]:
        f = self.files  # the batches hold the labels: hashed whole (about 180 MB)
        return {name: [self._folder() / name] for name in f.train + f.test + (f.meta,)}

    def _read(self, name: str) -> dict[str, Any]:
        """One pickled dict of the release, through the restricted unpickler."""
        fix = f"expected the {name} file of the python-pickle release (embedcache download {self.name})"
        data = load_data_pickle(self._folder() / name, fix)
        if not isinstance(data, dict):
            raise DatasetFormatError(f"{self._folder() / name}: expected a pickled dict, found "
                                     f"{type(data).__name__}; {fix}")
        return data

    def _batches(self, split: str) -> tuple[np.ndarray, list[int]]:
        """(N, 32, 32, 3) uint8 images and their labels, the split's batches concatenated in file order."""
        data, labels = [], []
        for name in self.files.train if split == "train" else self.files.test:
            entry = self._read(name)
            try:
                rows = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                data.append(rows)
                labels += [int(x) for x in entry[self._label_key()]]
            except (KeyError, ValueError, TypeError) as exc:
                raise DatasetFormatError(f"{self._folder() / name}: not a CIFAR batch ({type(exc).__name__}: {exc});"
                                         f" expected keys data (N, 3072) uint8 and {self._label_key()}") from None
            if len(labels) != sum(len(d) for d in data):
                raise DatasetFormatError(f"{self._folder() / name}: {len(rows)} images but a different number "
                                         f"of {self._label_key()}")
        return np.concatenate(data).transpose(0, 2, 3, 1), labels  # CHW -> HWC, as torchvision

    def _label_key(self) -> str:
        return "labels"

    def load_split(self, split: str) -> Split:
        check_choice("split", split, self.splits())
        images, labels = self._batches(split)
        data = np.ascontiguousarray(images)  # (N, 32, 32, 3) uint8; items hold row views
        return Split(split, [Item(id=str(i), image=data[i], label=labels[i]) for i in range(len(data))])

    def _names_key(self) -> str:
        return self.files.names_key

    @property
    def classes(self) -> tuple[str, ...]:
        if self._classes is None:
            meta = self._read(self.files.meta)
            names = meta.get(self._names_key())
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DatasetFormatError(f"{self._folder() / self.files.meta}: expected a list of class names "
                                         f"under {self._names_key()!r}")
            self._classes = tuple(names)
        return self._classes


@DATASETS.register("cifar10")
class Cifar10(_CifarBase):
    """CIFAR-10: 50,000 train and 10,000 test images, 10 classes (names from batches.meta)."""

    name = "cifar10"
    version = "1"
    files = CIFAR10

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__(root)


@DATASETS.register("cifar100")
class Cifar100(_CifarBase):
    """CIFAR-100: 100 fine classes (default) or 20 coarse superclasses (option labels="coarse")."""

    name = "cifar100"
    version = "1"
    files = CIFAR100

    def __init__(self, root: str | Path | None = None, *, labels: str = "fine") -> None:
        super().__init__(root, labels=check_choice("labels", labels, ("fine", "coarse")))

    def _label_key(self) -> str:
        return f"{self._options['labels']}_labels"

    def _names_key(self) -> str:
        return f"{self._options['labels']}_label_names"


# md5s as listed in torchvision/datasets/cifar.py
KRIZ = "https://www.cs.toronto.edu/~kriz"
register_source(
    Source("cifar10", (RemoteFile(f"{KRIZ}/cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a"),)),
    Source("cifar100", (RemoteFile(f"{KRIZ}/cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85"),)),
)
