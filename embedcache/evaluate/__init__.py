"""Pure evaluations for stage two: tensors (torch or numpy) in, a flat dict of plain floats out.

One module per task, keys flat like CLIP_benchmark's (`image_to_text_R@5`). Nothing here reads or
writes files, touches stores or imports transformers/timm; the figures live apart in
`embedcache.evaluate.plots` (not imported here, so importing evaluate never loads matplotlib).
"""

from __future__ import annotations

from embedcache.evaluate.classification import binary_metrics, multilabel_metrics, single_label_metrics
from embedcache.evaluate.pairs import choose_threshold, pair_classification, paired_cosine
from embedcache.evaluate.probe import finetune, linear_probe
from embedcache.evaluate.retrieval import (
    DEFAULT_HIT_KS,
    best_positive_ranks,
    positives_by_key,
    rank_metrics,
    repeated_gallery_ranks,
    retrieval_metrics,
)
from embedcache.evaluate.sts import DEFAULT_BANDS, DEFAULT_TOLERANCES, cosine_to_sts, sts_metrics
from embedcache.evaluate.zeroshot import (
    CBMF_TEMPLATES,
    DEFAULT_TEMPLATES,
    class_embeddings,
    prompts,
    zero_shot,
    zero_shot_logits,
    zero_shot_probs,
)

__all__ = [
    "CBMF_TEMPLATES", "DEFAULT_BANDS", "DEFAULT_HIT_KS", "DEFAULT_TEMPLATES", "DEFAULT_TOLERANCES",
    "best_positive_ranks", "binary_metrics", "choose_threshold", "class_embeddings", "cosine_to_sts", "finetune",
    "linear_probe", "multilabel_metrics", "pair_classification", "paired_cosine", "positives_by_key", "prompts",
    "rank_metrics", "repeated_gallery_ranks", "retrieval_metrics", "single_label_metrics", "sts_metrics", "zero_shot",
    "zero_shot_logits", "zero_shot_probs",
]
