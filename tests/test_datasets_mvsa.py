"""MVSA-Single / MVSA-Multiple adapters: labelResultAll.txt + data/<id>.{jpg,txt}, cleaning and seeded split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedcache.datasets import DatasetFormatError, DatasetNotFoundError, create_dataset, mvsa
from embedcache.datasets import fixtures as fx
from embedcache.datasets.common import seeded_split

# (text label, image label) -> expected post label (None: dropped by the cleaning rule)
SINGLE = [("positive", "positive", "positive"), ("neutral", "negative", "negative"),
          ("positive", "neutral", "positive"), ("positive", "negative", None), ("neutral", "neutral", "neutral"),
          ("negative", "positive", None), ("negative", "negative", "negative")]


def write_single(parent: Path, copies: int = 3) -> tuple[Path, dict[str, str]]:
    rows, posts, expected = [], {}, {}
    for k in range(copies * len(SINGLE)):
        t, i, want = SINGLE[k % len(SINGLE)]
        post = str(k + 1)
        rows.append(f"{post}\t{t},{i}")
        posts[post] = f"RT @user: post {post} #mood \n"
        if want:
            expected[post] = want
    white = lambda _: np.full((8, 8, 3), 255, np.uint8)  # noqa: E731
    return fx.write_mvsa(parent / "MVSA_Single", rows, posts, white), expected


def test_single_cleaning_rule_and_split(tmp_path: Path) -> None:
    root, expected = write_single(tmp_path)
    ds = create_dataset("mvsa-single", root=tmp_path)  # the parent of MVSA_Single/ works too
    splits = {s: ds.load_split(s) for s in ds.splits()}
    assert list(splits) == ["train", "val", "test"]
    assert [len(s.images) for s in splits.values()] == [12, 2, 1]  # 15 kept: round(12.0), round(1.5) = 2, rest
    got = {it.id: ds.classes[it.label] for s in splits.values() for it in s.images}
    assert got == expected
    train = splits["train"]
    assert [it.id for it in train.images] == [it.id for it in train.texts] == [it.link for it in train.texts]
    assert train.texts[0].text == f"RT @user: post {train.texts[0].id} #mood"
    assert train.images[0].image == str(root / "data" / f"{train.images[0].id}.jpg")
    assert ds.classes == ("negative", "neutral", "positive")


def test_split_depends_on_seed_only(tmp_path: Path) -> None:
    write_single(tmp_path)
    def ids(seed: int) -> list[str]:
        return [it.id for it in create_dataset("mvsa-single", root=tmp_path, seed=seed).load_split("test").images]

    assert ids(0) == ids(0)
    assert {tuple(ids(s)) for s in range(6)} != {tuple(ids(0))}
    assert create_dataset("mvsa-single", root=tmp_path, seed=3).options() == {"seed": 3, "non_utf8": "latin-1"}


def test_published_split_sizes_of_mvsa_single() -> None:
    parts = seeded_split([str(i) for i in range(4511)], seed=0, fractions=(0.8, 0.1, 0.1))
    assert [len(p) for p in parts] == [3609, 451, 451]
    assert len(set().union(*parts)) == 4511


def test_non_utf8_text_and_missing_files(tmp_path: Path) -> None:
    root, _ = write_single(tmp_path, copies=1)
    (root / "data" / "1.txt").write_bytes("caf\xe9 time".encode("latin-1"))
    (root / "data" / "3.jpg").unlink()
    (root / "data" / "5.txt").unlink()

    def items(**options: object) -> dict[str, tuple]:
        ds = create_dataset("mvsa-single", root=root, **options)
        sp = [ds.load_split(s) for s in ds.splits()]
        return {it.id: (it.text, it.error) for s in sp for it in s.texts} | {
            f"img{it.id}": (it.image, it.error) for s in sp for it in s.images}

    default = items()
    assert default["1"] == ("café time", None)  # read as latin-1, like public loaders
    strict = items(non_utf8="error")
    assert strict["1"][0] is None and "UTF-8" in strict["1"][1]
    assert "missing text file" in default["5"][1] and "missing image file" in default["img3"][1]


def test_multiple_takes_annotator_majority(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    rows = {"1": "positive,positive\tpositive,neutral\tneutral,neutral",  # text pos (2/3), image neutral -> pos
            "2": "negative,neutral\tneutral,negative\tpositive,positive",  # no text majority -> dropped
            "3": "neutral,negative\tneutral,negative\tneutral,neutral",  # neutral + negative -> negative
            "4": "positive,negative\tpositive,negative\tneutral,neutral"}  # pos vs neg -> dropped
    (tmp_path / "labelResultAll.txt").write_text("ID\ttext,image\ttext,image\ttext,image\n" + "".join(
        f"{k}\t{v}\n" for k, v in rows.items()))
    ds = create_dataset("mvsa-multiple", root=tmp_path)
    assert ds.posts() == {"1": 2, "3": 0}
    assert mvsa.majority(["positive", "neutral", "negative"]) is None


def test_bad_label_file(tmp_path: Path) -> None:
    root, _ = write_single(tmp_path, copies=1)
    (root / "labelResultAll.txt").write_text("ID\ttext,image\n1\tpositive;positive\n")
    with pytest.raises(DatasetFormatError, match=r"labelResultAll.txt, line 2"):
        create_dataset("mvsa-single", root=root).load_split("train")
    with pytest.raises(DatasetNotFoundError, match="mcrlab.net") as err:
        create_dataset("mvsa-multiple", root=tmp_path / "none").load_split("train")
    assert "labelResultAll.txt" in str(err.value)
