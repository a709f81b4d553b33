"""Fashion-MNIST adapter: IDX fixtures (gz and not), and Debian's real dataset-fashion-mnist when installed."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from embedcache.datasets import DatasetFormatError, DatasetNotFoundError, create_dataset, fashion_mnist
from embedcache.datasets.images import load_image

DEBIAN = fashion_mnist.DEBIAN_DIR
NO_DEBIAN = "Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)"


def _idx(array: np.ndarray) -> bytes:
    # IDX: 0, 0, type 0x08 (uint8), ndim; big-endian int32 sizes; raw data
    return bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + array.tobytes()


def write_fmnist(root: Path, gz: bool, n_train: int = 6, n_test: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        data[split] = images, labels
        for kind, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            path = root / f"{prefix}-{kind}"
            if gz:
                path.with_name(path.name + ".gz").write_bytes(gzip.compress(_idx(arr)))
            else:
                path.write_bytes(_idx(arr))
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_reads_idx_files(tmp_path: Path, gz: bool) -> None:
    data = write_fmnist(tmp_path, gz)
    ds = create_dataset("fashion-mnist", root=tmp_path)
    assert ds.splits() == ["train", "test"] and ds.classes[9] == "Ankle boot"
    train = ds.load_split("train")
    assert [it.id for it in train.images] == [str(i) for i in range(6)]
    assert [it.label for it in train.images] == list(range(6))
    np.testing.assert_array_equal(train.images[4].image, data["train"][0][4])
    assert load_image(train.images[4].image, "4").size == (28, 28)
    assert len(ds.load_split("test").images) == 4


def test_torchvision_layout(tmp_path: Path) -> None:
    write_fmnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    assert len(create_dataset("fashion-mnist", root=tmp_path).load_split("test").images) == 4


def test_bad_magic_and_truncated_data(tmp_path: Path) -> None:
    write_fmnist(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x0d\x03" + path.read_bytes()[4:])  # float32 type byte
    with pytest.raises(DatasetFormatError, match="t10k-images-idx3-ubyte: expected an IDX magic 00 00 08 03"):
        create_dataset("fashion-mnist", root=tmp_path).load_split("test")
    train = tmp_path / "train-images-idx3-ubyte"
    train.write_bytes(train.read_bytes()[:-10])
    with pytest.raises(DatasetFormatError, match="4704 bytes of data, found 4694"):
        create_dataset("fashion-mnist", root=tmp_path).load_split("train")


def test_not_found_lists_debian_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "usr-share")  # as on a machine without it
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(DatasetNotFoundError) as err:
        create_dataset("fashion-mnist").load_split("train")
    msg = str(err.value)
    assert str(tmp_path / "data" / "raw" / "fashion-mnist") in msg and "apt-get install dataset-fashion-mnist" in msg


@pytest.mark.skipif(not DEBIAN.is_dir(), reason=NO_DEBIAN)
def test_debian_package_is_found_without_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path))  # nothing under <data-dir>/raw
    ds = create_dataset("fashion-mnist")
    for split, n in (("train", 60_000), ("test", 10_000)):
        items = ds.load_split(split).images
        assert len(items) == n
        assert np.bincount([it.label for it in items]).tolist() == [n // 10] * 10
    assert items[0].image.shape == (28, 28) and items[0].image.dtype == np.uint8


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN.is_dir(), reason=NO_DEBIAN)
def test_extract_debian_fashion_mnist_with_effnet_lite0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backbones = pytest.importorskip("embedcache.backbones")
    if not hasattr(backbones, "create_encoder"):
        pytest.skip("embedcache.backbones (create_encoder, effnet-lite0) is not in this checkout yet")
    from embedcache.extract import ExtractCfg, RunCfg, extract
    from embedcache.store import open_store

    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path))
    path, reports = extract(ExtractCfg("fashion-mnist", "effnet-lite0", limit=200, data_dir=tmp_path, device="cpu"),
                            RunCfg(splits=("test",), workers=0))
    labels = np.array([it.label for it in create_dataset("fashion-mnist").load_split("test").images[:200]])
    store = open_store(path)
    try:
        sp = store.split("test")
        assert len(sp) == 200 and list(sp.ids[:3]) == ["0", "1", "2"] and not sp.skipped
        np.testing.assert_array_equal(sp.labels, labels)
        x = sp.pooled()
        assert np.isfinite(x).all() and x.shape[0] == 200
    finally:
        store.close()
    # real ImageNet features separate the clothing classes: leave-one-out nearest neighbour >> chance (10%)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    assert (labels[sim.argmax(1)] == labels).mean() > 0.6
