"""Pairings: how the rows of different stores belong together, and `join`, which turns views into PairData.

Each pairing is registered in PAIRINGS where it is defined, here, and returns (P, M) row indices (-1 where a
store lacks the partner):
- "links": one anchor store without links (images) and stores whose items link to anchor ids (captions);
  every caption gives one row (image row, caption row, ...). An image is repeated over its captions.
- "ids": items with the same id in every store (one caption set embedded by two text backbones).
- "multi-links": any mix of stores for classification (captions by id, images through the links).
- "table": explicit (a id, b id) pairs between two stores, e.g. mined caption pairs (embedcache.fusion.mining).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from embedcache.errors import UserError
from embedcache.fusion.views import PairData, View
from embedcache.registry import Registry

Pairing = Callable[..., np.ndarray]
PAIRINGS: Registry[Pairing] = Registry("pairing")


class PairingError(UserError, ValueError):
    """The stores cannot be joined the way asked (says what is missing and how to fix it)."""


@PAIRINGS.register("links")
def pair_by_links(views: Sequence[View]) -> np.ndarray:
    """(P, M) rows: one per item of the linking stores whose link is an anchor id (captions -> image)."""
    anchors = [i for i, v in enumerate(views) if v.links is None]
    linked = [i for i, v in enumerate(views) if v.links is not None]
    if len(anchors) != 1 or not linked:
        raise PairingError(f"pairing 'links' needs exactly one store without links (the anchor) and at least one "
                           f"with links; found {len(anchors)} without and {len(linked)} with: "
                           f"{[v.path for v in views]}. Use pairing 'ids' for stores of the same items")
    base = views[linked[0]]
    rows = np.full((len(base), len(views)), -1, np.int64)
    rows[:, linked[0]] = np.arange(len(base))
    rows[:, anchors[0]] = views[anchors[0]].rows_of(base.links)
    for i in linked[1:]:
        rows[:, i] = views[i].rows_of(base.ids)
    return rows


@PAIRINGS.register("ids")
def pair_by_ids(views: Sequence[View]) -> np.ndarray:
    """(P, M) rows of the ids present in every store, in the first store's order."""
    rows = np.stack([v.rows_of(views[0].ids) for v in views], axis=1)
    return rows


@PAIRINGS.register("multi-links")
def pair_by_multi_links(views: Sequence[View]) -> np.ndarray:
    """(P, M) rows for any mix of stores (classification): one row per item of the first store with links (a
    caption); other linked stores matched by that item's id, stores without links (images) through its link, so
    an image repeats over its captions. Without any linked store, items with the same id in every store ('ids')."""
    linked = [i for i, v in enumerate(views) if v.links is not None]
    if not linked:
        return pair_by_ids(views)
    base = views[linked[0]]
    rows = np.empty((len(base), len(views)), np.int64)
    for i, view in enumerate(views):
        rows[:, i] = view.rows_of(base.ids if view.links is not None else base.links)
    return rows


@PAIRINGS.register("table")
def pair_from_table(views: Sequence[View], a_ids: Sequence[str], b_ids: Sequence[str]) -> np.ndarray:
    """(P, 2) rows of explicit pairs: a ids in the first store, b ids in the second."""
    if len(views) != 2:
        raise PairingError(f"pairing 'table' joins exactly two stores; found {len(views)}")
    rows = np.stack([views[0].rows_of(a_ids), views[1].rows_of(b_ids)], axis=1)
    return rows


def join(views: list[View], pairing: str = "links", **kwargs: Any) -> PairData:
    """Join views with a registered pairing into PairData (rows on the CPU; call .to(device) to move).

    Pairings return (P, M) rows with -1 where a store lacks the partner; those rows are dropped and counted.
    """
    rows = PAIRINGS.get(pairing)(views, **kwargs)
    keep = (rows >= 0).all(axis=1)
    if not keep.any():
        raise PairingError(f"pairing {pairing!r} found no items shared by {[f'{v.path}:{v.split}' for v in views]}; "
                           "are these stores of the same dataset and split?")
    return PairData(views, torch.from_numpy(np.ascontiguousarray(rows[keep])), dropped=int((~keep).sum()))
