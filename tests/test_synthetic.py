"""The generated `shapes` dataset: determinism, layout, labels, captions, pairs, atomic writing, robust reading."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from embedcache.datasets import DATASETS, DatasetFormatError, create_dataset
from embedcache.datasets.images import load_image
from embedcache.datasets.scenes import CLASSES, COLOURS, SHAPES, mention_overlap, pair_score
from embedcache.datasets.synthetic import ShapesDataset, generate_shapes

SIZE = 60


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("gen") / "shapes", size=SIZE, seed=0)


@pytest.fixture(scope="module")
def splits(gen: Path) -> dict:
    ds = ShapesDataset(gen, size=SIZE, seed=0)
    return {name: ds.load_split(name) for name in ds.splits()}


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def broken_copy(gen: Path, tmp_path: Path, name: str, edit) -> ShapesDataset:
    """A copy of the generated dataset with one file's lines edited by `edit(lines) -> lines`."""
    root = tmp_path / "copy"
    shutil.copytree(gen, root)
    lines = (root / name).read_bytes().split(b"\n")
    (root / name).write_bytes(b"\n".join(edit(lines)))
    return ShapesDataset(root, size=SIZE, seed=0)


# ---------------------------------------------------------------- generation


def test_same_seed_gives_identical_files_and_another_seed_differs(gen: Path, tmp_path: Path) -> None:
    again = files_of(generate_shapes(tmp_path / "again", size=SIZE, seed=0))
    assert again == files_of(gen)
    other = files_of(generate_shapes(tmp_path / "other", size=SIZE, seed=1))
    assert other.keys() == again.keys()
    differing = [name for name in again if again[name] != other[name]]
    assert "captions.tsv" in differing and "annotations.tsv" in differing
    assert sum(name.startswith("images/") for name in differing) == SIZE


def test_layout_and_counts(gen: Path) -> None:
    meta = json.loads((gen / "meta.json").read_text())
    assert meta["size"] == SIZE and meta["seed"] == 0 and meta["classes"] == list(CLASSES)
    assert meta["splits"] == {"train": 48, "val": 6, "test": 6}
    assert len(list((gen / "images").glob("*.jpg"))) == SIZE
    assert len((gen / "captions.tsv").read_text().splitlines()) == 1 + 3 * SIZE
    assert not list(gen.parent.glob("shapes.tmp-*"))  # the temp directory is gone after the rename


def test_images_are_real_jpegs_of_the_documented_size(splits: dict) -> None:
    image = load_image(splits["val"].images[0].image, "x")
    assert image.size == (128, 128)
    pixels = np.asarray(image).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 100  # objects, background and noise, not a flat fill


def test_split_sizes_labels_and_links(splits: dict) -> None:
    assert {k: len(s.images) for k, s in splits.items()} == {"train": 48, "val": 6, "test": 6}
    ids = [i.id for s in splits.values() for i in s.images]
    assert len(set(ids)) == SIZE
    for split in splits.values():
        image_labels = {i.id: i.label for i in split.images}
        assert all(isinstance(lab, int) and 0 <= lab < len(CLASSES) for lab in image_labels.values())
        assert len(split.texts) == 3 * len(split.images)
        for text in split.texts:
            assert text.link in image_labels and text.label == image_labels[text.link] and text.error is None
    assert len({i.label for s in splits.values() for i in s.images}) >= 8  # classes are all in use


def test_pairs_reference_captions_of_their_split(splits: dict) -> None:
    for split in splits.values():
        captions = {t.id for t in split.texts}
        assert split.pairs
        for pair in split.pairs:
            assert pair.a in captions and pair.b in captions and pair.a != pair.b
            assert 0.0 <= pair.score <= 5.0


def test_pair_scores_follow_the_described_content(splits: dict) -> None:
    link = {t.id: t.link for s in splits.values() for t in s.texts}
    pairs = [p for s in splits.values() for p in s.pairs]
    same = [p.score for p in pairs if link[p.a] == link[p.b]]
    other = [p.score for p in pairs if link[p.a] != link[p.b]]
    assert same and min(same) >= 4.4
    assert other and max(other) <= 4.0 and min(other) == 0.0
    assert len({round(s) for s in other}) >= 3  # graded, not binary
    red, blue = CLASSES.index("circle"), CLASSES.index("star")
    assert pair_score(False, [(red, "red")], [(red, "red")]) == 4.0
    assert pair_score(False, [(red, "red"), (blue, "blue")], [(red, "red"), (2, "green")]) == 2.0
    assert pair_score(False, [(red, "red")], [(blue, "red")]) == 0.0
    assert mention_overlap([(red, None)], [(red, "blue")]) == 1.0  # an unstated colour does not disagree
    assert pair_score(True, [(red, "red")], [(blue, "blue")]) == 4.4


def _mentioned_classes(caption: str) -> set[int]:
    return {c for c, words in enumerate(SHAPES.values())
            if any(re.search(rf"\b{re.escape(w)}\b", caption.lower()) for w in words)}


def test_captions_are_true_and_vary_in_phrasing(gen: Path, splits: dict) -> None:
    multi = ShapesDataset(gen, size=SIZE, seed=0, labels="multi")
    present = {i.id: set(i.label) for s in multi.splits() for i in multi.load_split(s).images}
    texts = [t for s in splits.values() for t in s.texts]
    for t in texts:
        mentioned = _mentioned_classes(t.text)
        assert mentioned and mentioned <= present[t.link], t.text
    openings = Counter(" ".join(t.text.lower().split()[:2]) for t in texts)
    assert len(openings) >= 8 and max(openings.values()) < len(texts) / 4
    words = Counter(w.strip(".,:") for t in texts for w in t.text.lower().split())
    for colour in ("red", "blue", "green"):  # synonyms are used, not only the plain word
        assert sum(words[w] > 0 for w in COLOURS[colour][1]) >= 2, colour
    assert sum(words[w] > 0 for w in ("disc", "box", "hoop", "rhombus", "hexagon", "crescent")) >= 4


def test_multi_label_option(gen: Path, splits: dict) -> None:
    ds = create_dataset("shapes", root=gen, size=SIZE, seed=0, labels="multi")
    assert ds.label_kind == "multi" and ds.options()["labels"] == "multi"
    val = ds.load_split("val")
    single = {i.id: i.label for i in splits["val"].images}
    for item in val.images:
        assert isinstance(item.label, tuple) and item.label == tuple(sorted(set(item.label)))
        assert single[item.id] in item.label and 1 <= len(item.label) <= 3
    assert any(len(i.label) > 1 for s in ds.splits() for i in ds.load_split(s).images)
    assert all(t.label == next(i.label for i in val.images if i.id == t.link) for t in val.texts)
    with pytest.raises(ValueError, match="known: single, multi"):
        ShapesDataset(gen, labels="several")


def test_registered_with_fingerprint_facts(gen: Path) -> None:
    assert DATASETS.get("shapes") is ShapesDataset
    ds = create_dataset("shapes", root=gen, size=SIZE, seed=0, captions_per_image=3)
    assert ds.options() == {"size": SIZE, "seed": 0, "captions_per_image": 3, "labels": "single"}
    assert ds.version == f"1-n{SIZE}-s0-c3" and ds.classes == CLASSES and ds.label_kind == "single"
    assert ShapesDataset(gen, size=SIZE, seed=1).version != ds.version
    with pytest.raises(ValueError, match="known: train, val, test"):
        ds.load_split("dev")


def test_default_root_is_generated_on_first_use(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path))
    ds = ShapesDataset(size=20, seed=3, captions_per_image=2)
    with caplog.at_level(logging.INFO, logger="embedcache.datasets.synthetic"):
        split = ds.load_split("train")
    root = tmp_path / "raw" / "shapes" / "shapes-20-s3-c2"
    assert (root / "meta.json").exists() and split.images[0].image.startswith(str(root.resolve()))
    assert len(split.texts) == 2 * len(split.images) and "generating the shapes dataset" in caplog.text
    assert ShapesDataset(size=20, seed=3, captions_per_image=2).load_split("val").images  # reused, no error


def test_captions_per_image_one_still_gives_pairs(tmp_path: Path) -> None:
    ds = ShapesDataset(generate_shapes(tmp_path / "one", size=20, seed=0, captions_per_image=1), size=20,
                       captions_per_image=1)
    train = ds.load_split("train")
    assert len(train.texts) == len(train.images) and train.pairs


# ---------------------------------------------------------------- atomic, idempotent writing


def test_existing_dataset_is_kept_a_different_one_refused(gen: Path, tmp_path: Path) -> None:
    stamp = (gen / "captions.tsv").stat().st_mtime_ns
    assert generate_shapes(gen, size=SIZE, seed=0) == gen and (gen / "captions.tsv").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="seed=0 \\(asked 5\\)"):
        generate_shapes(gen, size=SIZE, seed=5)
    with pytest.raises(DatasetFormatError, match="size=60 \\(asked 61\\)"):
        ShapesDataset(gen, size=61).load_split("val")
    copy = tmp_path / "copy"
    shutil.copytree(gen, copy)
    generate_shapes(copy, size=20, seed=5, overwrite=True)
    assert json.loads((copy / "meta.json").read_text())["seed"] == 5
    assert len(list((copy / "images").iterdir())) == 20  # the old dataset's files are gone
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not a shapes dataset"):
        generate_shapes(tmp_path / "junk", size=20)


def test_sigkill_during_generation_leaves_no_dataset_that_looks_whole(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    code = "import sys; from embedcache.datasets.synthetic import generate_shapes; generate_shapes(sys.argv[1], 5000)"
    repo = Path(__file__).resolve().parents[1]
    child = subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=repo,
                             env={**os.environ, "PYTHONPATH": str(repo)})
    tmp = tmp_path / f"shapes.tmp-{socket.gethostname()}-{child.pid}"
    deadline = time.monotonic() + 30
    while not (tmp / "images").exists() or len(os.listdir(tmp / "images")) < 20:
        assert child.poll() is None and time.monotonic() < deadline, "the generator ended or never started"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not root.exists()  # half a dataset is only ever in the temp directory
    assert ShapesDataset(generate_shapes(root, size=20), size=20).load_split("test").images
    assert not tmp.exists()  # the dead generator's temp directory was cleaned up


# ---------------------------------------------------------------- robust reading


def test_caption_that_is_not_utf8_becomes_an_item_error(gen: Path, tmp_path: Path) -> None:
    def edit(lines: list[bytes]) -> list[bytes]:
        cid, iid, _ = lines[4].split(b"\t")
        lines[4] = cid + b"\t" + iid + b"\ta caf\xe9 circle"  # Latin-1, not UTF-8
        return lines

    ds = broken_copy(gen, tmp_path, "captions.tsv", edit)
    texts = [t for s in ds.splits() for t in ds.load_split(s).texts]
    bad = [t for t in texts if t.error]
    assert len(bad) == 1 and bad[0].text is None and bad[0].link is not None
    assert bad[0].error == "caption is not valid UTF-8 at byte 5"  # counted within the caption
    assert len(texts) == 3 * SIZE


@pytest.mark.parametrize(("name", "edit", "message"), [
    ("captions.tsv", lambda ls: ls[:5] + [ls[5].rsplit(b"\t", 1)[0]] + ls[6:],
     r"captions\.tsv:6: expected 3 tab-separated fields"),
    ("captions.tsv", lambda ls: ls[:3] + [b"x-c0\tno-such-image\ta red circle"] + ls[3:],
     r"captions\.tsv:4: caption 'x-c0' refers to image 'no-such-image', which is not in"),
    ("captions.tsv", lambda ls: ls + [ls[1]], r"captions\.tsv:\d+: caption id 'shape000000-c0' appears twice"),
    ("captions.tsv", lambda ls: [b"id\timage\ttext"] + ls[1:], r"captions\.tsv:1: expected the header"),
    ("annotations.tsv", lambda ls: ls[:2] + [ls[2].split(b"\t")[0] + b"\ttrain\t10\t10"] + ls[3:],
     r"annotations\.tsv:3: bad field b'10': class index 10 outside 0\.\.9"),
    ("annotations.tsv", lambda ls: ls[:2] + [ls[2].split(b"\t")[0] + b"\tdev\t0\t0"] + ls[3:],
     r"annotations\.tsv:3: bad field b'dev': split must be one of train, val, test"),
    ("pairs.tsv", lambda ls: ls[:2] + [b"train\tshape000000-c0\tnope-c9\t3.0"] + ls[3:],
     r"pairs\.tsv:3: pair caption 'nope-c9' is not a train caption"),
    ("pairs.tsv", lambda ls: ls[:2] + [ls[2].rsplit(b"\t", 1)[0] + b"\t7.5"] + ls[3:],
     r"pairs\.tsv:3: bad field b'7.5': score 7.5 outside 0\.\.5"),
])
def test_malformed_files_name_file_and_line(gen: Path, tmp_path: Path, name: str, edit, message: str) -> None:
    ds = broken_copy(gen, tmp_path, name, edit)
    with pytest.raises(DatasetFormatError, match=message):
        ds.load_split("train")


def test_missing_table_says_how_to_regenerate(gen: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(gen, root)
    (root / "pairs.tsv").unlink()
    with pytest.raises(DatasetFormatError, match="pairs.tsv is missing; delete .* regenerated on next use"):
        ShapesDataset(root, size=SIZE).load_split("val")


def test_missing_image_file_is_left_to_load_image(gen: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(gen, root)
    split = ShapesDataset(root, size=SIZE).load_split("val")
    Path(split.images[0].image).unlink()
    assert len(ShapesDataset(root, size=SIZE).load_split("val").images) == 6  # reading does not look
    with pytest.raises(Exception, match="image file not found"):
        load_image(split.images[0].image, split.images[0].id)


@pytest.mark.slow
def test_a_larger_dataset_splits_eight_one_one(tmp_path: Path) -> None:
    ds = ShapesDataset(generate_shapes(tmp_path / "full", size=3000), size=3000)
    sizes = {s: len(ds.load_split(s).images) for s in ds.splits()}
    assert sizes == {"train": 2400, "val": 300, "test": 300}
