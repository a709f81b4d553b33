"""Text encoders through transformers' AutoModel + AutoTokenizer (BERT, RoBERTa, BGE, MiniLM, MPNet, hf:...).

Tokens are the last hidden state (B, T, D) with the attention mask; pooled vectors come from the
TEXT_POOLINGS registry. Padding rows of the token output are zeroed, so they do not depend on what
else was in the batch.
"""

from __future__ import annotations

import inspect
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from embedcache.backbones import hf_loading, random_init
from embedcache.backbones.base import ADAPTERS, PREFIXES, BackboneSpec, EncoderOutput
from embedcache.backbones.common import (
    WeightsSource,
    check_pooling,
    inference,
    resolve_source,
)
from embedcache.backbones.pooling import TEXT_POOLINGS

DEFAULT_MAX_LENGTH = 512  # cap for `hf:` models whose tokenizer reports an effectively infinite length


class TransformersTextEncoder(hf_loading.TransformersEncoder):
    """A frozen transformers text model with its own tokenizer."""

    def __init__(self, spec: BackboneSpec, model: Any, tokenizer: Any, source: WeightsSource,
                 pooling: str, has_pooler: bool) -> None:
        self.spec, self.model, self.tokenizer, self.source = spec, model, tokenizer, source
        self.poolings = tuple(p for p in TEXT_POOLINGS.names() if has_pooler or p != "pooler")
        self.pooling = check_pooling(spec, pooling, self.poolings)
        self.dim = self.token_dim = int(model.config.hidden_size)
        self.max_length = spec.max_length or min(int(tokenizer.model_max_length), DEFAULT_MAX_LENGTH)
        self.device = torch.device("cpu")
        accepted = inspect.signature(model.forward).parameters
        self._inputs = tuple(k for k in ("input_ids", "attention_mask", "token_type_ids") if k in accepted)

    @cached_property
    def preprocessing(self) -> dict[str, Any]:
        tok = self.tokenizer
        return {**self.tokenizer_facts(), "padding_side": tok.padding_side, "truncation_side": tok.truncation_side}

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Pad to the longest text of the batch, truncate at max_length; only the inputs the model takes."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        return {k: batch[k] for k in self._inputs if k in batch}

    def encode(self, batch: torch.Tensor | dict[str, torch.Tensor], tokens: bool = False) -> EncoderOutput:
        inputs = {k: v.to(self.device) for k, v in dict(batch).items() if k in self._inputs}
        with inference(self.spec, self.device):
            out = self.model(**inputs)
        mask = inputs["attention_mask"].bool()  # (B, T), True for real tokens
        hidden = out.last_hidden_state.float() * mask.unsqueeze(-1)  # (B, T, D), padding rows zeroed
        pooler = getattr(out, "pooler_output", None)
        pooled = TEXT_POOLINGS.get(self.pooling)(hidden, None if pooler is None else pooler.float(), mask)
        return EncoderOutput(pooled.float(), hidden if tokens else None, mask if tokens else None)


def create(spec: BackboneSpec, pooling: str | None, weights: str | Path | None) -> TransformersTextEncoder:
    """Load model + tokenizer from the resolved source and wrap them (on CPU); `weights="random"`: build the
    architecture with random weights instead (backbones/random_init.py)."""
    from transformers import AutoModel, AutoTokenizer

    source = resolve_source(spec, weights)
    if source.kind == "random":  # the architecture with seeded random weights (speed work only)
        model, tokenizer, source = random_init.text_model(spec, source)
        has_pooler = getattr(model, "pooler", None) is not None
        return TransformersTextEncoder(spec, model, tokenizer, source, pooling or spec.pooling, has_pooler)
    tokenizer = hf_loading.from_pretrained(AutoTokenizer, spec, source)
    model, missing_pooler = hf_loading.load_model(AutoModel, spec, source)
    has_pooler = getattr(model, "pooler", None) is not None and not missing_pooler
    if not has_pooler and getattr(model, "pooler", None) is not None:
        model.pooler = None  # untrained (randomly initialised) pooler: drop it rather than compute noise
    return TransformersTextEncoder(spec, model, tokenizer, source, pooling or spec.pooling, has_pooler)


def prefixed_spec(rest: str) -> BackboneSpec:
    """`hf:<hub id or local dir>[@revision]`: an AutoModel text encoder, mean pooling by default."""
    model_id, revision = rest, "main"
    if not Path(rest).expanduser().exists() and "@" in rest:
        model_id, revision = rest.rsplit("@", 1)
    return BackboneSpec(name=f"hf:{rest}", modality="text", library="transformers", model_id=model_id,
                        revision=revision, pooling="mean", description="any transformers text encoder")


ADAPTERS.register("transformers:text", create)
PREFIXES.register("hf", prefixed_spec)
