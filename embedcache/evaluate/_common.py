"""Small shared helpers for the pure metrics: tensor conversion, key naming, safe division."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from embedcache.errors import BadInputError

# Everything a metric accepts as an array: a torch tensor, a numpy array or a plain sequence.
ArrayLike = torch.Tensor | np.ndarray | Sequence


def as_float(x: ArrayLike, device: torch.device | str | None = None) -> torch.Tensor:
    """A float32 torch tensor view of `x` (fp16 stores are scored in fp32), on `device` if given."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.detach().to(torch.float32)
    return t.to(device) if device is not None else t


def as_long(x: ArrayLike, device: torch.device | str | None = None) -> torch.Tensor:
    """An int64 torch tensor of labels or indices."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.detach().to(torch.int64)
    return t.to(device) if device is not None else t


def as_numpy(x: ArrayLike, dtype: type = np.float64) -> np.ndarray:
    """A numpy copy of `x` in `dtype` (float64 by default: sums over 10^5 rows stay exact enough)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def join(prefix: str, name: str) -> str:
    """Flat metric key: `prefix_name`, or just `name` when the prefix is empty."""
    return f"{prefix}_{name}" if prefix else name


def ratio(num: float, den: float) -> float:
    """num / den as a plain float, 0.0 when den is 0 (sklearn's zero_division=0 convention)."""
    return float(num) / float(den) if den else 0.0


def check_rows(name_a: str, a: int, name_b: str, b: int) -> None:
    """Raise when two arrays that must be row-aligned are not."""
    if a != b:
        raise BadInputError(f"{name_a} has {a} rows but {name_b} has {b}; they must describe the same items in order")
