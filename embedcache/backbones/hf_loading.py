"""Loading through transformers: one place for the hub/local switch, load checks, file hashes and the
encoder base class (`TransformersEncoder`: describe, hashes, device move) of the text models and CLIP towers.

Every load passes trust_remote_code=False, the pinned revision, the cache and offline mode; every load
is checked for missing tensors (a silently re-initialised layer would make the stored numbers random).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from embedcache.backbones.base import BackboneSpec, Encoder
from embedcache.backbones.common import (
    WEIGHT_NAMES,
    WEIGHT_SUFFIXES,
    WeightsNotFoundError,
    WeightsSource,
    hub_cache_dir,
    hub_kwargs,
    hub_repo,
    library_versions,
    provenance,
)
from embedcache.backbones.offline import sha256_file
from embedcache.errors import NotFoundError

TOKENIZER_NAMES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
    "merges.txt", "spiece.model", "sentencepiece.bpe.model", "added_tokens.json",
)


def location(spec: BackboneSpec, source: WeightsSource) -> tuple[str, dict[str, Any]]:
    """(what to pass to from_pretrained, keyword arguments): a local folder, or the hub id + revision (also for
    random weights without a folder: their config and tokenizer come from the hub)."""
    if source.path is None:
        return spec.model_id, hub_kwargs(spec)
    if not (source.path / "config.json").is_file():
        raise NotFoundError(
            f"backbone {spec.name!r}: expected a Hugging Face model folder with config.json at {source.path}; "
            f"save one with `model.save_pretrained(DIR); tokenizer.save_pretrained(DIR)` and pass `--weights DIR`"
        )
    return str(source.path), {}


@contextmanager
def quiet_load_report() -> Iterator[None]:
    """Silence transformers' load report and its "Loading weights" tqdm bar while loading: unexpected keys are
    expected here (the other CLIP tower, MLM / classifier heads), missing keys are checked by `load_model`, which
    fails loudly, and a bar of its own would cut into our rich display."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def from_pretrained(loader: Any, spec: BackboneSpec, source: WeightsSource, **kwargs: Any) -> Any:
    """`loader.from_pretrained` at the source; hub/cache failures become one WeightsNotFoundError."""
    where, extra = location(spec, source)
    try:
        with quiet_load_report():
            return loader.from_pretrained(where, trust_remote_code=False, **extra, **kwargs)
    except OSError as err:
        if source.path is not None:
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
    """sha256 of the weight files loaded (None if they cannot be found, e.g. a hub file outside the cache, or
    random weights: none were loaded)."""
    if source.kind == "random":
        return None
    if source.kind != "hub":
        files = sorted(p.name for p in source.path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        return source_sha256(spec, source, tuple(files)) or None
    return source_sha256(spec, source, WEIGHT_NAMES) or None


def _source_file(spec: BackboneSpec, source: WeightsSource, name: str) -> Path | None:
    if source.path is not None:
        path = source.path / name
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(hub_repo(spec), name, cache_dir=str(hub_cache_dir()), revision=spec.revision)
    return Path(hit) if isinstance(hit, str) else None


class TransformersEncoder(Encoder):
    """What the transformers-backed encoders (text models and the CLIP towers) share: the fingerprint facts
    (`describe`, weight and tokenizer hashes) and the device move. Subclasses set spec, model, source,
    device, pooling, dim, token_dim, max_length and `preprocessing`."""

    model: Any
    tokenizer: Any
    source: WeightsSource
    device: torch.device
    max_length: int | None
    preprocessing: dict[str, Any]

    @cached_property
    def weights_sha256(self) -> dict[str, str] | None:
        return weight_sha256(self.spec, self.source)

    def tokenizer_facts(self) -> dict[str, Any]:
        """Tokenizer facts that change the numbers; lowercasing is measured, not read from a config."""
        tok = self.tokenizer
        return {
            "tokenizer": type(tok).__name__, "vocab_size": len(tok), "max_length": self.max_length,
            "do_lower_case": tok("ABC Xyz")["input_ids"] == tok("abc xyz")["input_ids"],
            "tokenizer_sha256": source_sha256(self.spec, self.source, TOKENIZER_NAMES),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.spec.name, "library": "transformers", "modality": self.spec.modality,
            "model_id": self.spec.model_id, "revision": self.spec.revision,
            "architecture": type(self.model).__name__,
            **provenance(self.spec, self.source, self.device),
            "weights_sha256": self.weights_sha256, "preprocessing": self.preprocessing,
            "pooling": self.pooling, "dim": self.dim, "token_dim": self.token_dim, "max_length": self.max_length,
            "versions": library_versions("transformers", "tokenizers"),
        }

    def to(self, device: torch.device | str) -> TransformersEncoder:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self
