"""Loading through transformers: one place for the hub/local switch, load checks and file hashes.

Every load passes trust_remote_code=False, the pinned revision, the cache and offline mode; every load
is checked for missing tensors (a silently re-initialised layer would make the stored numbers random).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from embedcache.backbones.base import BackboneSpec
from embedcache.backbones.common import (
    WEIGHT_SUFFIXES,
    WeightsNotFoundError,
    WeightsSource,
    compute_dtype,
    hub_cache_dir,
    hub_kwargs,
    hub_repo,
    library_versions,
    sha256_file,
)

WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_NAMES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
    "merges.txt", "spiece.model", "sentencepiece.bpe.model", "added_tokens.json",
)


def location(spec: BackboneSpec, source: WeightsSource) -> tuple[str, dict[str, Any]]:
    """(what to pass to from_pretrained, keyword arguments): a local folder, or the hub id + revision."""
    if source.kind == "hub":
        return spec.model_id, hub_kwargs(spec)
    if not (source.path / "config.json").is_file():
        raise FileNotFoundError(
            f"backbone {spec.name!r}: expected a Hugging Face model folder with config.json at {source.path}; "
            f"save one with `model.save_pretrained(DIR); tokenizer.save_pretrained(DIR)` and pass `--weights DIR`"
        )
    return str(source.path), {}


@contextmanager
def quiet_load_report() -> Iterator[None]:
    """Silence transformers' load report while loading: unexpected keys are expected here (the other CLIP
    tower, MLM / classifier heads) and missing keys are checked by `load_model`, which fails loudly."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def from_pretrained(loader: Any, spec: BackboneSpec, source: WeightsSource, **kwargs: Any) -> Any:
    """`loader.from_pretrained` at the source; hub/cache failures become one WeightsNotFoundError."""
    where, extra = location(spec, source)
    try:
        with quiet_load_report():
            return loader.from_pretrained(where, trust_remote_code=False, **extra, **kwargs)
    except OSError as err:
        if source.kind != "hub":
            raise
        raise WeightsNotFoundError(spec, list(source.looked), err) from err


def load_model(loader: Any, spec: BackboneSpec, source: WeightsSource, **kwargs: Any) -> tuple[Any, set[str]]:
    """Load a model, fail if any tensor other than a pooler is missing; return (model, missing pooler keys)."""
    model, info = from_pretrained(loader, spec, source, output_loading_info=True, **kwargs)
    missing = set(info.get("missing_keys") or ())
    pooler = {k for k in missing if k.split(".")[0] == "pooler" or ".pooler." in f".{k}"}
    if missing - pooler:
        raise RuntimeError(
            f"backbone {spec.name!r}: the checkpoint at {source.path or spec.model_id} lacks "
            f"{len(missing - pooler)} tensors of {type(model).__name__} (e.g. {sorted(missing - pooler)[:3]}); "
            "it is not a checkpoint of this architecture"
        )
    return model.eval().requires_grad_(False), pooler


def source_sha256(spec: BackboneSpec, source: WeightsSource, names: tuple[str, ...]) -> dict[str, str]:
    """sha256 of the named files actually used: in the local folder, or in the hub cache at the revision."""
    found: dict[str, str] = {}
    for name in names:
        path = _source_file(spec, source, name)
        if path is not None:
            found[name] = sha256_file(path)
    return found


def weight_sha256(spec: BackboneSpec, source: WeightsSource) -> dict[str, str] | None:
    """sha256 of the weight files loaded (None if they cannot be found, e.g. a hub file outside the cache)."""
    if source.kind != "hub":
        files = sorted(p.name for p in source.path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        return source_sha256(spec, source, tuple(files)) or None
    return source_sha256(spec, source, WEIGHT_NAMES) or None


def _source_file(spec: BackboneSpec, source: WeightsSource, name: str) -> Path | None:
    if source.kind != "hub":
        path = source.path / name
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(hub_repo(spec), name, cache_dir=str(hub_cache_dir()), revision=spec.revision)
    return Path(hit) if isinstance(hit, str) else None


def describe(enc: Any) -> dict[str, Any]:
    """`Encoder.describe()` of a transformers-backed encoder (text models and the CLIP towers): everything
    that determines its numbers, for the store fingerprint."""
    dtype = compute_dtype(enc.spec, enc.device)
    return {
        "name": enc.spec.name, "library": "transformers", "modality": enc.spec.modality,
        "model_id": enc.spec.model_id, "revision": enc.spec.revision,
        "architecture": type(enc.model).__name__,
        "weights_source": enc.source.label if enc.source.kind == "offline" else enc.source.kind,
        "weights_sha256": enc.weights_sha256, "preprocessing": enc.preprocessing,
        "pooling": enc.pooling, "dim": enc.dim, "token_dim": enc.token_dim, "max_length": enc.max_length,
        "compute_dtype": str(dtype).removeprefix("torch.") if dtype else "float32",
        "versions": library_versions("transformers", "tokenizers"),
    }
