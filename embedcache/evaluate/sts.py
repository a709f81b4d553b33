"""STS-B metrics: correlations and CBMF's accuracy under error tolerances, overall and per similarity band.

A pair counts as correct under tolerance e when |pred - gold| / error_scale <= e. The defaults are the
authors' notebook (text_text.ipynb, `accuracy`): it compares the raw cosine with gold / 5, i.e. pred = 5 *
cosine (`cosine_to_sts(cos, "unit")`, no clipping) with error_scale 5, so |cos - gold / 5| <= e, and bins
gold scores with right-closed bands (x <= 1, 1 < x <= 2, ..., x > 4): `band_edges="right"`. The paper's
text can be read as both on the 0..5 scale (error_scale 1, five times stricter) with left-closed bands
[lo, hi): `error_scale=1.0, band_edges="left"`. Tolerances run over 0.1..1 (the paper's figure; the notebook
uses np.linspace(0, 1, 100)). Both forms are supported so a results row can say which it used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from scipy.stats import rankdata

from embedcache.errors import BadInputError
from embedcache.evaluate._common import ArrayLike, as_numpy, check_rows, join
from embedcache.registry import Registry

STS_MAX = 5.0
DEFAULT_TOLERANCES = tuple(float(t) for t in np.linspace(0.1, 1.0, 100).round(10))
DEFAULT_BANDS = ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0), (4.0, 5.01))

# cosine -> 0..5. "unit": cosine read on [0, 1] (5 * cos, the authors' notebook; negative cosines stay
# negative); "signed": cosine read on [-1, 1] (2.5 * (cos + 1)).
COSINE_MAPS: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("cosine-to-STS mapping")
COSINE_MAPS.register("unit", lambda c: STS_MAX * c)
COSINE_MAPS.register("signed", lambda c: STS_MAX * (c + 1.0) / 2.0)


def cosine_to_sts(cos: ArrayLike, mode: str = "unit", clip: bool = False) -> np.ndarray | torch.Tensor:
    """Map cosine similarities to STS-B's 0..5 scale. `mode` "unit" (5 * cos, what the CBMF code does) or
    "signed" (2.5 * (cos + 1)); `clip` clamps the result to [0, 5]. Returns the input's array type."""
    out = COSINE_MAPS.get(mode)(as_numpy(cos))
    out = np.clip(out, 0.0, STS_MAX) if clip else out
    return torch.as_tensor(out, dtype=torch.float32) if isinstance(cos, torch.Tensor) else out


def sts_metrics(
    pred: ArrayLike,
    gold: ArrayLike,
    *,
    tolerances: Sequence[float] = DEFAULT_TOLERANCES,
    bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
    prefix: str = "sts",
    error_scale: float = 5.0,
    band_edges: Literal["left", "right"] = "right",
) -> dict[str, float]:
    """Pearson, Spearman and MAE of pred (N,) vs gold (N,), accuracy `{prefix}_acc@{e}` for every
    tolerance e, per band `{prefix}_acc@{e}_band{lo}-{hi}`, the means over tolerances `{prefix}_acc_mean`
    and `{prefix}_acc_mean_band{lo}-{hi}`, and band sizes `{prefix}_n_band{lo}-{hi}` (empty bands get
    only the size). Bands are (lo, hi] with the lowest band also taking lo ("right", the authors') or [lo, hi)
    ("left"); the error is |pred - gold| / error_scale (5: the authors' |cos - gold / 5| for pred = 5 cos)."""
    p, g = as_numpy(pred).ravel(), as_numpy(gold).ravel()
    check_rows("pred", len(p), "gold", len(g))
    err = np.abs(p - g) / error_scale
    out = {join(prefix, "pearson"): pearson(p, g), join(prefix, "spearman"): spearman(p, g),
           join(prefix, "mae"): float(np.abs(p - g).mean())}
    out.update(_tolerance_curve(err, tolerances, prefix, ""))
    for i, (lo, hi) in enumerate(bands):
        name = band_name(lo, hi)
        mask = _band_mask(g, lo, hi, band_edges, first=i == int(np.argmin([b[0] for b in bands])))
        out[join(prefix, f"n_band{name}")] = float(mask.sum())
        if mask.any():
            out.update(_tolerance_curve(err[mask], tolerances, prefix, f"_band{name}"))
    return out


def _tolerance_curve(err: np.ndarray, tolerances: Sequence[float], prefix: str, suffix: str) -> dict[str, float]:
    accs = {tolerance_key(t): float((err <= t + 1e-9).mean()) for t in tolerances}  # 1e-9: 0.3 == 0.1 * 3
    out = {join(prefix, f"acc@{k}{suffix}"): v for k, v in accs.items()}
    out[join(prefix, f"acc_mean{suffix}")] = float(np.mean(list(accs.values())))
    return out


def _band_mask(g: np.ndarray, lo: float, hi: float, edges: str, first: bool) -> np.ndarray:
    if edges == "left":
        return (g >= lo) & (g < hi)
    if edges == "right":
        return ((g > lo) | (first & (g >= lo))) & (g <= hi)
    raise BadInputError(f"band_edges must be 'left' ([lo, hi)) or 'right' ((lo, hi]); got {edges!r}")


def tolerance_key(t: float) -> str:
    """Key text for a tolerance: 3 decimals, one trailing zero dropped (0.5 -> '0.50', 0.10909 -> '0.109')."""
    text = f"{t:.3f}"
    return text[:-1] if text.endswith("0") else text


def band_name(lo: float, hi: float) -> str:
    """'3-4' for (3, 4); an upper edge past the scale (5.01, which keeps gold 5.0 in the top band) shows as 5."""
    return f"{lo:g}-{min(hi, STS_MAX):g}"


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation in float64 (0.0 when either side is constant)."""
    da, db = a - a.mean(), b - b.mean()
    den = np.sqrt((da * da).sum() * (db * db).sum())
    return float((da * db).sum() / den) if den > 0 else 0.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation: Pearson of average ranks (ties share the mean rank, as in scipy)."""
    return pearson(rankdata(a), rankdata(b))
