"""Generic adapters for users' own data: imagefolder (with optional caption sidecars) and pairs-tsv."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from embedcache.datasets import DatasetFormatError, DatasetNotFoundError, create_dataset


def _image(path: Path, caption: bytes | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (9, 9), "red").save(path)
    if caption is not None:
        path.with_suffix(".txt").write_bytes(caption)


def test_imagefolder_flat_with_captions(tmp_path: Path) -> None:
    _image(tmp_path / "dog" / "a.jpg", b"A dog on grass.\nsecond line is ignored\n")
    _image(tmp_path / "dog" / "b.png")
    _image(tmp_path / "cat" / "c.JPEG", b"\xff\xfebad")  # a UTF-16 caption: an item error
    (tmp_path / "cat" / "notes.md").write_text("not an image")
    ds = create_dataset("imagefolder", root=tmp_path)
    assert ds.splits() == ["all"] and ds.classes == ("cat", "dog")
    sp = ds.load_split("all")
    assert [(it.id, it.label) for it in sp.images] == [("cat/c.JPEG", 0), ("dog/a.jpg", 1), ("dog/b.png", 1)]
    assert [(it.id, it.text, it.link) for it in sp.texts if not it.error] == [
        ("dog/a.jpg", "A dog on grass.", "dog/a.jpg")]
    assert [it.id for it in sp.texts if it.error] == ["cat/c.JPEG"]


def test_imagefolder_split_folders(tmp_path: Path) -> None:
    _image(tmp_path / "train" / "ant" / "1.jpg")
    _image(tmp_path / "train" / "bee" / "2.jpg")
    _image(tmp_path / "test" / "bee" / "3.jpg")
    ds = create_dataset("imagefolder", root=tmp_path)
    assert ds.splits() == ["test", "train"] and ds.classes == ("ant", "bee")
    assert [(it.id, it.label) for it in ds.load_split("test").images] == [("bee/3.jpg", 1)]


def test_imagefolder_needs_a_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="--root"):
        create_dataset("imagefolder").splits()
    with pytest.raises(DatasetNotFoundError, match="no --root given"):
        create_dataset("pairs-tsv").splits()


def test_pairs_tsv_named_columns(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_text("s1\ts2\tsim\tid1\tid2\nA cat.\tA kitten.\t4.5\tx1\tx2\n"
                                        "A cat.\tA car.\t0.5\tx1\tx3\nonly two\tfields\n")
    (tmp_path / "test.tsv").write_text("s1\ts2\tsim\tid1\tid2\nHi.\tHello.\t5\ty1\ty2\n")
    ds = create_dataset("pairs-tsv", root=tmp_path, a="s1", b="s2", score="sim", id_a="id1", id_b="id2")
    assert ds.splits() == ["test", "train"]
    train = ds.load_split("train")
    assert [(p.a, p.b, p.score) for p in train.pairs] == [("x1", "x2", 4.5), ("x1", "x3", 0.5)]
    assert [it.id for it in train.texts if not it.error] == ["x1", "x2", "x3"]
    assert [it.id for it in train.texts if it.error] == ["train.tsv:4"]


def test_pairs_tsv_single_file_default_ids_and_csv(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("sentence1,sentence2,label\nyes,no,0\n")
    ds = create_dataset("pairs-tsv", root=path, score="label", delimiter=",")
    assert ds.splits() == ["mine"]
    assert [(p.a, p.b, p.score) for p in ds.load_split("mine").pairs] == [("2-a", "2-b", 0.0)]
    with pytest.raises(DatasetFormatError, match="header lacks column"):
        create_dataset("pairs-tsv", root=path, score="score", delimiter=",").load_split("mine")
    with pytest.raises(ValueError, match="id_a and id_b"):
        create_dataset("pairs-tsv", root=path, id_a="x")
