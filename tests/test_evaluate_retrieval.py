"""Retrieval metrics against a naive reference (explicit loops over the definition) and hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embedcache.evaluate.retrieval import (
    DEFAULT_HIT_KS,
    best_positive_ranks,
    positives_by_key,
    rank_metrics,
    repeated_gallery_ranks,
    retrieval_metrics,
)


def naive_ranks(query: np.ndarray, gallery: np.ndarray, positives: list[list[int]]) -> list[int]:
    """Cosine by explicit dot products; sort by descending score with negatives placed before positives
    on equal scores (pessimistic ties); the rank is the 1-based position of the first positive."""
    ranks = []
    for qi, q in enumerate(query):
        scores = []
        for gi, g in enumerate(gallery):
            dot = sum(float(a) * float(b) for a, b in zip(q, g, strict=True))
            norm = math.sqrt(sum(float(a) ** 2 for a in q)) * math.sqrt(sum(float(b) ** 2 for b in g))
            scores.append((-dot / norm, gi in positives[qi], gi))
        order = sorted(scores)  # ascending -score, False (negative) before True (positive)
        ranks.append(next(pos + 1 for pos, (_, is_pos, _) in enumerate(order) if is_pos))
    return ranks


def random_case(seed: int, n_query: int = 40, n_gallery: int = 150, dim: int = 6):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(n_query, dim)).astype(np.float32)
    gallery = rng.normal(size=(n_gallery, dim)).astype(np.float32)
    positives = [sorted(rng.choice(n_gallery, size=rng.integers(1, 6), replace=False).tolist())
                 for _ in range(n_query)]
    return query, gallery, positives


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_match_naive_reference(seed: int) -> None:
    query, gallery, positives = random_case(seed)
    ours = best_positive_ranks(torch.from_numpy(query), torch.from_numpy(gallery), positives)
    assert ours.tolist() == naive_ranks(query, gallery, positives)


def test_metrics_match_naive_reference_and_leave_out_k_at_or_above_the_gallery_size() -> None:
    query, gallery, positives = random_case(3, n_gallery=150)
    ref = np.array(naive_ranks(query, gallery, positives))
    metrics = retrieval_metrics(query, gallery, positives, "image_to_text", ks=(1, 5, 10), hit_ks=(100, 200, 300))
    for k in (1, 5, 10):
        assert metrics[f"image_to_text_R@{k}"] == pytest.approx(sum(r <= k for r in ref) / len(ref))
    assert metrics["image_to_text_hit@100"] == pytest.approx(float((ref <= 100).mean()))
    assert metrics["image_to_text_hit@100"] < 1.0  # random embeddings: some best positives rank past 100
    # k = 200 and 300 exceed G = 150: every query hits by construction, so they are not reported
    assert "image_to_text_hit@200" not in metrics and "image_to_text_hit@300" not in metrics
    assert "x_hit@20" not in rank_metrics([1, 2], gallery_size=20, prefix="x", hit_ks=(19, 20))
    assert "x_hit@19" in rank_metrics([1, 2], gallery_size=20, prefix="x", hit_ks=(19, 20))
    assert metrics["image_to_text_median_rank"] == pytest.approx(float(np.median(ref)))
    assert metrics["image_to_text_mean_rank"] == pytest.approx(float(ref.mean()))


def test_chunking_does_not_change_ranks() -> None:
    query, gallery, positives = random_case(4, n_query=57)
    whole = best_positive_ranks(query, gallery, positives)
    assert torch.equal(best_positive_ranks(query, gallery, positives, chunk_size=7), whole)
    assert torch.equal(best_positive_ranks(query, gallery, positives, chunk_size=1), whole)


def test_hand_computed_case() -> None:
    query = [[1.0, 0.0]]
    gallery = [[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [0.8, 0.6]]  # cosines 1, 0, -1, 0.8
    metrics = retrieval_metrics(query, gallery, [[1]], "t2i", ks=(1, 2, 3), hit_ks=(100,))
    # best positive (item 1, cosine 0) is beaten by items 0 (1.0) and 3 (0.8): rank 3
    assert (metrics["t2i_R@1"], metrics["t2i_R@2"], metrics["t2i_R@3"]) == (0.0, 0.0, 1.0)
    assert metrics["t2i_median_rank"] == 3.0 and metrics["t2i_mean_rank"] == 3.0
    assert "t2i_hit@100" not in metrics  # k >= the 4-item gallery
    # two positives: the better one (item 3, 0.8) counts, beaten only by item 0
    assert best_positive_ranks(query, gallery, [[1, 3]]).tolist() == [2]


def test_ties_count_against_the_query() -> None:
    # all-zero embeddings: every cosine is 0, so the positive must rank last, not first
    ranks = best_positive_ranks(np.zeros((2, 3)), np.zeros((5, 3)), [[0], [2, 4]])
    assert ranks.tolist() == [5, 4]


def test_rank_metrics_median_of_even_count() -> None:
    out = rank_metrics([1, 2, 3, 10], gallery_size=20, prefix="x", ks=(2,), hit_ks=())
    assert out == {"x_R@2": 0.5, "x_median_rank": 2.5, "x_mean_rank": 4.0}


def test_default_hit_grid_is_the_papers() -> None:
    assert DEFAULT_HIT_KS[0] == 100 and DEFAULT_HIT_KS[-1] == 10_000 and len(DEFAULT_HIT_KS) == 100


def test_bad_positives_are_refused_with_reasons() -> None:
    q, g = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(ValueError, match="no positive"):
        retrieval_metrics(q, g, [[0], []], "x")
    with pytest.raises(ValueError, match="outside the gallery"):
        retrieval_metrics(q, g, [[0], [4]], "x")
    with pytest.raises(ValueError, match="2 queries"):
        retrieval_metrics(q, g, [[0]], "x")


def test_positives_by_key_links_images_and_captions() -> None:
    image_ids = ["a", "b", "c"]
    caption_links = ["b", "a", "a", "c", "b"]
    assert positives_by_key(image_ids, caption_links) == [[1, 2], [0, 4], [3]]
    assert positives_by_key(caption_links, image_ids) == [[1], [0], [0], [2], [1]]


def test_fp16_numpy_inputs_are_scored_in_fp32() -> None:
    query, gallery, positives = random_case(5)
    half = best_positive_ranks(query.astype(np.float16), gallery.astype(np.float16), positives)
    assert half.dtype == torch.int64
    assert (half - best_positive_ranks(query, gallery, positives)).abs().max() <= 2  # fp16 rounding only


@pytest.mark.slow
def test_ten_thousand_by_fifty_thousand_stays_in_bounded_memory() -> None:
    """10k x 50k is 2 GB as one fp32 matrix; chunked it must stay well under that (measured in a child)."""
    import subprocess
    import sys

    code = (
        "import resource, torch\n"
        "from embedcache.evaluate.retrieval import retrieval_metrics\n"
        "g = torch.Generator().manual_seed(0)\n"
        "q, gal = torch.randn(10_000, 16, generator=g), torch.randn(50_000, 16, generator=g)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "m = retrieval_metrics(q, gal, [[i * 5] for i in range(10_000)], 'i2t')\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print((after - before) // 1024, m['i2t_hit@10000'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    grown_mib, hit = int(out[0]), float(out[1])
    assert grown_mib < 1024, f"peak memory grew by {grown_mib} MiB (one unchunked matrix alone is 1907 MiB)"
    assert 0.1 < hit < 0.3  # random embeddings: about 10k / 50k of best positives fall in the top 10k


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_repeated_gallery_ranks_equal_the_expanded_gallery_with_the_own_row_as_answer(chunk: int | None) -> None:
    # The authors' Fig. 4: one image row per caption, the answer is the caption's own row; its image's other
    # rows tie with it exactly (pessimistic: they rank above).
    rng = np.random.default_rng(5)
    images = rng.standard_normal((9, 4)).astype(np.float32)
    counts = np.array([5, 5, 4, 6, 5, 1, 5, 5, 3])
    answer = np.repeat(np.arange(9), counts)  # caption q belongs to image answer[q]; row q of the gallery
    captions = images[answer] + rng.standard_normal((len(answer), 4)).astype(np.float32)
    expanded = images[answer]  # (Q, D): the gallery as the authors build it
    naive = best_positive_ranks(captions, expanded, [[q] for q in range(len(answer))])
    ours = repeated_gallery_ranks(captions, images, answer, counts, chunk_size=chunk)
    assert torch.equal(ours, naive)
    assert (ours >= torch.from_numpy(counts[answer])).all()  # never ahead of its own image's duplicates


def test_the_authors_flickr8k_gallery_reports_every_k_of_the_figure() -> None:
    # 40,455 caption rows: every k = 100..10,000 is below the gallery size, so the whole curve is reported.
    ranks = torch.randint(1, 40_456, (1000,))
    out = rank_metrics(ranks, 40_455, "text_to_image_rows", ks=(1,), hit_ks=DEFAULT_HIT_KS)
    assert len([k for k in out if "_hit@" in k]) == 100 and out["text_to_image_rows_hit@10000"] < 1.0
