"""Hostile and unlucky input at the command line: names that would escape their folders, edited raw data,
captions that cannot be encoded, bad option values, a full disk, broken archives, broken pipeline specs and
damaged stores met by ls/info/verify/extract. Each ends in one line that names the fix (exit 1 or 2, no
traceback) or in a recorded skip, and nothing is lost."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import tarfile
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_datasets_cifar import write_cifar10
from test_datasets_coco import write_coco
from test_datasets_flickr import write_flickr
from test_datasets_generic import _image
from test_datasets_mmsd import write_mmsd
from test_datasets_mvsa import write_single
from test_datasets_tiny_imagenet import write_tiny
from test_download import tar_gz, zip_bytes
from typer.testing import CliRunner

from embedcache.cli import app
from embedcache.datasets import create_dataset
from embedcache.datasets import download as dl
from embedcache.datasets.common import file_digests
from embedcache.paths import UnsafeNameError, store_path
from embedcache.store import open_store, verify_store
from embedcache.tables.spec import spec_from_dict

runner = CliRunner()


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EMBEDCACHE_RESULTS_DIR", str(tmp_path / "results"))


def one_line_error(result, *needles: str, code: int = 1) -> str:
    """The command failed with exit `code`, printed no traceback, and its message holds every needle."""
    said = " ".join(result.output.split())
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in said, (needle, said)
    return said


def extract(tmp_path: Path, *args: str):
    return runner.invoke(app, ["extract", *args, "--data-dir", str(tmp_path / "data"), "--workers", "0"])


# ------------------------------------------------------------------------------------- names that become paths


@pytest.mark.parametrize("name", ["../escape", "..", "a/b", ".hidden", "x\x00y"])
def test_store_names_cannot_leave_the_stores_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeNameError):
        store_path(name, "minilm", tmp_path)
    with pytest.raises(UnsafeNameError):
        store_path("shapes", name if name != "a/b" else "..", tmp_path)


def test_extract_name_with_dotdot_is_refused_before_any_work(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    _image(folder / "dog" / "a.jpg", b"a dog")
    result = extract(tmp_path, "imagefolder", "--root", str(folder), "--name", "../../outside", "-m", "minilm")
    one_line_error(result, "cannot be a file name", "--name")
    assert not (tmp_path / "outside").exists() and not (tmp_path / "data").exists()


def test_pipeline_names_store_names_and_plot_files_that_escape_are_spec_errors(tmp_path: Path) -> None:
    base = {"pipeline": {"name": "ok", "title": "t"}}
    for raw, what in (({"pipeline": {"name": "../../evil", "title": "t"}}, "pipeline name"),
                      ({**base, "stores": [{"dataset": "shapes", "backbone": "minilm", "name": "../x"}]}, "store name"),
                      ({**base, "plots": [{"kind": "columns", "file": "/tmp/evil.png"}]}, "plot file")):
        with pytest.raises(ValueError, match=what):
            spec_from_dict(raw, "spec.toml")
    spec = tmp_path / "evil.toml"
    spec.write_text('[pipeline]\nname = "../../evil"\ntitle = "t"\n')
    one_line_error(runner.invoke(app, ["run", str(spec), "--data-dir", str(tmp_path / "data")]),
                   "cannot be a file name", "did not run: evil")
    assert not (tmp_path.parent / "evil.json").exists() and not list(tmp_path.rglob("evil.*json"))
    spec.write_text("[pipeline\nname = ")  # not TOML at all
    one_line_error(runner.invoke(app, ["run", str(spec), "--data-dir", str(tmp_path / "data")]), "not valid TOML")


# ------------------------------------------------------------------------------------- raw data edited in place


WRITERS = {
    "coco": (lambda p: write_coco(p), "annotations/captions_train2014.json"),
    "flickr8k": (lambda p: write_flickr(p), "Flickr8k_text/Flickr8k.token.txt"),
    "cifar10": (lambda p: write_cifar10(p), "cifar-10-batches-py/test_batch"),
    "tiny-imagenet": (lambda p: write_tiny(p), "val/val_annotations.txt"),
    "mvsa-single": (lambda p: write_single(p)[0], "data/3.txt"),
    "mmsd": (lambda p: write_mmsd(p), "text/valid2.txt"),
    "imagefolder": (lambda p: (_image(p / "dog" / "a.jpg", b"a dog"), p)[1], "dog/a.txt"),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_an_edited_annotation_file_changes_the_dataset_digest(tmp_path: Path, name: str) -> None:
    write, rel = WRITERS[name]
    root = write(tmp_path / "raw")
    ds = create_dataset(name, root=root)
    before = file_digests(ds.source_files())
    edited = next(p for p in [root / rel, *root.glob(f"*/{rel}")] if p.is_file())
    data = bytearray(edited.read_bytes())
    data[-2] = (data[-2] + 1) % 256  # one byte, same size
    edited.write_bytes(bytes(data))
    after = file_digests(create_dataset(name, root=root).source_files())
    assert before and after.keys() == before.keys()
    assert [k for k in before if before[k] != after[k]] != []


def test_extract_after_a_caption_file_is_edited_is_stale_until_force(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    _image(folder / "dog" / "a.jpg", b"a dog on grass")
    _image(folder / "cat" / "b.jpg", b"a cat")
    args = ("imagefolder", "--root", str(folder), "--name", "pets", "-m", "minilm")
    assert extract(tmp_path, *args).exit_code == 0
    assert "nothing to do" in extract(tmp_path, *args).output
    (folder / "dog" / "a.txt").write_bytes(b"a dog on snow")  # same size, edited in place
    one_line_error(extract(tmp_path, *args), "dataset_files[captions (*.txt)]", "--force")
    assert extract(tmp_path, *args, "--force").exit_code == 0
    with open_store(store_path("pets", "minilm", tmp_path / "data")) as store:
        assert "dataset_files" in store.attrs


# ------------------------------------------------------------------------------------- text that cannot be encoded


def test_a_lone_surrogate_caption_is_a_bad_item(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco")
    path = root / "annotations" / "captions_val2014.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["caption"] = "a sign that reads \udcff"
    path.write_text(json.dumps(data))  # valid JSON: "\udcff" escaped
    args = ("coco", "--root", str(root), "-m", "minilm", "--split", "val")
    one_line_error(extract(tmp_path, *args), "lone surrogate", "--on-error skip")
    result = extract(tmp_path, *args, "--on-error", "skip")
    assert result.exit_code == 0, result.output
    with open_store(store_path("coco", "minilm", tmp_path / "data")) as store:
        val = store.split("val")
        assert len(val) == 1 and [r for _, r in val.skipped if "lone surrogate" in r]


# ------------------------------------------------------------------------------------- option values


@pytest.mark.parametrize("args,needles,code", [
    (("-o", "colour=red"), ("has no option 'colour'", "its options: size, seed"), 1),
    (("--part", "abc"), ("K/N", "'abc'"), 2),
    (("--part", "1"), ("K/N", "'1'"), 2),
    (("--part", "2/2"), ("0 <= K < N",), 2),
    (("--device", "cuda:7"), ("--device",), 1),
    (("--device", "gpu"), ("not a device name",), 1),
])
def test_bad_extract_options_are_one_line(tmp_path: Path, args: tuple, needles: tuple, code: int) -> None:
    import torch

    if args[1] == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    one_line_error(extract(tmp_path, "shapes", "-m", "minilm", "-o", "size=12", *args), *needles, code=code)


def test_cuda_without_a_gpu_names_the_fix(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: --device cuda is valid here")
    one_line_error(extract(tmp_path, "shapes", "-m", "minilm", "--device", "cuda"), "no CUDA GPU", "--device cpu")


@pytest.mark.parametrize("lr", ["-1", "nan", "inf"])
def test_train_with_a_bad_learning_rate_is_one_line(tmp_path: Path, lr: str) -> None:
    from _stage2_fixtures import make_toy_stores

    make_toy_stores(tmp_path / "data", sizes={"train": 40, "val": 20})
    result = runner.invoke(app, ["train", "cbmf-add", "--dataset", "toy", "-b", "image", "-b", "text-a", "--pooled",
                                 "--epochs", "1", "--lr", lr, "--data-dir", str(tmp_path / "data")])
    one_line_error(result, "finite --lr >= 0")
    assert not (tmp_path / "results").exists()


def test_a_nan_store_fails_training_loudly_and_saves_nothing(tmp_path: Path) -> None:
    from _stage2_fixtures import make_toy_stores

    toy = make_toy_stores(tmp_path / "data", sizes={"train": 40, "val": 20})
    with h5py.File(toy.paths["image"], "r+") as f:
        pooled = f["train/pooled"][()]
        pooled[:5] = np.nan
        f["train/pooled"][...] = pooled
    assert any("non-finite" in p for p in verify_store(toy.paths["image"]))
    result = runner.invoke(app, ["train", "cbmf-add", "--dataset", "toy", "-b", "image", "-b", "text-a", "--pooled",
                                 "--epochs", "2", "--batch-size", "8", "--data-dir", str(tmp_path / "data")])
    one_line_error(result, "not finite", "embedcache verify")
    assert not list((tmp_path / "results").rglob("run.json"))


# ------------------------------------------------------------------------------------- a full disk


@contextlib.contextmanager
def _small_tmpfs(mnt: Path, size: str):
    """A tmpfs of `size` mounted at `mnt` for the block, or a recorded skip where this machine may not mount."""
    mnt.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.fixture
def tiny_disk(tmp_path: Path):
    with _small_tmpfs(tmp_path / "data" / "stores", "160k") as mnt:  # the raw data fits; the stores do not
        yield mnt


def test_a_full_disk_is_one_line_and_leaves_no_temp_files(tiny_disk: Path, tmp_path: Path) -> None:
    result = extract(tmp_path, "shapes", "-m", "minilm", "-o", "size=60", "--shard-size", "16")
    one_line_error(result, "the disk is full", "Free space", "rerun extract")
    left = [p.name for p in tiny_disk.rglob("*") if ".tmp" in p.name]
    assert left == [], left
    store = tiny_disk / "shapes" / "minilm.h5"  # what is there is whole: no damaged shard, no half store
    assert not store.exists() and all(not p.startswith("shard") for p in verify_store(store))


def test_a_full_disk_while_generating_raw_data_is_one_line(tmp_path: Path) -> None:
    with _small_tmpfs(tmp_path / "data", "64k") as mnt:
        one_line_error(extract(tmp_path, "shapes", "-m", "minilm", "-o", "size=60"), "the disk is full", "free space")
        assert [p.name for p in mnt.rglob("*") if ".tmp" in p.name] == []


# ------------------------------------------------------------------------------------- archives


MEMBERS = {f"set/file{i}.bin": np.random.default_rng(i).bytes(50_000) for i in range(4)}


@pytest.mark.parametrize("kind", ["truncated tar.gz", "corrupt zip member", "tar with a link out"])
def test_broken_archives_unpack_nothing(tmp_path: Path, kind: str) -> None:
    if kind == "truncated tar.gz":
        archive, data = tmp_path / "a.tar.gz", tar_gz(MEMBERS)
        data = data[: len(data) * 2 // 3]
    elif kind == "corrupt zip member":
        archive, data = tmp_path / "a.zip", bytearray(zip_bytes(MEMBERS, zipfile.ZIP_DEFLATED))
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # inside the third member's deflate stream
        data = bytes(data)
    else:
        archive = tmp_path / "a.tar"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            info = tarfile.TarInfo("set/ok.txt")
            info.size = 2
            tf.addfile(info, io.BytesIO(b"ok"))
            link = tarfile.TarInfo("set/passwd")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(link)
        data = buf.getvalue()
    archive.write_bytes(data)
    target = tmp_path / "raw"
    with pytest.raises(dl.DownloadError) as err:
        dl.extract(archive, target)
    assert "\n" not in str(err.value) and "nothing was unpacked" in str(err.value)
    assert list(target.iterdir()) == []  # no member, no staging folder


# ------------------------------------------------------------------------------------- damaged stores at the CLI


def test_ls_info_verify_and_extract_on_a_damaged_store(tmp_path: Path) -> None:
    args = ("shapes", "-m", "minilm", "-o", "size=12")
    assert extract(tmp_path, *args).exit_code == 0
    from _stage2_fixtures import make_toy_stores

    make_toy_stores(tmp_path / "data", sizes={"train": 20, "val": 10})  # healthy neighbours
    path = store_path("shapes", "minilm", tmp_path / "data")
    data = bytearray(path.read_bytes())
    data[8:48] = bytes(b ^ 0xFF for b in data[8:48])
    path.write_bytes(bytes(data))
    dd = ("--data-dir", str(tmp_path / "data"))
    listed = runner.invoke(app, ["ls", *dd])
    said = " ".join(listed.output.split())
    assert listed.exit_code == 0 and "damaged" in said and "toy/image" in said and "complete" in said, said
    one_line_error(runner.invoke(app, ["info", "shapes/minilm", *dd]), "damaged", "--force")
    verified = runner.invoke(app, ["verify", *dd])
    assert verified.exit_code == 1 and "ok " in verified.output and "damaged" in verified.output
    assert sum("damaged " in line for line in verified.output.splitlines()) == 1
    one_line_error(extract(tmp_path, *args), "damaged", "--force")
    assert extract(tmp_path, *args, "--force").exit_code == 0
    assert runner.invoke(app, ["verify", "shapes/minilm", *dd]).exit_code == 0
