"""Fashion-MNIST: the four IDX files, gzipped as published or not (Debian's dataset-fashion-mnist ships them).

Published layout (github zalandoresearch/fashion-mnist; the file names and md5s torchvision's FashionMNIST
lists; Debian's package installs the same four .gz files in /usr/share/datasets/fashion-mnist, checked with
``dpkg -L dataset-fashion-mnist``)::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]  t10k-images-idx3-ubyte[.gz]  t10k-labels-idx1-ubyte[.gz]

Also found in torchvision's own layout ``<root>/FashionMNIST/raw/``. torchvision's reader
(read_sn3_pascalvincent_tensor) opens files uncompressed only, so the IDX format is read here: a 4-byte magic
(0, 0, type 0x08 = uint8, number of dimensions), the big-endian int32 sizes, then the data. Images are
uint8 (28, 28) rows of one array; ids are the row index within the split; splits ``train`` and ``test``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from embedcache.datasets import DATASETS
from embedcache.datasets.base import Dataset, DatasetFormatError, Item, Split
from embedcache.datasets.common import check_choice, find_root
from embedcache.datasets.download import RemoteFile, Source, register_source

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
PREFIX = {"train": "train", "test": "t10k"}
LAYOUT = """\
<root>/   (Debian: /usr/share/datasets/fashion-mnist; torchvision: <root>/FashionMNIST/raw)
  train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
  t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz      (.gz or already unpacked)"""


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of uint8 with `ndim` dimensions (gzip or not) as an array; DatasetFormatError otherwise."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
        raise DatasetFormatError(f"{path}: cannot read ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != ndim:
        raise DatasetFormatError(f"{path}: expected an IDX magic 00 00 08 {ndim:02x} (uint8, {ndim} dims), "
                                 f"found {data[:4].hex(' ')}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    start = 4 + 4 * ndim
    if len(data) - start != int(np.prod(shape)):
        raise DatasetFormatError(f"{path}: header says {shape} = {int(np.prod(shape))} bytes of data, "
                                 f"found {len(data) - start}")
    return np.frombuffer(data, np.uint8, offset=start).reshape(shape)


@DATASETS.register("fashion-mnist")
class FashionMnist(Dataset):
    """Fashion-MNIST: 60,000 train and 10,000 test 28x28 grey images of 10 clothing classes."""

    name = "fashion-mnist"
    version = "1"
    modalities = ("image",)
    label_kind = "single"

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__(root)

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES

    def splits(self) -> list[str]:
        return ["train", "test"]

    def _root(self) -> Path:
        names = [f"{p}-{kind}" for p in PREFIX.values() for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
        markers = [(n, f"{n}.gz") for n in names]
        return find_root(self.name, self.root, markers, LAYOUT,
                         "embedcache download fashion-mnist, or apt-get install dataset-fashion-mnist",
                         nested=("FashionMNIST/raw",), well_known=(DEBIAN_DIR,), data_dir=self.data_dir)

    def _file(self, root: Path, name: str) -> Path:
        return root / name if (root / name).is_file() else root / f"{name}.gz"

    def source_files(self) -> dict[str, list[Path]]:
        root = self._root()
        return {f"{p}-{kind}": [self._file(root, f"{p}-{kind}")] for p in PREFIX.values()
                for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")}

    def load_split(self, split: str) -> Split:
        check_choice("split", split, self.splits())
        root, prefix = self._root(), PREFIX[split]
        images = read_idx(self._file(root, f"{prefix}-images-idx3-ubyte"), 3)  # (N, 28, 28) uint8
        labels = read_idx(self._file(root, f"{prefix}-labels-idx1-ubyte"), 1)  # (N,) uint8
        if len(images) != len(labels):
            raise DatasetFormatError(f"{root}: {len(images)} {prefix} images but {len(labels)} labels")
        if labels.size and labels.max() >= len(CLASSES):
            raise DatasetFormatError(f"{root}: {prefix} label {labels.max()} is not a Fashion-MNIST class (0..9)")
        return Split(split, [Item(id=str(i), image=images[i], label=int(labels[i])) for i in range(len(images))])


# md5s as listed in torchvision/datasets/mnist.py; the .gz files are kept as published (the adapter reads them)
FMNIST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
MD5 = (("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
       ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
       ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
       ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"))
register_source(Source("fashion-mnist", tuple(RemoteFile(f"{FMNIST}/{name}", md5=md5, extract_to=None)
                                              for name, md5 in MD5)))
