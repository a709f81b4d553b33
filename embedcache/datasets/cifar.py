"""CIFAR-10 and CIFAR-100, the python-pickle release, read with torchvision's CIFAR10/CIFAR100 classes.

Published layout (cifar-10-python.tar.gz / cifar-100-python.tar.gz from www.cs.toronto.edu/~kriz, as listed in
torchvision/datasets/cifar.py)::

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta (key label_names)
    <root>/cifar-100-python/train, test, meta (keys fine_label_names, coarse_label_names)

torchvision also checks each file's md5 on every load; here `embedcache download` verifies the archive's md5
once, so the per-file check is switched off (file names, pickle keys and the HWC decoding stay torchvision's).
Images are uint8 (32, 32, 3) rows of one contiguous array; ids are the row index within the split.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from embedcache.datasets import DATASETS
from embedcache.datasets.base import Dataset, DatasetFormatError, Item, Split
from embedcache.datasets.common import check_choice, find_root
from embedcache.datasets.download import RemoteFile, Source, register_source


def _unchecked(cls: type) -> type:
    """A torchvision CIFAR class whose integrity check only asks that the files exist (md5 None)."""
    return type(f"Unchecked{cls.__name__}", (cls,), {
        "train_list": [[name, None] for name, _ in cls.train_list],
        "test_list": [[name, None] for name, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })


class _CifarBase(Dataset):
    modalities = ("image",)
    label_kind = "single"
    tv_name = ""  # torchvision class name

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        self._classes: tuple[str, ...] | None = None

    def splits(self) -> list[str]:
        return ["train", "test"]

    def _tv_class(self) -> type:
        import torchvision.datasets as tvd  # imported here: only stage one needs it

        return _unchecked(getattr(tvd, self.tv_name))

    def _root(self) -> Path:
        cls = self._tv_class()
        folder = cls.base_folder
        files = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        layout = f"<root>/{folder}/{', '.join(files)}"
        return find_root(self.name, self.root, [f"{folder}/{cls.meta['filename']}"], layout,
                         f"embedcache download {self.name}")

    def _load(self, split: str) -> Any:
        root, cls = self._root(), self._tv_class()
        try:
            return cls(str(root), train=split == "train", download=False)
        except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
            files = [n for n, _ in (cls.train_list if split == "train" else cls.test_list)]
            raise DatasetFormatError(f"{root / cls.base_folder}: {exc}; expected the files {', '.join(files)} "
                                     f"of the python-pickle release (embedcache download {self.name})") from None
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as exc:
            raise DatasetFormatError(f"{root / cls.base_folder}: not a CIFAR python pickle ({exc!r})") from None

    def _labels(self, tv: Any, split: str) -> list[int]:
        return list(tv.targets)

    def load_split(self, split: str) -> Split:
        check_choice("split", split, self.splits())
        tv = self._load(split)
        self._classes = self._classes or self._class_names(tv)
        data = np.ascontiguousarray(tv.data)  # (N, 32, 32, 3) uint8; items hold row views
        labels = self._labels(tv, split)
        images = [Item(id=str(i), image=data[i], label=int(labels[i])) for i in range(len(data))]
        return Split(split, images)

    def _class_names(self, tv: Any) -> tuple[str, ...]:
        return tuple(tv.classes)

    @property
    def classes(self) -> tuple[str, ...]:
        if self._classes is None:
            self._classes = self._class_names(self._load("test"))
        return self._classes


@DATASETS.register("cifar10")
class Cifar10(_CifarBase):
    """CIFAR-10: 50,000 train and 10,000 test images, 10 classes (names from batches.meta)."""

    name = "cifar10"
    version = "1"
    tv_name = "CIFAR10"

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__(root)


@DATASETS.register("cifar100")
class Cifar100(_CifarBase):
    """CIFAR-100: 100 fine classes (default) or 20 coarse superclasses (option labels="coarse")."""

    name = "cifar100"
    version = "1"
    tv_name = "CIFAR100"

    def __init__(self, root: str | Path | None = None, *, labels: str = "fine") -> None:
        super().__init__(root, labels=check_choice("labels", labels, ("fine", "coarse")))

    def _labels(self, tv: Any, split: str) -> list[int]:
        if self._options["labels"] == "fine":
            return list(tv.targets)  # torchvision reads fine_labels
        name = tv.train_list[0][0] if split == "train" else tv.test_list[0][0]
        return list(_unpickle(Path(tv.root) / tv.base_folder / name)["coarse_labels"])

    def _class_names(self, tv: Any) -> tuple[str, ...]:
        if self._options["labels"] == "fine":
            return tuple(tv.classes)  # meta["fine_label_names"]
        return tuple(_unpickle(Path(tv.root) / tv.base_folder / tv.meta["filename"])["coarse_label_names"])


def _unpickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")  # the release was pickled by python 2


# md5s as listed in torchvision/datasets/cifar.py
KRIZ = "https://www.cs.toronto.edu/~kriz"
register_source(
    Source("cifar10", (RemoteFile(f"{KRIZ}/cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a"),)),
    Source("cifar100", (RemoteFile(f"{KRIZ}/cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85"),)),
)
