"""The tests' tiny backbones: the stand-ins of embedcache.backbones.stand_ins (one set of builders)."""

from embedcache.backbones.stand_ins import (  # noqa: F401  (re-exported for the tests)
    BUILDERS,
    CORPUS,
    TEXTS,
    TIMM_SHRINK,
    TINY,
    build_tiny,
    minilm_dir,
    sample_images,
    save_bert_tokenizer,
    save_bpe_tokenizer,
)
