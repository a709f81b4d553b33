"""Stage one end to end with the embedded default backbones (real offline weights) on generated data."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from embedcache.datasets import DATASETS, Dataset, Item, Split
from embedcache.extract import ExtractCfg, ExtractError, RunCfg, extract
from embedcache.store import StaleStoreError, open_store

SIZE = {"size": 30}  # 30 generated images, 90 captions: a few seconds per backbone on two cores


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path))
    return tmp_path


def test_text_store_holds_every_caption_with_tokens_labels_links_and_pairs(data_dir):
    cfg = ExtractCfg("shapes", "minilm", tokens=True, data_dir=data_dir, dataset_options=SIZE)
    path, reports = extract(cfg, RunCfg(workers=0))
    ds = DATASETS.get("shapes")(**SIZE)
    with open_store(path) as store:
        assert store.splits == ["train", "val", "test"] or sorted(store.splits) == ["test", "train", "val"]
        for name in ds.splits():
            split, sp = ds.load_split(name), store.split(name)
            assert list(sp.ids) == [it.id for it in split.texts]  # dataset order, dataset ids
            pooled = sp.pooled()
            assert pooled.dtype == np.float32 and pooled.shape == (len(split.texts), 384)
            np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=2e-3)  # MiniLM normalises
            lengths = np.diff(sp.offsets())
            assert (lengths >= 3).all() and sp.tokens(0).shape == (lengths[0], 384)
            assert list(sp.links) == [it.link for it in split.texts]
            assert list(sp.labels) == [it.label for it in split.texts]
            a, b, score = sp.pairs
            assert len(a) == len(split.pairs) and float(score[0]) == pytest.approx(split.pairs[0].score)
        assert store.attrs["dtype"] == "float16" and store.attrs["tokens"] is True
    assert {r.status for r in reports} == {"extracted"}
    _, again = extract(cfg, RunCfg(workers=0))
    assert {r.status for r in again} == {"up to date"}


def test_image_store_matches_a_direct_forward_pass(data_dir):
    from embedcache.backbones import create_encoder
    from embedcache.datasets.images import load_image

    path, _ = extract(ExtractCfg("shapes", "effnet-lite0", data_dir=data_dir, dataset_options=SIZE, dtype="float32"),
                      RunCfg(splits=("val",), workers=1))
    items = DATASETS.get("shapes")(**SIZE).load_split("val").images
    enc = create_encoder("effnet-lite0")
    tf = enc.image_transform()
    direct = enc.encode(torch.stack([tf(load_image(it.image, it.id)) for it in items])).pooled.numpy()
    with open_store(path) as store:
        assert store.splits == ["val"]
        np.testing.assert_allclose(store.split("val").pooled(), direct, rtol=1e-4, atol=1e-4)


def test_changed_settings_are_refused_until_force(data_dir):
    val = RunCfg(splits=("val",))
    extract(ExtractCfg("shapes", "minilm", data_dir=data_dir, dataset_options=SIZE), val)
    cls = ExtractCfg("shapes", "minilm", data_dir=data_dir, dataset_options=SIZE, pooling="cls")
    with pytest.raises(StaleStoreError, match="pooling") as err:
        extract(cls, val)
    assert "--force" in str(err.value)
    path, _ = extract(cls, RunCfg(splits=("val",), force=True))
    with open_store(path) as store:
        assert store.attrs["pooling"] == "cls"


# --- bad input: an adapter over files the test writes, every kind of broken item ---------------------


def _png(path, mode, size=(40, 30), **kw):
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], 40000, np.uint16)).save(path)
    else:
        Image.new(mode, size, **kw).save(path)
    return str(path)


@pytest.fixture
def messy(tmp_path):
    """Image sources of every awkward kind; the `good` ones must be embedded, the rest skipped."""
    d = tmp_path / "imgs"
    d.mkdir()
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(jpeg, "JPEG")
    good = {
        "gray": _png(d / "gray.png", "L", color=128),
        "palette": _png(d / "palette.png", "P", color=3),
        "rgba": _png(d / "rgba.png", "RGBA", color=(255, 0, 0, 0)),
        "cmyk": str(_save(d / "cmyk.jpg", Image.new("CMYK", (40, 40), (255, 0, 0, 0)))),
        "gray16": _png(d / "gray16.png", "I;16"),
        "bytes": jpeg.getvalue(),
        "array": np.zeros((20, 20, 3), np.uint8),
    }
    (d / "zero.jpg").write_bytes(b"")
    (d / "garbage.jpg").write_bytes(b"not an image at all" * 10)
    (d / "trunc.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    huge = d / "huge.png"
    Image.new("L", (12000, 12000)).save(huge)  # 144 Mpx: over the decompression limit
    bad = {"zero": str(d / "zero.jpg"), "garbage": str(d / "garbage.jpg"), "trunc": str(d / "trunc.jpg"),
           "missing": str(d / "nope.jpg"), "huge": str(huge)}
    return good, bad


def _save(path, img):
    img.save(path)
    return path


class _Messy(Dataset):
    """Items of every broken kind, as an adapter would hand them over."""

    name, modalities = "messy", ("image", "text")

    def __init__(self, root=None, images=None, **options):
        super().__init__(root)
        self.images = images

    def options(self):
        return {"images": sorted(self.images)}

    def splits(self):
        return ["train"]

    def load_split(self, split):
        images = [Item(k, image=v) for k, v in self.images.items()]
        texts = [Item("ok", text="a red circle"), Item("empty", text=""), Item("blank", text=" \t\n"),
                 Item("latin1", error="caption is not valid UTF-8 at byte 3"), Item("ok2", text="a blue star"),
                 Item("ok", text="the same id again")]
        return Split("train", images, texts)


@pytest.fixture
def messy_dataset(messy):
    good, bad = messy
    if "messy" not in DATASETS:
        DATASETS.register("messy", _Messy)
    return good, bad


def test_bad_images_are_recorded_as_skips_with_reasons(data_dir, messy_dataset):
    good, bad = messy_dataset
    cfg = ExtractCfg("messy", "effnet-lite0", data_dir=data_dir, dataset_options={"images": {**good, **bad}})
    path, reports = extract(cfg, RunCfg(on_error="skip", workers=1))
    with open_store(path) as store:
        sp = store.split("train")
        assert sorted(sp.ids) == sorted(good)
        reasons = dict(sp.skipped)
        assert sorted(reasons) == sorted(bad)
        assert all(reasons[k] for k in bad)
        assert "pixels" in reasons["huge"] or "large" in reasons["huge"]
        assert np.isfinite(sp.pooled()).all()
    assert len(reports[0].skipped) == len(bad)


def test_bad_image_fails_naming_the_item_and_the_fix(data_dir, messy_dataset):
    good, bad = messy_dataset
    with pytest.raises(ExtractError, match="(?s)'trunc'.*on-error skip"):
        images = {"gray": good["gray"], "trunc": bad["trunc"]}
        extract(ExtractCfg("messy", "effnet-lite0", data_dir=data_dir, dataset_options={"images": images}),
                RunCfg(workers=0))


def test_bad_captions_and_duplicate_ids_are_skipped(data_dir, messy_dataset):
    path, _ = extract(ExtractCfg("messy", "minilm", data_dir=data_dir, dataset_options={"images": {}}),
                      RunCfg(on_error="skip"))
    with open_store(path) as store:
        sp = store.split("train")
        assert list(sp.ids) == ["ok", "ok2"]
        reasons = dict(sp.skipped)
        assert set(reasons) == {"empty", "blank", "latin1", "ok"}
        assert "UTF-8" in reasons["latin1"] and "duplicate" in reasons["ok"]
