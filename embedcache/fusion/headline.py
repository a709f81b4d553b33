"""What a person reads after `train` and `eval`: a few headline numbers instead of every metric.

`validation_headline(run)` gives, for a finished run, the numbers that say whether the head learned anything,
on validation data, beside a frozen-store baseline where one exists: retrieval R@1/5 both ways for image-text
alignment heads (baseline: cosine retrieval of the raw pooled stores when both have the same width), STS
Spearman for text-text heads (baseline: each raw text store), accuracy and macro F1 for classifiers.
`headline_metrics(task, metrics, info)` picks the few keys of an evaluation's flat dict worth printing and
`curve_families` finds the long curves (hit@k, acc@t) that belong in a PNG instead of the terminal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedcache.fusion.runs import CHECKPOINT, Run

HEADLINE_GROUP = "val-headline"  # where the validation headline is recorded in run.json
CURVE = re.compile(r"(?P<family>.+@)(?P<x>[0-9.]+)$")


@dataclass(frozen=True)
class Line:
    """One headline number: the metric, the head's value and the frozen-store baseline (None where none)."""

    metric: str
    head: float
    baseline: float | None = None
    chance: float | None = None  # a random ranking's expected value, where simple to state


def curve_families(metrics: dict[str, float], min_points: int = 6) -> dict[str, list[str]]:
    """Keys that form a curve (`<family>@<x>` with at least `min_points` x values), grouped by family."""
    families: dict[str, list[str]] = {}
    for key in metrics:
        m = CURVE.match(key)
        if m:
            families.setdefault(m["family"], []).append(key)
    return {f: keys for f, keys in families.items() if len(keys) >= min_points}


def _retrieval_headline(metrics: dict[str, float], info: dict[str, Any]) -> dict[str, float]:
    """R@1/5/10 and median rank both ways, and the three smallest hit@k with k below the gallery size."""
    out = {}
    for way, gallery in (("image_to_text", info.get("captions")), ("text_to_image", info.get("images"))):
        out.update({k: metrics[k] for k in (f"{way}_R@1", f"{way}_R@5", f"{way}_R@10", f"{way}_median_rank")
                    if k in metrics})
        hits = sorted((float(k.rsplit("@", 1)[1]), k) for k in metrics if k.startswith(f"{way}_hit@"))
        within = [k for x, k in hits if gallery is None or x < gallery][:3]  # hit@k >= gallery size is 1.0
        out.update({k: metrics[k] for k in within})
    return out


def headline_metrics(task: str, metrics: dict[str, float], info: dict[str, Any] | None = None,
                     limit: int = 16) -> dict[str, float]:
    """The keys of an evaluation worth printing: retrieval's recalls, median ranks and a few hit@k within the
    gallery; for other tasks every key that is not part of a long curve (at most `limit`)."""
    if task == "retrieval":
        return _retrieval_headline(metrics, info or {})
    curves = {k for keys in curve_families(metrics).values() for k in keys}
    return dict([(k, v) for k, v in metrics.items() if k not in curves][:limit])


def write_curves(task: str, metrics: dict[str, float], path: Path) -> Path | None:
    """The evaluation's long curves as one PNG (hit rate vs k, or STS accuracy vs tolerance); None when it has
    none."""
    from embedcache.evaluate.plots import plot_hit_rate, plot_sts_tolerance

    families = curve_families(metrics)
    if any(f.endswith("_hit@") for f in families):
        return plot_hit_rate(metrics, path)
    if any(f.startswith("sts_acc@") for f in families):
        return plot_sts_tolerance(metrics, path, prefix="sts")
    return None


# ---------------------------------------------------------------- validation headline after training


def _classifier(run: Run) -> list[Line]:
    val = run.metrics.get("val", {})
    return [Line(f"val {k}", val[k]) for k in ("acc", "macro_f1", "micro_f1", "samples_f1") if k in val]


def _retrieval(ctx: Any, split: str) -> list[Line]:
    from embedcache.fusion.tasks import linked_retrieval, retrieval

    metrics, info = retrieval(ctx, split=split, hit_ks=())
    mi, mt = ctx.side("image"), ctx.side("text")
    images, texts = ctx.view(mi, split, raw=True), ctx.view(mt, split, raw=True)
    base: dict[str, float] = {}
    if images.pooled.shape[1] == texts.pooled.shape[1]:  # raw cosine needs one space (e.g. a CLIP pair)
        base, _ = linked_retrieval(images.pooled, texts.pooled, images, texts, hit_ks=())
    keys = ("image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5")
    # a random ranking finds one of an image's captions (or a caption's image) in the top k about k/images
    return [Line(f"{split} {k}", metrics[k], base.get(k), min(1.0, int(k.rsplit("@", 1)[1]) / max(info["images"], 1)))
            for k in keys]


def _sts(ctx: Any, split: str) -> list[Line]:
    from embedcache.fusion.tasks import sts

    metrics, _ = sts(ctx, split=split)
    raw = [k for k in metrics if k.startswith("raw_") and k.endswith("_sts_spearman")]
    return [Line(f"{split} sts_spearman", metrics["sts_spearman"], metrics[raw[0]] if raw else None)]


def validation_headline(run: Run, *, data_dir: str | Path | None = None, device: str | None = None,
                        split: str = "val") -> tuple[list[Line], str]:
    """The run's headline on `split` beside a frozen-store baseline (see module doc), and a one-line note on
    what the baseline is or why there is none. Records the numbers under run.json's `val-headline` group."""
    if run.record.get("task") == "classify" or "val" in run.metrics:  # classifiers, late fusions
        return _classifier(run), "validation metrics recorded by the trainer"
    if not (run.dir / CHECKPOINT).is_file():
        return [], "no head to evaluate (a run without a checkpoint)"
    from embedcache.fusion.tasks import Context

    ctx = Context(run, None, data_dir, device)
    modalities = [x["modality"] for x in run.inputs]
    try:
        if "image" in modalities and "text" in modalities:
            lines, note = _retrieval(ctx, split), "baseline: cosine retrieval of the raw pooled stores"
            if lines[0].baseline is None:
                note = "no frozen baseline: the raw image and text stores are different spaces (widths differ)"
        elif modalities.count("text") >= 2:
            lines, note = _sts(ctx, split), "baseline: cosine of the raw text store's pooled vectors"
        else:
            return [], f"no headline for inputs {modalities}"
    except (ValueError, KeyError, FileNotFoundError) as err:
        return [], f"no {split} headline: {err}"
    run.add_metrics(HEADLINE_GROUP, {ln.metric: ln.head for ln in lines} |
                    {f"baseline {ln.metric}": ln.baseline for ln in lines if ln.baseline is not None})
    return lines, note
