"""CIFAR-10/100 adapters (torchvision's readers) on pickles written in the python release's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedcache.datasets import DatasetFormatError, DatasetNotFoundError, create_dataset
from embedcache.datasets import fixtures as fx

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, per_batch: int = 2) -> Path:
    batches = [(fx.cifar_rows(per_batch, b), [(b + i) % 10 for i in range(per_batch)]) for b in range(1, 6)]
    return fx.write_cifar10(root, batches, (fx.cifar_rows(3, 0), [9, 0, 4]), CIFAR10_NAMES)


def write_cifar100(root: Path) -> Path:
    return fx.write_cifar100(root, {split: (fx.cifar_rows(n, n), list(range(90, 90 + n)), [19 - i for i in range(n)])
                                    for split, n in (("train", 4), ("test", 2))})


def test_cifar10_reads_batches_and_decodes_hwc(tmp_path: Path) -> None:
    ds = create_dataset("cifar10", root=write_cifar10(tmp_path))
    assert ds.splits() == ["train", "test"] and ds.modalities == ("image",)
    train = ds.load_split("train")
    assert len(train.images) == 10 and [it.id for it in train.images[:3]] == ["0", "1", "2"]
    assert [it.label for it in train.images[:4]] == [1, 2, 2, 3]  # batch 1: labels 1, 2; batch 2: 2, 3
    first = fx.cifar_rows(2, 1)[0]
    img = train.images[0].image
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert img[0, 1, 0] == first[1] and img[0, 1, 2] == first[2048 + 1]  # red / blue planes -> HWC
    assert ds.classes == tuple(CIFAR10_NAMES)
    assert [it.label for it in ds.load_split("test").images] == [9, 0, 4]


def test_cifar100_fine_and_coarse_labels(tmp_path: Path) -> None:
    root = write_cifar100(tmp_path)
    fine = create_dataset("cifar100", root=root)
    assert [it.label for it in fine.load_split("train").images] == [90, 91, 92, 93]
    assert fine.classes[90] == "fine90" and len(fine.classes) == 100
    coarse = create_dataset("cifar100", root=root, labels="coarse")
    assert [it.label for it in coarse.load_split("test").images] == [19, 18]
    assert coarse.classes == tuple(f"coarse{i}" for i in range(20))
    assert coarse.options() == {"labels": "coarse"} and fine.options() == {"labels": "fine"}


def test_missing_batch_is_a_format_error(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetFormatError, match="data_batch_3"):
        create_dataset("cifar10", root=root).load_split("train")


def test_not_found_names_the_download_command(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="embedcache download cifar100") as err:
        create_dataset("cifar100", root=tmp_path).load_split("train")
    assert "cifar-100-python/" in str(err.value)
