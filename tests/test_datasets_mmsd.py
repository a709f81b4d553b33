"""MMSD adapter: text/*.txt python-literal lists (MMSD 1.0) and text_json_final/*.json (MMSD 2.0) + images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedcache.datasets import DatasetNotFoundError, create_dataset
from embedcache.datasets import fixtures as fx

TRAIN = [
    "['682716753374351360', 'i love waiting <num> min for a cab - such shortage <user> please ', 1]",
    "['682721949072625664', \"it 's the best day ever # sunday\", 0]",
    "['682729104072625666', 'so much fun being sarcastic with you', 1]",  # dropped by keyword_filter
    "['broken line",  # not a python literal: one item error
]
VALID = ["['862902619928506372', 'i am guessing # netflix no longer lets you grab screens . ', 1, 0]"]
TEST = ["['892551658487631873', \"it 's the insensitive strikeouts at suntrust park .\", 0, 1]"]


def write_mmsd(root: Path) -> Path:
    black = lambda _: np.zeros((10, 10, 3), np.uint8)  # noqa: E731
    fx.write_mmsd(root, {"train.txt": TRAIN, "valid2.txt": VALID, "test2.txt": TEST},
                  [line[2:20] for line in TRAIN[:3] + VALID + TEST], black)
    (root / "dataset_image" / "682721949072625664.jpg").unlink()  # one image missing
    json_dir = root / "text_json_final"
    json_dir.mkdir()
    for split, label in (("train", 1), ("valid", 0), ("test", 1)):
        (json_dir / f"{split}.json").write_text(json.dumps(
            [{"image_id": 682716753374351360, "text": f"mmsd2 {split}", "label": label}]))
    return root


def test_mmsd1_published_splits_labels_and_links(tmp_path: Path) -> None:
    ds = create_dataset("mmsd", root=write_mmsd(tmp_path))
    assert ds.splits() == ["train", "valid", "test"] and ds.classes == ("not sarcastic", "sarcastic")
    train = ds.load_split("train")
    ok = [it for it in train.texts if not it.error]
    assert [(it.id, it.label, it.link) for it in ok] == [
        ("682716753374351360", 1, "682716753374351360"), ("682721949072625664", 0, "682721949072625664"),
        ("682729104072625666", 1, "682729104072625666")]
    assert ok[1].text == "it 's the best day ever # sunday"
    assert [it.id for it in train.texts if it.error] == ["train.txt:4"]
    assert [it.id for it in train.images if it.error] == ["682721949072625664"]
    assert train.images[0].image == str(tmp_path / "dataset_image" / "682716753374351360.jpg")
    # valid/test: the last element (the annotator's label), not the hashtag label before it
    assert ds.load_split("valid").texts[0].label == 0 and ds.load_split("test").images[0].label == 1


def test_keyword_filter_follows_the_authors_loader(tmp_path: Path) -> None:
    ds = create_dataset("mmsd", root=write_mmsd(tmp_path), keyword_filter=True)
    assert "682729104072625666" not in {it.id for it in ds.load_split("train").texts}
    with pytest.raises(ValueError, match="version 1.0 only"):
        create_dataset("mmsd", version="2.0", keyword_filter=True)


def test_mmsd2_json(tmp_path: Path) -> None:
    ds = create_dataset("mmsd", root=write_mmsd(tmp_path), version="2.0")
    valid = ds.load_split("valid")
    assert [(it.id, it.text, it.label) for it in valid.texts] == [("682716753374351360", "mmsd2 valid", 0)]
    assert valid.images[0].error is None
    with pytest.raises(DatasetNotFoundError, match="text_json_clean/train.json"):
        create_dataset("mmsd", root=tmp_path, version="1.0-clean").load_split("train")
