"""Zero-shot classification from class-name prompts (CBMF's CIFAR-10 top-1..5 table).

The CBMF code encodes "a photo of a {name}" per class, L2-normalises image and text embeddings,
multiplies cosine similarities by 10 * exp(2.5) and takes a softmax. Scaling and softmax are monotone,
so top-k accuracy depends only on the cosine similarities; `zero_shot_probs` gives the probabilities
when they are wanted. Several templates per class are averaged CLIP-style: each template embedding
is normalised, the mean is taken over templates, and the mean is normalised again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from embedcache.errors import BadInputError
from embedcache.evaluate._common import ArrayLike, as_float, as_long, check_rows, join

DEFAULT_TEMPLATES = ("a photo of a {}.",)
# The authors' zero_shot.py prompt, without the final period.
CBMF_TEMPLATES = ("a photo of a {}",)
# The CBMF code's logit scale: exp(2.5) from its temperature, times 10 before the softmax.
CBMF_LOGIT_SCALE = 10.0 * math.exp(2.5)


def prompts(classes: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[str]:
    """All prompts class-major: C * K strings, so their embeddings reshape to (C, K, D) in class order."""
    return [template.format(name) for name in classes for template in templates]


def class_embeddings(class_emb: ArrayLike) -> torch.Tensor:
    """(C, D) or (C, K, D) text embeddings -> (C, D) unit class vectors (templates averaged, renormalised)."""
    c = as_float(class_emb)
    if c.ndim == 3:
        c = F.normalize(c, dim=-1).mean(dim=1)  # (C, K, D) -> (C, D)
    if c.ndim != 2:
        raise BadInputError(f"expected class embeddings (C, D) or (C, K, D); got shape {tuple(c.shape)}")
    return F.normalize(c, dim=-1)


def zero_shot_logits(image_emb: ArrayLike, class_emb: ArrayLike, logit_scale: float = 1.0) -> torch.Tensor:
    """Cosine similarities (N, C) between images and classes, times `logit_scale`."""
    classes = class_embeddings(class_emb)
    images = F.normalize(as_float(image_emb, classes.device), dim=-1)
    if images.ndim != 2 or images.shape[1] != classes.shape[1]:
        raise BadInputError(f"image embeddings {tuple(images.shape)} do not match class embeddings "
                            f"{tuple(classes.shape)}: both must be (*, D) with the same D")
    return logit_scale * images @ classes.T


def zero_shot_probs(image_emb: ArrayLike, class_emb: ArrayLike, logit_scale: float = CBMF_LOGIT_SCALE) -> torch.Tensor:
    """Class probabilities (N, C) as the CBMF code computes them: softmax(scale * cosine)."""
    return zero_shot_logits(image_emb, class_emb, logit_scale).softmax(dim=-1)


def zero_shot(
    image_emb: ArrayLike,
    class_emb: ArrayLike,
    labels: ArrayLike,
    topk: Sequence[int] = (1, 2, 3, 4, 5),
    *,
    prefix: str = "zeroshot",
) -> dict[str, float]:
    """Top-k accuracy of zero-shot classification: `{prefix}_top{k}` for each k (clamped at C), plus
    `{prefix}_mean_per_class_recall` (top-1 recall averaged over the classes present in `labels`).
    A label counts as within the top k when fewer than k other classes score at least as high."""
    logits = zero_shot_logits(image_emb, class_emb)  # (N, C)
    y = as_long(labels, logits.device)
    check_rows("image_emb", logits.shape[0], "labels", y.shape[0])
    ranks = true_class_ranks(logits, y)
    out = {join(prefix, f"top{k}"): float((ranks <= min(k, logits.shape[1])).double().mean()) for k in topk}
    out[join(prefix, "mean_per_class_recall")] = _mean_per_class_recall(ranks == 1, y)
    return out


def true_class_ranks(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1-based rank (N,) of each row's true class among (N, C) scores, pessimistic on ties."""
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise BadInputError(f"labels must lie in 0..{scores.shape[1] - 1} (one per class embedding); "
                            f"found {int(labels.min())}..{int(labels.max())}")
    true = scores.gather(1, labels[:, None])  # (N, 1)
    return (scores >= true).sum(dim=1)  # counts the true class itself once: rank >= 1


def _mean_per_class_recall(correct: torch.Tensor, labels: torch.Tensor) -> float:
    hits = torch.zeros(int(labels.max()) + 1, dtype=torch.float64, device=labels.device)
    hits.index_add_(0, labels, correct.double())
    counts = torch.bincount(labels).double()
    present = counts > 0
    return float((hits[present] / counts[present]).mean())
