"""Tiny ImageNet adapter on a fixture in tiny-imagenet-200's published layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedcache.datasets import DatasetFormatError, DatasetNotFoundError, create_dataset
from embedcache.datasets import fixtures as fx

WNIDS = ["n02124075", "n01443537"]  # wnids.txt order is not sorted in the release either


def write_tiny(parent: Path) -> Path:
    words = {"n00001740": "entity", "n01443537": "goldfish, Carassius auratus", "n02124075": "Egyptian cat"}
    val = [("val_0.JPEG", "n01443537"), ("val_1.JPEG", "n02124075"), ("val_2.JPEG", "n99999999")]
    colour = lambda name: np.full((64, 64, 3), (0, 128, 0) if name.startswith("val") else (255, 0, 0), np.uint8)  # noqa: E731
    return fx.write_tiny_imagenet(parent, WNIDS, words, 3, val, colour)


def test_train_and_val_with_sorted_wnid_labels(tmp_path: Path) -> None:
    write_tiny(tmp_path)
    ds = create_dataset("tiny-imagenet", root=tmp_path)  # the parent of tiny-imagenet-200 works too
    assert ds.splits() == ["train", "val"]
    assert ds.classes == ("goldfish", "Egyptian cat")  # n01443537 < n02124075; first synonym only
    train = ds.load_split("train")
    assert len(train.images) == 6
    assert [(it.id, it.label) for it in train.images[:4]] == [
        ("n01443537_0", 0), ("n01443537_1", 0), ("n01443537_2", 0), ("n02124075_0", 1)]
    assert Path(train.images[0].image).is_file()
    val = ds.load_split("val")
    assert [(it.id, it.label) for it in val.images[:2]] == [("val_0", 0), ("val_1", 1)]
    assert val.images[0].image == str(tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_0.JPEG")


def test_val_row_with_unknown_wnid_is_an_item_error(tmp_path: Path) -> None:
    val = create_dataset("tiny-imagenet", root=write_tiny(tmp_path)).load_split("val")
    assert [it.id for it in val.images if it.error] == ["val_2"]
    assert "n99999999" in val.images[2].error


def test_broken_layouts(tmp_path: Path) -> None:
    root = write_tiny(tmp_path)
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG n01443537 0 32 44 62\n")  # spaces, not tabs
    with pytest.raises(DatasetFormatError, match="val_annotations.txt, line 1"):
        create_dataset("tiny-imagenet", root=root).load_split("val")
    for image in (root / "train" / WNIDS[0] / "images").iterdir():
        image.unlink()
    (root / "train" / WNIDS[0] / "images").rmdir()
    with pytest.raises(DatasetFormatError, match=WNIDS[0]):
        create_dataset("tiny-imagenet", root=root).load_split("train")
    with pytest.raises(DatasetNotFoundError, match="embedcache download tiny-imagenet"):
        create_dataset("tiny-imagenet", root=tmp_path / "empty").load_split("train")
