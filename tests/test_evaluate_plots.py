"""Figures from metric dicts, and the purity of the evaluate package itself."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from embedcache.evaluate.plots import _sts_panels, plot_hit_rate, plot_sts_tolerance
from embedcache.evaluate.retrieval import retrieval_metrics
from embedcache.evaluate.sts import sts_metrics


def test_sts_plot_has_a_panel_per_band_and_a_line_per_run(tmp_path) -> None:
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 200)
    runs = {"BERT": sts_metrics(gold + rng.normal(scale=1.0, size=200), gold),
            "CBMF": sts_metrics(gold + rng.normal(scale=0.3, size=200), gold)}
    panels = _sts_panels(runs, "sts")
    assert list(panels) == ["", "0-1", "1-2", "2-3", "3-4", "4-5"]
    assert set(panels["3-4"]) == {"BERT", "CBMF"} and len(panels["3-4"]["CBMF"]) == 100
    out = plot_sts_tolerance(runs, tmp_path / "figs" / "sts.png")
    image = imread(out)
    assert image.shape[1] > 2 * image.shape[0]  # six panels side by side
    assert image[..., :3].std() > 0.05  # something was drawn, not a blank canvas


def test_hit_rate_plot_from_one_run(tmp_path) -> None:
    rng = np.random.default_rng(1)
    metrics = retrieval_metrics(rng.normal(size=(30, 4)), rng.normal(size=(500, 4)), [[i] for i in range(30)],
                                "image_to_text")
    out = plot_hit_rate(metrics, tmp_path / "hit.png")
    assert out.exists() and imread(out).shape[2] in (3, 4)


def test_plots_refuse_dicts_without_their_keys(tmp_path) -> None:
    with pytest.raises(ValueError, match="sts_metrics"):
        plot_sts_tolerance({"acc": 0.5}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="retrieval_metrics"):
        plot_hit_rate({"acc": 0.5}, tmp_path / "b.png")
    assert not (tmp_path / "a.png").exists()


def test_evaluate_is_pure_stage_two_code() -> None:
    """Importing embedcache.evaluate loads neither transformers/timm nor matplotlib, and every metric
    returns a flat dict of plain floats that JSON serialises as is."""
    code = (
        "import sys, json, numpy as np\n"
        "import embedcache.evaluate as ev\n"
        "print(json.dumps(sorted(m for m in ('transformers', 'timm', 'matplotlib') if m in sys.modules)))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout)
    assert loaded == []
    from embedcache import evaluate as ev

    rng = np.random.default_rng(2)
    dicts = [ev.retrieval_metrics(rng.normal(size=(5, 3)), rng.normal(size=(9, 3)), [[0]] * 5, "i2t"),
             ev.zero_shot(rng.normal(size=(5, 3)), rng.normal(size=(4, 3)), [0, 1, 2, 3, 0]),
             ev.sts_metrics(rng.uniform(0, 5, 20), rng.uniform(0, 5, 20)),
             ev.pair_classification(rng.random(10), rng.integers(0, 2, 10), 0.5, "mrpc"),
             ev.single_label_metrics(rng.normal(size=(6, 3)), [0, 1, 2, 0, 1, 2]),
             ev.binary_metrics(rng.random(6), [0, 1, 0, 1, 1, 0]),
             ev.multilabel_metrics(rng.random((6, 3)), rng.random((6, 3)) > 0.5)]
    for d in dicts:
        assert all(isinstance(k, str) and type(v) is float for k, v in d.items()), d
        json.dumps(d, allow_nan=False)
