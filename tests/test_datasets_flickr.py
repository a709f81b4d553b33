"""Flickr8k adapter on a fixture in the original release's layout (Flicker8k_Dataset/, Flickr8k_text/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedcache.datasets import DatasetFormatError, DatasetNotFoundError, create_dataset
from embedcache.datasets import fixtures as fx

IMAGES = {"train": ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"],
          "dev": ["2090545563_a4e66ec76b.jpg"], "test": ["3385593926_d3e9c21170.jpg"]}
UNLISTED = "1234567890_abcdef0123.jpg"  # on disk with captions, in no split list (the release has 91 such)
FILES = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}


def write_flickr(root: Path, text_dir: str = "Flickr8k_text", bad_line: bytes | None = None) -> Path:
    captions: dict[str, list[str | bytes]] = {n: [f"A dog number {k} runs ." for k in range(5)]
                                              for names in IMAGES.values() for n in names}
    captions["1000268201_693b08cb0e.jpg"][3] = "1000268201_693b08cb0e.jpg#3\tCaf\xe9 sign .".encode("latin-1")
    captions[UNLISTED] = [f"A cat number {k} sits ." for k in range(5)]  # in the folder, in no split list
    # the release's quirk: captions for an image that is in no split list and not in the image folder
    ghost = [f"2258277193_586949ec62.jpg.1#{k}\tA ghost .".encode() for k in range(5)]
    colour = lambda name: np.full((10, 20, 3), (255, 0, 0) if name == UNLISTED else (0, 0, 255), np.uint8)  # noqa: E731
    return fx.write_flickr(root, captions, IMAGES, pixels=colour, text_dir=text_dir,
                           extra_lines=ghost + ([bad_line] if bad_line is not None else []))


def test_reads_published_splits_and_links(tmp_path: Path) -> None:
    ds = create_dataset("flickr8k", root=write_flickr(tmp_path))
    assert ds.splits() == ["train", "dev", "test", "all"]
    train = ds.load_split("train")
    assert [it.id for it in train.images] == IMAGES["train"]
    assert train.images[0].image == str(tmp_path / "Flicker8k_Dataset" / IMAGES["train"][0])
    assert len(train.texts) == 10
    assert train.texts[0].id == "1000268201_693b08cb0e.jpg#0" and train.texts[0].link == IMAGES["train"][0]
    assert train.texts[0].text == "A dog number 0 runs ."
    assert {it.link for it in train.texts} == set(IMAGES["train"])
    test = ds.load_split("test")
    assert len(test.images) == 1 and len(test.texts) == 5
    assert not any("2258277193" in it.id for sp in ("train", "dev", "test") for it in ds.load_split(sp).texts)
    assert not any(UNLISTED in it.id for sp in ("train", "dev", "test") for it in ds.load_split(sp).texts)


def test_all_is_every_captioned_image_on_disk_as_the_cbmf_authors_captions_txt(tmp_path: Path) -> None:
    # The authors' Fig. 4 queries all 40,455 captions of the 8,091 images on disk, split lists or not.
    every = create_dataset("flickr8k", root=write_flickr(tmp_path)).load_split("all")
    listed = [n for names in IMAGES.values() for n in names]
    assert sorted(it.id for it in every.images) == sorted([*listed, UNLISTED])  # not the stray '.jpg.1' key
    assert len(every.texts) == 5 * (len(listed) + 1)
    assert {it.link for it in every.texts} == {it.id for it in every.images}


def test_non_utf8_caption_is_one_item_error(tmp_path: Path) -> None:
    train = create_dataset("flickr8k", root=write_flickr(tmp_path)).load_split("train")
    bad = [it for it in train.texts if it.error]
    assert [it.id for it in bad] == ["1000268201_693b08cb0e.jpg#3"]
    assert "UTF-8" in bad[0].error and bad[0].text is None


def test_text_files_directly_in_root(tmp_path: Path) -> None:
    ds = create_dataset("flickr8k", root=write_flickr(tmp_path, text_dir=""))
    assert len(ds.load_split("dev").texts) == 5


def test_line_without_caption_key_is_a_format_error(tmp_path: Path) -> None:
    root = write_flickr(tmp_path, bad_line=b"no key here")
    with pytest.raises(DatasetFormatError, match=r"Flickr8k.token.txt, line 31"):
        create_dataset("flickr8k", root=root).load_split("train")


def test_caption_without_text_is_an_item_error(tmp_path: Path) -> None:
    root = write_flickr(tmp_path, bad_line=b"1001773457_577c3a7d70.jpg#5")
    texts = create_dataset("flickr8k", root=root).load_split("train").texts
    assert [it.error for it in texts if it.id.endswith("#5")] == ["no tab between caption id and caption"]


def test_missing_token_file_and_missing_root(tmp_path: Path) -> None:
    root = write_flickr(tmp_path / "a")
    (root / "Flickr8k_text" / "Flickr8k.token.txt").unlink()
    with pytest.raises(DatasetFormatError, match="Flickr8k.token.txt"):
        create_dataset("flickr8k", root=root).load_split("train")
    with pytest.raises(DatasetNotFoundError, match="Flicker8k_Dataset") as err:
        create_dataset("flickr8k", root=tmp_path / "nowhere").load_split("train")
    assert "embedcache download flickr8k" in str(err.value)
