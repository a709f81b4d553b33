"""The tensor decode path (extract/gpu_decode.py) against the PIL path, on real JPEG files written by PIL.

On CPU the whole tensor path runs with device="cpu" (torchvision's decode_jpeg decodes there with libjpeg-turbo),
forced through `use_tensor_decode(plan, cpu)`: the same code `--decode gpu` runs on CUDA, on another device.
The CUDA tests run the nvJPEG path where a GPU exists.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from backbone_fixtures import build_tiny
from PIL import Image
from typer.testing import CliRunner

from embedcache.backbones import create_encoder
from embedcache.backbones.tensor_preprocess import preprocess_batch
from embedcache.cli import app
from embedcache.datasets import Item
from embedcache.datasets.images import load_image
from embedcache.errors import BadInputError
from embedcache.extract import ExtractCfg, ExtractError, RunCfg, plan_extraction, run_plan
from embedcache.extract.gpu_decode import (
    begun_on_pil,
    compare_decode_paths,
    decode_jpegs,
    jpeg_bytes,
    resolve_decode,
)
from embedcache.extract.idle import InputTiming, idle_warning
from embedcache.extract.plan import use_tensor_decode
from embedcache.store import open_store, store_fingerprint

CPU = torch.device("cpu")
NO_CUDA = "needs a CUDA GPU (nvJPEG decode on the device); the CPU tests run the same path with device=cpu"
SIZES = [(320, 240), (240, 321), (500, 375), (224, 224), (97, 300), (640, 427)]  # (w, h): odd, tall, wide, small

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _photo(w: int, h: int, seed: int) -> Image.Image:
    """Photo-like content: smooth colour fields (low-frequency noise, upsampled) plus fine grain."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)).resize((w, h),
                                                                                                        Image.BICUBIC)
    grain = rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(field, np.float32) + grain, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, str]:
    """JPEGs the tensor path takes: varied sizes, 4:4:4 and 4:2:0, progressive, grayscale (name -> path)."""
    d = tmp_path_factory.mktemp("photos")
    out = {}
    for i, (w, h) in enumerate(SIZES):
        out[f"rgb{i}"] = d / f"rgb{i}.jpg"
        _photo(w, h, i).save(out[f"rgb{i}"], quality=90, subsampling=i % 3)
    _photo(300, 200, 7).save(out.setdefault("progressive", d / "progressive.jpg"), quality=85, progressive=True)
    _photo(260, 300, 8).convert("L").save(out.setdefault("gray", d / "gray.jpg"), quality=90)
    return {k: str(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def awkward(tmp_path_factory) -> tuple[dict[str, str], dict[str, str]]:
    """(sources PIL reads but the tensor path hands to PIL, broken sources): CMYK JPEG, PNG, EXIF-rotated JPEG;
    a truncated JPEG and a JPEG header on garbage."""
    d = tmp_path_factory.mktemp("awkward")
    _photo(120, 90, 1).convert("CMYK").save(d / "cmyk.jpg", quality=90)
    _photo(130, 100, 2).save(d / "plain.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: nvJPEG ignores EXIF, PIL applies it
    _photo(160, 120, 3).save(d / "rotated.jpg", exif=exif, quality=90)
    whole = (d / "whole.jpg")
    _photo(200, 150, 4).save(whole, quality=90)
    (d / "trunc.jpg").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (d / "garbage.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(256)) + b"\xff\xd9")
    whole.unlink()
    fallback = {k: str(d / f) for k, f in (("cmyk", "cmyk.jpg"), ("png", "plain.png"), ("rotated", "rotated.jpg"))}
    return fallback, {"trunc": str(d / "trunc.jpg"), "garbage": str(d / "garbage.jpg")}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """name -> encoder on CPU: EfficientNet-Lite0 with its real offline weights, tiny ViT and CLIP image stand-ins."""
    root = tmp_path_factory.mktemp("tiny")
    return {"effnet-lite0": create_encoder("effnet-lite0"),
            "vit": create_encoder("vit", weights=build_tiny("vit", root / "vit")),
            "clip-image": create_encoder("clip-image", weights=build_tiny("clip-image", root / "clip"))}


# ------------------------------------------------------------------------------ agreement with PIL


@pytest.mark.parametrize("name", ["effnet-lite0", "vit", "clip-image"])
def test_tensor_inputs_match_the_pil_transform_within_a_uint8_level(encoders, photos, name):
    enc = encoders[name]
    transform, prep = enc.image_transform(), enc.tensor_preprocess()
    for path in photos.values():
        pil = transform(load_image(path, "x"))  # (3, 224, 224)
        (decoded,) = decode_jpegs([jpeg_bytes(path)], CPU)
        (ours,) = preprocess_batch([decoded], prep)
        assert ours.shape == pil.shape
        # a wrong crop offset, resize rule or normalisation moves most pixels; rounding moves a few by 1-2 levels
        assert (ours - pil).abs().mean() < 1e-3
        assert (ours - pil).abs().max() < 3.5 / 255 / min(prep.std)


@pytest.mark.parametrize("name", ["effnet-lite0", "vit", "clip-image"])
def test_compare_decode_paths_on_cpu_is_above_the_bar(encoders, photos, awkward, name):
    fallback, _ = awkward
    sources = list(photos.values()) + list(fallback.values())
    check = compare_decode_paths(encoders[name], sources, device="cpu", batch_size=4)
    assert len(check.cosines) == len(sources)
    assert check.fallback == tuple(range(len(photos), len(sources)))  # CMYK, PNG, rotated went to PIL
    assert check.ok(0.999), check.cosines


def test_header_check_refuses_what_the_device_decoder_would_get_wrong(photos, awkward):
    fallback, broken = awkward
    assert all(jpeg_bytes(p) is not None for p in photos.values())
    assert all(jpeg_bytes(p) is None for p in (*fallback.values(), *broken.values()))
    assert jpeg_bytes(open(photos["rgb0"], "rb").read()) is not None  # encoded bytes as a source, too
    assert jpeg_bytes(photos["rgb0"], max_pixels=100) is None  # over the limit: PIL's path names it


# ------------------------------------------------------------------------------ the engine's tensor path


@pytest.fixture
def folder(tmp_path, photos, awkward):
    """An imagefolder dataset (one class) of the photos, the fallback sources and the broken ones."""
    fallback, broken = awkward
    cls = tmp_path / "raw" / "things"
    cls.mkdir(parents=True)
    for name, path in {**photos, **fallback, **broken}.items():
        (cls / f"{name}{os.path.splitext(path)[1]}").write_bytes(open(path, "rb").read())
    return tmp_path


def _cfg(folder, name: str, **kw) -> ExtractCfg:
    return ExtractCfg("imagefolder", "effnet-lite0", root=folder / "raw", store_name=name, data_dir=folder,
                      dtype="float32", **kw)


def test_tensor_path_store_agrees_with_pil_store_and_skips_the_same_items(folder, awkward):
    pil_plan = plan_extraction(_cfg(folder, "pil"))
    assert pil_plan.decode_device is None and "decode" not in pil_plan.attrs  # auto on CPU: the PIL path
    run_plan(pil_plan, RunCfg(workers=1, on_error="skip", batch_size=4))
    tensor_plan = use_tensor_decode(plan_extraction(_cfg(folder, "tensor")), CPU)
    (report,) = run_plan(tensor_plan, RunCfg(workers=1, on_error="skip", batch_size=4))
    with open_store(pil_plan.path) as a, open_store(tensor_plan.path) as b:
        sa, sb = a.split("all"), b.split("all")
        assert list(sa.ids) == list(sb.ids) and len(sa.ids) == 11
        assert dict(sa.skipped) == dict(sb.skipped) and sorted(dict(sb.skipped)) == ["things/garbage.jpg",
                                                                                    "things/trunc.jpg"]
        x, y = torch.from_numpy(sa.pooled()), torch.from_numpy(sb.pooled())
        assert torch.nn.functional.cosine_similarity(x, y).min() >= 0.999
        assert b.attrs["decode"]["decoder"] == "libjpeg-turbo" and "decode" not in a.attrs
    assert report.timing is not None and report.timing.cause == "disk-read" and report.timing.busy_s > 0


def test_tensor_path_fails_on_a_broken_item_naming_it_and_the_fix(folder):
    plan = use_tensor_decode(plan_extraction(_cfg(folder, "fails")), CPU)
    with pytest.raises(ExtractError, match="(?s)'things/garbage.jpg'.*on-error skip"):
        run_plan(plan, RunCfg(workers=0, batch_size=32))


# ------------------------------------------------------------------------------ choosing the path, fingerprint


def test_fingerprint_differs_by_decode_path_and_a_pil_store_stays_fresh(folder):
    cfg = _cfg(folder, "fp", limit=3)
    plan = plan_extraction(cfg)
    tensor = use_tensor_decode(plan, CPU)
    assert store_fingerprint(plan.attrs) != store_fingerprint(tensor.attrs)
    assert not begun_on_pil(plan.path)
    (first,) = run_plan(plan, RunCfg(workers=0, on_error="skip"))
    assert begun_on_pil(plan.path)  # auto on CUDA keeps this store on the PIL path
    (again,) = run_plan(plan_extraction(cfg), RunCfg(workers=0, on_error="skip"))
    assert first.status == "extracted" and again.status == "up to date"


def test_auto_picks_gpu_only_on_cuda_with_jpeg_inputs_and_no_pil_store(encoders, photos, awkward):
    enc, cuda = encoders["effnet-lite0"], torch.device("cuda")
    jpegs, png = [Item("a", image=photos["rgb0"])], [Item("b", image=awkward[0]["png"])]
    assert resolve_decode("auto", cuda, enc, jpegs) == "gpu"
    assert resolve_decode("auto", cuda, enc, jpegs, built_on_pil=True) == "cpu"
    assert resolve_decode("auto", cuda, enc, png) == "cpu"
    assert resolve_decode("auto", CPU, enc, jpegs) == "cpu"
    assert resolve_decode("cpu", cuda, enc, jpegs) == "cpu"
    with pytest.raises(BadInputError, match="one of auto, cpu, gpu"):
        resolve_decode("nvjpeg", cuda, enc, jpegs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_decode_gpu_without_cuda_fails_with_the_fix(folder):
    with pytest.raises(BadInputError, match="--decode cpu") as err:
        plan_extraction(_cfg(folder, "nogpu", decode="gpu"))
    assert err.value.fix == "--decode cpu"
    result = CliRunner().invoke(app, ["extract", "imagefolder", "--model", "effnet-lite0", "--root",
                                      str(folder / "raw"), "--name", "x", "--decode", "gpu",
                                      "--data-dir", str(folder)])
    assert result.exit_code == 1 and "--decode cpu" in result.output


# ------------------------------------------------------------------------------ the idle signal


def test_idle_warning_names_the_cause_and_the_fix_on_cuda_only():
    slow = InputTiming("image-decode", wait_s=30.0, busy_s=70.0)
    assert idle_warning(slow, "cpu") is None
    assert idle_warning(InputTiming("image-decode", wait_s=20.0, busy_s=80.0), "cuda") is None
    msg = idle_warning(slow, "cuda")
    assert "30%" in msg and "PIL" in msg and "--decode gpu" in msg
    assert "--workers" in idle_warning(InputTiming("disk-read", 5.0, 1.0), "cuda")
    assert "tokenising" in idle_warning(InputTiming("tokeniser", 5.0, 1.0), "cuda")


def test_engine_measures_the_wait_on_decode_in_the_main_thread(folder):
    """workers=0: PIL decodes inside the loader's next() on the main thread, a real slow input source."""
    (report,) = run_plan(plan_extraction(_cfg(folder, "wait")), RunCfg(workers=0, on_error="skip"))
    t = report.timing
    assert t.cause == "image-decode" and t.wait_s > 0 and t.busy_s > 0 and 0 < t.wait_share < 1
    assert "--decode gpu" in idle_warning(t, "cuda", threshold=0.0)


# ------------------------------------------------------------------------------ on a GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("name", ["effnet-lite0", "clip-image"])
def test_nvjpeg_path_agrees_with_pil_on_cuda(encoders, photos, awkward, name):
    enc = encoders[name].to("cuda")
    try:
        check = compare_decode_paths(enc, [*photos.values(), *awkward[0].values()], device="cuda")
        assert check.ok(0.999), check.cosines
    finally:
        enc.to("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_decode_gpu_extraction_on_cuda(folder):
    plan = plan_extraction(_cfg(folder, "cuda", device="cuda", decode="gpu"))
    assert plan.decode_device.type == "cuda" and plan.attrs["decode"]["decoder"] == "nvjpeg"
    (report,) = run_plan(plan, RunCfg(workers=1, on_error="skip"))
    assert sorted(dict(report.skipped)) == ["things/garbage.jpg", "things/trunc.jpg"]
    auto = plan_extraction(_cfg(folder, "cuda-auto", device="cuda"))
    assert auto.decode_device is not None  # JPEG inputs on CUDA, no store yet: auto picks the GPU
