"""shapes' hard difficulty (the demo twins' data): cluttered, occluded, noisy scenes whose label is still the
largest object, half the images for test, three graded pairs per image; the easy dataset is unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedcache.datasets import DATASETS
from embedcache.datasets.scenes import DIFFICULTIES, sample_hard_scene, sample_scene
from embedcache.datasets.synthetic import generate_shapes


def test_hard_scenes_keep_the_label_the_largest_object_but_crowd_it():
    scenes = [sample_hard_scene(np.random.default_rng([0, i])) for i in range(300)]
    assert all(s.objects[0].radius > max(o.radius for o in s.objects[1:]) for s in scenes)
    assert min(len(s.objects) for s in scenes) == 2 and max(len(s.objects) for s in scenes) == 4
    easy = [sample_scene(np.random.default_rng([0, i])) for i in range(300)]
    ratio = [s.objects[0].radius / max([o.radius for o in s.objects[1:]] or [np.inf]) for s in easy]
    hard_ratio = [s.objects[0].radius / max(o.radius for o in s.objects[1:]) for s in scenes]
    assert np.median(hard_ratio) < 1.45 < np.median([r for r in ratio if np.isfinite(r)])
    assert np.mean([s.noise for s in scenes]) > 2 * np.mean([s.noise for s in easy])


def test_hard_dataset_tests_on_half_the_images_with_three_pairs_each(tmp_path):
    root = generate_shapes(tmp_path / "h", size=100, difficulty="hard")
    meta = json.loads((root / "meta.json").read_text())
    assert meta["difficulty"] == "hard" and meta["splits"] == {"train": 40, "val": 10, "test": 50}
    assert 130 <= meta["pairs"]["test"] <= 150  # 3 per image, less the rare pair of a caption with itself
    ds = DATASETS.get("shapes")(root=root, size=100, difficulty="hard")
    assert len(ds.load_split("test").images) == 50 and ds.options()["difficulty"] == "hard"


def test_easy_dataset_options_and_meta_are_unchanged(tmp_path):
    ds = DATASETS.get("shapes")(size=20)
    assert "difficulty" not in ds.options()  # easy stores keep their fingerprints
    meta = json.loads((generate_shapes(tmp_path / "e", size=20) / "meta.json").read_text())
    assert "difficulty" not in meta and meta["splits"] == {"train": 16, "val": 2, "test": 2}


def test_unknown_difficulty_lists_the_known_ones(tmp_path):
    with pytest.raises(KeyError, match="known: easy, hard"):
        generate_shapes(tmp_path / "x", size=20, difficulty="brutal")
    assert DIFFICULTIES.names() == ["easy", "hard"]
