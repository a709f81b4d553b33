"""Zero-shot classification against a naive reference and hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embedcache.evaluate.zeroshot import (
    CBMF_LOGIT_SCALE,
    CBMF_TEMPLATES,
    DEFAULT_TEMPLATES,
    class_embeddings,
    prompts,
    zero_shot,
    zero_shot_probs,
)


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def naive_topk(images: np.ndarray, classes: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Per image: cosine to each class by loops, sort classes by descending score, is the label in the first k?"""
    hits = 0
    for img, y in zip(images, labels, strict=True):
        u = _unit(img.tolist())
        scores = [sum(a * b for a, b in zip(u, _unit(c.tolist()), strict=True)) for c in classes]
        order = sorted(range(len(classes)), key=lambda c: -scores[c])
        hits += int(y in order[:k])
    return hits / len(labels)


def naive_template_average(class_emb: np.ndarray) -> np.ndarray:
    """(C, K, D): normalise each template, average, normalise again, by explicit loops."""
    out = []
    for templates in class_emb:
        units = [_unit(t.tolist()) for t in templates]
        mean = [sum(u[d] for u in units) / len(units) for d in range(len(units[0]))]
        out.append(_unit(mean))
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_topk_matches_naive_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    images, classes = rng.normal(size=(60, 5)), rng.normal(size=(7, 5))
    labels = rng.integers(0, 7, size=60)
    metrics = zero_shot(images, classes, labels, topk=(1, 2, 3, 4, 5))
    for k in range(1, 6):
        assert metrics[f"zeroshot_top{k}"] == pytest.approx(naive_topk(images, classes, labels, k))
    assert metrics["zeroshot_top1"] < metrics["zeroshot_top5"]


def test_templates_are_averaged_then_renormalised() -> None:
    rng = np.random.default_rng(2)
    per_template = rng.normal(size=(4, 3, 6))  # (C, K, D)
    ours = class_embeddings(torch.from_numpy(per_template)).numpy()
    np.testing.assert_allclose(ours, naive_template_average(per_template), rtol=1e-5, atol=1e-6)
    images, labels = rng.normal(size=(30, 6)), rng.integers(0, 4, size=30)
    expected = naive_topk(images, naive_template_average(per_template), labels, 1)
    assert zero_shot(images, per_template, labels, topk=(1,))["zeroshot_top1"] == pytest.approx(expected)


def test_hand_computed_case_and_clamped_k() -> None:
    classes = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    images = [[2.0, 0.1], [0.1, 3.0], [0.2, 1.0], [-1.0, -0.2]]
    labels = [0, 1, 0, 0]
    # image 2 prefers class 1 (0.98) over its label 0 (0.196); image 3 ranks its label 0 last (-0.98)
    out = zero_shot(images, classes, labels, topk=(1, 2, 5))
    assert out["zeroshot_top1"] == 0.5
    assert out["zeroshot_top2"] == 0.75
    assert out["zeroshot_top5"] == 1.0  # k > C: clamped to C
    assert out["zeroshot_mean_per_class_recall"] == pytest.approx((1 / 3 + 1) / 2)  # class 0: 1 of 3, class 1: 1 of 1


def test_probabilities_follow_the_cbmf_code() -> None:
    images, classes = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    probs = zero_shot_probs(images, classes)
    expected = torch.softmax(torch.tensor([1.0, 0.0]) * 10 * math.exp(2.5), dim=0)
    torch.testing.assert_close(probs[0], expected)
    assert CBMF_LOGIT_SCALE == pytest.approx(10 * math.exp(2.5))


def test_prompts_are_class_major() -> None:
    out = prompts(["cat", "dog"], ("a photo of a {}.", "a drawing of a {}."))
    assert out == ["a photo of a cat.", "a drawing of a cat.", "a photo of a dog.", "a drawing of a dog."]
    assert prompts(["cat"]) == ["a photo of a cat."] and DEFAULT_TEMPLATES == ("a photo of a {}.",)
    assert prompts(["cat"], CBMF_TEMPLATES) == ["a photo of a cat"]


def test_bad_labels_and_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        zero_shot(np.ones((2, 3)), np.eye(2, 3), [0, 2])
    with pytest.raises(ValueError, match="same D"):
        zero_shot(np.ones((2, 4)), np.eye(2, 3), [0, 1])
