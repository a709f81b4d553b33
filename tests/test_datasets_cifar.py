"""CIFAR-10/100 adapters (torchvision's readers) on pickles written in the python release's layout."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from embedcache.datasets import DatasetFormatError, DatasetNotFoundError, create_dataset

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _rows(n: int, seed: int) -> np.ndarray:
    # (n, 3072) uint8 in the release's channel-major order: 1024 red, 1024 green, 1024 blue values per row
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 2) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(1, 6):
        _dump(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "data": _rows(per_batch, b),
                                            "labels": [(b + i) % 10 for i in range(per_batch)],
                                            "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)]})
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": _rows(3, 0), "labels": [9, 0, 4],
                                  "filenames": ["a.png", "b.png", "c.png"]})
    _dump(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return root


def write_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, n in (("train", 4), ("test", 2)):
        _dump(folder / split, {"data": _rows(n, n), "fine_labels": list(range(90, 90 + n)),
                               "coarse_labels": [19 - i for i in range(n)],
                               "filenames": [f"{i}.png" for i in range(n)]})
    _dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                            "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return root


def test_cifar10_reads_batches_and_decodes_hwc(tmp_path: Path) -> None:
    ds = create_dataset("cifar10", root=write_cifar10(tmp_path))
    assert ds.splits() == ["train", "test"] and ds.modalities == ("image",)
    train = ds.load_split("train")
    assert len(train.images) == 10 and [it.id for it in train.images[:3]] == ["0", "1", "2"]
    assert [it.label for it in train.images[:4]] == [1, 2, 2, 3]  # batch 1: labels 1, 2; batch 2: 2, 3
    first = _rows(2, 1)[0]
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
