"""Cross-modal retrieval metrics: Recall@k, median/mean rank and the CBMF paper's hit-rate curve.

Each query has a set of positive gallery items (an image has its 5 captions; a caption has its image).
The rank of a query is the 1-based position of its BEST positive when the gallery is sorted by cosine
similarity. Ties are resolved against the query: every negative scoring at least as high as the best
positive counts as ranked above it, so degenerate embeddings (all equal) rank last, never first.

R@k (CLIP_benchmark's "any positive in the top k") and the CBMF hit rate are the same quantity; the
hit rate is reported on the paper's k grid, k = 100, 200, ..., 10,000 (the authors' retrieval.py uses
`range(100, 10100, 100)`), and only for k below the gallery size (at or above it every query hits by
construction, so such a k says nothing and is left out).

`repeated_gallery_ranks` is the authors' Fig. 4 protocol (text_image/downstream_task/image_retrieval/
retrieval.py): one gallery row per caption holding that caption's image (each image repeated once per
caption), every caption a query whose answer is its OWN row. It is computed against the distinct images
weighted by their row counts, so 40,455 x 40,455 costs 40,455 x 8,091 similarities, in chunks.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from embedcache.errors import BadInputError
from embedcache.evaluate._common import ArrayLike, as_float, as_long, join

DEFAULT_KS = (1, 5, 10)
DEFAULT_HIT_KS = tuple(range(100, 10_001, 100))
# Similarity block size in elements: 2**25 fp32 = 128 MiB per chunk (+ a bool mask of 32 MiB),
# so 10k queries x 50k gallery items run in ~7 chunks instead of one 2 GB matrix.
CHUNK_ELEMENTS = 2**25


def retrieval_metrics(
    query: ArrayLike,
    gallery: ArrayLike,
    positives: Sequence[Sequence[int]],
    prefix: str,
    ks: Sequence[int] = DEFAULT_KS,
    hit_ks: Sequence[int] = DEFAULT_HIT_KS,
    *,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Cosine retrieval of `gallery` (G, D) rows for each `query` (Q, D) row, whose correct answers are
    `positives[q]` (gallery row indices, at least one per query). Returns `{prefix}_R@{k}` for `ks`,
    `{prefix}_hit@{k}` for `hit_ks` (k clamped at G), `{prefix}_median_rank` and `{prefix}_mean_rank`
    (1-based rank of the best positive). Embeddings are L2-normalised here; the similarity matrix is
    computed `chunk_size` query rows at a time (default: CHUNK_ELEMENTS / G)."""
    ranks = best_positive_ranks(query, gallery, positives, chunk_size=chunk_size)
    return rank_metrics(ranks, len(gallery), prefix, ks, hit_ks)


def rank_metrics(
    ranks: ArrayLike, gallery_size: int, prefix: str, ks: Sequence[int] = DEFAULT_KS,
    hit_ks: Sequence[int] = DEFAULT_HIT_KS,
) -> dict[str, float]:
    """Flat metrics from 1-based ranks (Q,): R@k (fraction with rank <= min(k, gallery_size)), hit@k for each
    k < gallery_size only, median rank (numpy's median: the mean of the two middle ranks for an even count) and
    mean rank."""
    r = as_long(ranks).cpu()
    out = {join(prefix, f"R@{k}"): _within(r, k, gallery_size) for k in ks}
    out.update({join(prefix, f"hit@{k}"): _within(r, k, gallery_size) for k in hit_ks if k < gallery_size})
    out[join(prefix, "median_rank")] = float(np.median(r.numpy()))
    out[join(prefix, "mean_rank")] = float(r.double().mean())
    return out


def _within(ranks: torch.Tensor, k: int, gallery_size: int) -> float:
    return float((ranks <= min(k, gallery_size)).double().mean())


def best_positive_ranks(
    query: ArrayLike, gallery: ArrayLike, positives: Sequence[Sequence[int]], *, chunk_size: int | None = None
) -> torch.Tensor:
    """1-based rank (Q,) int64 of each query's best positive under cosine similarity: 1 + the number of
    NEGATIVE gallery items whose similarity is >= the best positive's (pessimistic on ties)."""
    q = F.normalize(as_float(query), dim=-1)  # (Q, D)
    g = F.normalize(as_float(gallery, q.device), dim=-1)  # (G, D)
    _check_shapes(q, g, positives)
    rows, cols, offsets = _flatten(positives, q.device)
    step = chunk_size or max(1, CHUNK_ELEMENTS // max(1, g.shape[0]))
    ranks = torch.empty(q.shape[0], dtype=torch.int64, device=q.device)
    for start in range(0, q.shape[0], step):
        stop = min(q.shape[0], start + step)
        lo, hi = offsets[start], offsets[stop]
        ranks[start:stop] = _chunk_ranks(q[start:stop] @ g.T, rows[lo:hi] - start, cols[lo:hi])
    return ranks.cpu()


def repeated_gallery_ranks(
    query: ArrayLike, images: ArrayLike, answer: ArrayLike, counts: ArrayLike, *, chunk_size: int | None = None
) -> torch.Tensor:
    """1-based ranks (Q,) int64 in a gallery where distinct image i (row of `images` (I, D)) fills counts[i] rows
    and query q's answer is ONE of the rows of image answer[q] (its own caption row). Pessimistic on ties: the
    other rows of the same image tie with the answer exactly and rank above it, so the rank is the number of
    gallery rows scoring >= the answer: sum of counts[i] over images i with sim(q, i) >= sim(q, answer[q]).
    (The authors' torch.topk breaks those ties in no stated order.) Memory: chunk_size x I similarities."""
    q = F.normalize(as_float(query), dim=-1)  # (Q, D)
    g = F.normalize(as_float(images, q.device), dim=-1)  # (I, D)
    ans = as_long(answer).to(q.device)  # (Q,)
    w = as_float(counts, q.device)  # (I,) rows per image
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1] or len(ans) != len(q) or len(w) != len(g):
        raise BadInputError(f"expected query (Q, D), images (I, D), answer (Q,), counts (I,); got {tuple(q.shape)}, "
                            f"{tuple(g.shape)}, {tuple(ans.shape)}, {tuple(w.shape)}")
    step = chunk_size or max(1, CHUNK_ELEMENTS // max(1, g.shape[0]))
    ranks = torch.empty(q.shape[0], dtype=torch.int64, device=q.device)
    for start in range(0, q.shape[0], step):
        sims = q[start:start + step] @ g.T  # (c, I)
        own = sims.gather(1, ans[start:start + step, None])  # (c, 1)
        ranks[start:start + step] = ((sims >= own).to(w.dtype) @ w).round().long()
    return ranks.cpu()


def _chunk_ranks(sims: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Ranks for one block. sims (c, G); rows/cols (P,) index the block's positive pairs."""
    pos = sims[rows, cols]  # (P,) similarity of every positive pair
    best = torch.full((sims.shape[0],), -torch.inf, device=sims.device).scatter_reduce(0, rows, pos, "amax")
    at_least = (sims >= best[:, None]).sum(dim=1)  # (c,) items (positives included) scoring >= best
    pos_at_least = torch.zeros_like(at_least).scatter_add(0, rows, (pos >= best[rows]).long())
    return at_least - pos_at_least + 1


def _flatten(positives: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Ragged positives -> (row, col) index pairs sorted by row, and per-query start offsets (Q + 1)."""
    counts = [len(p) for p in positives]
    offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
    rows = torch.repeat_interleave(torch.arange(len(positives)), torch.as_tensor(counts, dtype=torch.int64))
    cols = torch.as_tensor([c for p in positives for c in p], dtype=torch.int64)
    return rows.to(device), cols.to(device), offsets


def _check_shapes(q: torch.Tensor, g: torch.Tensor, positives: Sequence[Sequence[int]]) -> None:
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise BadInputError(f"expected query (Q, D) and gallery (G, D) with the same D; got {tuple(q.shape)} "
                            f"and {tuple(g.shape)}")
    if len(positives) != q.shape[0]:
        raise BadInputError(f"positives has {len(positives)} entries but there are {q.shape[0]} queries")
    empty = [i for i, p in enumerate(positives) if len(p) == 0]
    if empty:
        raise BadInputError(f"{len(empty)} queries have no positive gallery item (first: query {empty[0]}); "
                            "drop them before scoring, e.g. with positives_by_key on the linked ids")
    bad = [c for p in positives for c in p if not 0 <= c < g.shape[0]]
    if bad:
        raise BadInputError(f"positive index {bad[0]} is outside the gallery of {g.shape[0]} items")


def positives_by_key(query_keys: Sequence[Hashable], gallery_keys: Sequence[Hashable]) -> list[list[int]]:
    """For each query, the gallery rows that share its key. Image -> text: query_keys are image ids and
    gallery_keys the captions' linked image ids; text -> image: the other way round."""
    index: dict[Hashable, list[int]] = {}
    for j, key in enumerate(gallery_keys):
        index.setdefault(key, []).append(j)
    return [list(index.get(key, [])) for key in query_keys]
