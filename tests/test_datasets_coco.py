"""COCO Captions adapter on a fixture written in the published layout (annotations/*.json, train2014/...)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedcache.datasets import DatasetFormatError, DatasetNotFoundError, create_dataset
from embedcache.datasets import fixtures as fx
from embedcache.datasets.images import load_image

CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"},
              {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
              {"id": 3, "name": "car", "supercategory": "vehicle"}]


def write_coco(root: Path, year: int = 2014, instances: bool = True) -> Path:
    """train: images 9, 25 (9 has 7 captions, one caption points to the unlisted image 404); val: image 30."""
    plan = {"train": {9: 7, 25: 1}, "val": {30: 2}}
    cats = {9: [90, 1, 1], 30: [3]}
    splits = {split: [fx.CocoImage(i, np.full((12, 16, 3), (i, 0, 0), np.uint8), [f"caption {k} of {i}" for k in
                                                                                  range(n)], cats.get(i, []))
                      for i, n in images.items()] for split, images in plan.items()}
    orphan = {"train": [{"id": 999, "image_id": 404, "caption": "orphan caption"}]}
    return fx.write_coco(root, splits, CATEGORIES, year=year, instances=instances, extra_captions=orphan, reverse=True)


def test_reads_2014_layout(tmp_path: Path) -> None:
    ds = create_dataset("coco", root=write_coco(tmp_path))
    assert ds.splits() == ["train", "val"]
    train = ds.load_split("train")
    assert [it.id for it in train.images] == ["9", "25"]
    assert train.images[0].image == str(tmp_path / "train2014" / "COCO_train2014_000000000009.jpg")
    assert load_image(train.images[0].image, "9").size == (16, 12)
    # 7 captions of image 9 -> the first 5 by annotation id; 1 of image 25; 1 orphan (error)
    ok = [it for it in train.texts if it.error is None]
    assert [it.link for it in ok] == ["9"] * 5 + ["25"]
    assert [it.text for it in ok[:2]] == ["caption 0 of 9", "caption 1 of 9"]
    orphan = [it for it in train.texts if it.error]
    assert [(it.id, it.link) for it in orphan] == [("999", "404")]
    assert "not listed in captions_train2014.json" in orphan[0].error


def test_multilabels_follow_sorted_category_ids(tmp_path: Path) -> None:
    ds = create_dataset("coco", root=write_coco(tmp_path))
    train = ds.load_split("train")
    assert ds.classes == ("person", "car", "toothbrush")  # ids 1, 3, 90
    assert train.images[0].label == (0, 2)  # person (twice) and toothbrush
    assert train.images[1].label == ()  # no instances
    assert train.texts[0].label == (0, 2)  # captions carry their image's labels
    assert ds.load_split("val").images[0].label == (1,)
    assert ds.options() == {"year": 2014, "max_captions": 5, "labels": True}


def test_classes_without_loading_a_split(tmp_path: Path) -> None:
    assert create_dataset("coco", root=write_coco(tmp_path)).classes == ("person", "car", "toothbrush")


def test_2017_layout_and_caption_limit(tmp_path: Path) -> None:
    ds = create_dataset("coco", root=write_coco(tmp_path, year=2017), year=2017, max_captions=2)
    train = ds.load_split("train")
    assert train.images[1].image.endswith("train2017/000000000025.jpg")
    assert sum(it.link == "9" for it in train.texts) == 2


def test_missing_instances_file_says_how_to_go_on(tmp_path: Path) -> None:
    root = write_coco(tmp_path, instances=False)
    with pytest.raises(DatasetFormatError, match="labels=false"):
        create_dataset("coco", root=root).load_split("train")
    split = create_dataset("coco", root=root, labels=False).load_split("train")
    assert split.images[0].label is None and len(split.texts) == 7


def test_not_found_lists_places_layout_and_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(DatasetNotFoundError) as err:
        create_dataset("coco").load_split("train")
    msg = str(err.value)
    assert str(tmp_path / "data" / "raw" / "coco") in msg
    assert "captions_train2014.json" in msg and "embedcache download coco" in msg


def test_default_root_is_data_dir_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_coco(tmp_path / "raw" / "coco")
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path))
    assert len(create_dataset("coco").load_split("val").images) == 1


def test_broken_json_names_file_and_line(tmp_path: Path) -> None:
    root = write_coco(tmp_path)
    (root / "annotations" / "captions_val2014.json").write_text('{"images": [\n{"id": 1,,}]}')
    with pytest.raises(DatasetFormatError, match=r"captions_val2014.json, line 2"):
        create_dataset("coco", root=root).load_split("val")


def test_record_without_a_key_is_a_format_error(tmp_path: Path) -> None:
    root = write_coco(tmp_path)
    bad = {"images": [{"file_name": "x.jpg"}], "annotations": []}
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetFormatError, match="lacks or mistypes 'id'"):
        create_dataset("coco", root=root).load_split("val")


def test_unknown_year_is_refused() -> None:
    with pytest.raises(ValueError, match="2014, 2017"):
        create_dataset("coco", year=2015)
