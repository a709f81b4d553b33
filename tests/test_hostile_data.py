"""Hostile raw data: a CIFAR batch whose pickle runs a command, and names in every path-building adapter that
lead out of the dataset root (absolute, '..', symlinks). Each ends in a clear error or a recorded bad item whose
reason quotes nothing read from outside the root, and nothing runs."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from PIL import Image
from test_datasets_cifar import write_cifar10, write_cifar100
from test_datasets_coco import write_coco
from test_datasets_flickr import write_flickr
from test_datasets_generic import _image
from test_datasets_mmsd import write_mmsd
from test_datasets_mvsa import write_single
from test_datasets_tiny_imagenet import write_tiny
from typer.testing import CliRunner

from embedcache.cli import app
from embedcache.datasets import DatasetFormatError, create_dataset

SECRET = "SECRET-CONTENT-42"


class _Shell:
    """Unpickles into os.system(command): what an attacker's batch file holds."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Write:
    """Unpickles into open(path, 'w'): creating a file is also code from data."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _poison(path: Path, payload: object) -> None:
    with open(path, "rb") as f:
        batch = pickle.load(f)  # our own fixture, written just before
    batch["labels" if "labels" in batch else "fine_labels"] = payload
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


@pytest.mark.parametrize("payload", ["shell", "open"])
def test_malicious_cifar10_batch_is_refused_and_runs_nothing(tmp_path: Path, payload: str) -> None:
    root = write_cifar10(tmp_path / "raw")
    marker = tmp_path / "pwned"
    evil = _Shell(f"touch {marker}") if payload == "shell" else _Write(marker)
    _poison(root / "cifar-10-batches-py" / "data_batch_2", evil)
    with pytest.raises(DatasetFormatError, match="data_batch_2: not a safe data pickle.*refused global"):
        create_dataset("cifar10", root=root).load_split("train")
    assert not marker.exists()
    with open(root / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        live = pickle.load(f)  # the payload is live: a plain unpickler does run it (so the check above can fail)
    getattr(live["labels"], "close", lambda: None)()
    assert marker.exists()


def test_malicious_meta_and_cifar100_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    root10 = write_cifar10(tmp_path / "c10")
    meta = root10 / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({"label_names": _Shell(f"touch {marker}")}, protocol=2))
    with pytest.raises(DatasetFormatError, match="batches.meta.*refused global"):
        _ = create_dataset("cifar10", root=root10).classes
    root100 = write_cifar100(tmp_path / "c100")
    _poison(root100 / "cifar-100-python" / "test", _Shell(f"touch {marker}"))
    with pytest.raises(DatasetFormatError, match="refused global"):
        create_dataset("cifar100", root=root100, labels="coarse").load_split("test")
    assert not marker.exists()


def test_extract_of_a_malicious_cifar_under_the_data_dir_is_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path))
    root = write_cifar10(tmp_path / "raw" / "cifar10")
    marker = tmp_path / "pwned"
    _poison(root / "cifar-10-batches-py" / "test_batch", _Shell(f"touch {marker}"))
    result = CliRunner().invoke(app, ["extract", "cifar10", "--model", "effnet-lite0", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "refused global" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_a_truncated_or_foreign_cifar_batch_is_a_format_error(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path)
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:50])
    with pytest.raises(DatasetFormatError, match="data_batch_1: not a"):
        create_dataset("cifar10", root=root).load_split("train")
    batch.write_bytes(pickle.dumps(["a", "list"]))
    with pytest.raises(DatasetFormatError, match="expected a pickled dict"):
        create_dataset("cifar10", root=root).load_split("train")


# ------------------------------------------------------------------------------------- names leading out


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside every dataset root: a valid image whose bytes hold a marker string."""
    path = tmp_path / "outside" / "secret.jpg"
    path.parent.mkdir()
    Image.new("RGB", (8, 8), "red").save(path, "JPEG", comment=SECRET.encode())
    return path


def _refused(item, name: str = "") -> None:
    assert item.error and "outside the dataset root" in item.error and item.image is None, item
    assert SECRET not in item.error and (not name or name in item.error)


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_coco_file_name_out_of_the_root(tmp_path: Path, secret: Path, how: str) -> None:
    root = write_coco(tmp_path / "coco")
    path = root / "annotations" / "captions_train2014.json"
    data = json.loads(path.read_text())
    names = {"absolute": str(secret), "dotdot": "../../outside/secret.jpg", "symlink": "link.jpg"}
    if how == "symlink":
        (root / "train2014" / "link.jpg").symlink_to(secret)
    data["images"][0]["file_name"] = names[how]
    path.write_text(json.dumps(data))
    images = create_dataset("coco", root=root).load_split("train").images
    _refused(images[0], names[how])
    assert images[1].error is None and Path(images[1].image).is_file()  # the other image is untouched


@pytest.mark.parametrize("how", ["image", "caption", "class-folder"])
def test_imagefolder_symlinks_out_of_the_root(tmp_path: Path, secret: Path, how: str) -> None:
    root = tmp_path / "folder"
    _image(root / "dog" / "a.jpg", b"a dog")
    (secret.parent / "caption.txt").write_text(SECRET)
    if how == "image":
        (root / "dog" / "evil.jpg").symlink_to(secret)
    elif how == "caption":
        _image(root / "dog" / "b.jpg")
        (root / "dog" / "b.txt").symlink_to(secret.parent / "caption.txt")
    else:
        (root / "cat").symlink_to(secret.parent, target_is_directory=True)
    split = create_dataset("imagefolder", root=root).load_split("all")
    bad = [it for it in split.images + split.texts if it.error]
    assert len(bad) == 1 and "outside the dataset root" in bad[0].error and SECRET not in bad[0].error
    assert all(SECRET not in (it.text or "") for it in split.texts)
    assert [it.id for it in split.images if not it.error][0] == "dog/a.jpg"


@pytest.mark.parametrize("name", ["../../outside/secret.jpg", "ABSOLUTE"])
def test_flickr_split_list_names_out_of_the_root(tmp_path: Path, secret: Path, name: str) -> None:
    root = write_flickr(tmp_path / "flickr")
    name = str(secret) if name == "ABSOLUTE" else name
    (root / "Flickr8k_text" / "Flickr_8k.devImages.txt").write_text(name + "\n")
    images = create_dataset("flickr8k", root=root).load_split("dev").images
    _refused(images[0], name)


def test_tiny_imagenet_val_names_symlinks_and_wnids_out_of_the_root(tmp_path: Path, secret: Path) -> None:
    root = write_tiny(tmp_path / "t")
    ann = root / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text().replace("val_0.JPEG", "../../../outside/secret.jpg"))
    val = create_dataset("tiny-imagenet", root=root).load_split("val").images
    _refused(val[0])
    train_images = root / "train" / "n01443537" / "images"
    (train_images / "link.JPEG").symlink_to(secret)
    train = create_dataset("tiny-imagenet", root=root).load_split("train").images
    assert [it.id for it in train if it.error] == ["link"]
    _refused(next(it for it in train if it.error))
    (root / "wnids.txt").write_text("../../../outside\n")
    with pytest.raises(DatasetFormatError, match="outside the dataset root"):
        create_dataset("tiny-imagenet", root=root).load_split("train")


def test_mvsa_post_ids_out_of_the_root(tmp_path: Path, secret: Path) -> None:
    root, _ = write_single(tmp_path, copies=1)
    (secret.parent / "x.txt").write_text(SECRET)
    labels = root / "labelResultAll.txt"
    text = labels.read_text().replace("\n1\t", "\n../../outside/x\t")
    labels.write_text(text.replace("\n2\t", "\n../../outside/secret\t"))
    ds = create_dataset("mvsa-single", root=root)
    items = [it for s in ds.splits() for sp in [ds.load_split(s)] for it in sp.images + sp.texts]
    bad = [it for it in items if it.id.startswith("../")]
    assert bad and all("outside the dataset root" in it.error and SECRET not in it.error for it in bad)
    assert all(SECRET not in (it.text or "") for it in items)


def test_mmsd_ids_out_of_the_root(tmp_path: Path, secret: Path) -> None:
    root = write_mmsd(tmp_path / "m")
    (root / "text" / "valid2.txt").write_text("['../../outside/secret', 'a tweet', 1, 0]\n")
    images = create_dataset("mmsd", root=root).load_split("valid").images
    _refused(images[0])
