"""Stores -> in-RAM tensors joined by id: what stage two trains and evaluates on.

A `View` is one split of one store read whole (one contiguous read per array): ids, pooled (N, D) fp32 and,
when asked for, the ragged token rows (kept in the stored dtype, fp16 by default, to halve the memory; cast
to fp32 per minibatch). `PairData` joins several views BY ID into pair rows (P, M) and gathers a minibatch
from a row index in one vectorised step: pooled inputs become (B, 1, D) with no mask, token inputs a padded
(B, T_max, D) plus a (B, T_max) mask. There is no per-item Dataset/DataLoader: an epoch is a permutation.

Pairings (how the rows of different stores belong together) are registered in PAIRINGS:
- "links": one anchor store without links (images) and stores whose items link to anchor ids (captions);
  every caption gives one row (image row, caption row, ...). An image is repeated over its captions.
- "ids": items with the same id in every store (one caption set embedded by two text backbones).
- "table": explicit (a id, b id) pairs between two stores, e.g. mined caption pairs (embedcache.pairs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedcache.heads.base import Batch
from embedcache.registry import Registry
from embedcache.store import open_store

RAM_FRACTION = 0.6  # token arrays larger than this share of free RAM are refused with a clear message


@dataclass
class View:
    """One store split in RAM. `tokens` is None when the view is pooled-only."""

    path: str
    split: str
    ids: np.ndarray  # (N,) str
    pooled: torch.Tensor  # (N, D) float32
    tokens: torch.Tensor | None = None  # (T_total, D) stored dtype, or (N, L, D) when every row has L tokens
    offsets: torch.Tensor | None = None  # (N+1,) int64, ragged rows only
    labels: np.ndarray | None = None  # (N,) int64 (-1 none) or (N, C) uint8
    links: np.ndarray | None = None  # (N,) str ids in the anchor modality
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    _index: dict[str, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        """Width of what `gather` returns: the token width with tokens (CLIP: 768 vs 512 pooled), else pooled."""
        return int(self.tokens.shape[-1]) if self.tokens is not None else int(self.pooled.shape[1])

    @property
    def uses_tokens(self) -> bool:
        return self.tokens is not None

    def index(self) -> dict[str, int]:
        """id -> row (built once)."""
        if self._index is None:
            self._index = {str(i): r for r, i in enumerate(self.ids)}
        return self._index

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """Rows of `ids` (int64); -1 where an id is absent."""
        index = self.index()
        return np.fromiter((index.get(str(i), -1) for i in ids), np.int64, count=len(ids))

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """rows (B,) -> x (B, T, D) float32 and mask (B, T) bool, or None when every token is real."""
        if self.tokens is None:
            return self.pooled.index_select(0, rows).unsqueeze(1), None  # (B, 1, D)
        if self.offsets is None:  # fixed length: (N, L, D)
            return self.tokens.index_select(0, rows).float(), None
        start = self.offsets.index_select(0, rows)  # (B,)
        length = self.offsets.index_select(0, rows + 1) - start
        steps = torch.arange(int(length.max()), device=rows.device)  # (T_max,)
        mask = steps.unsqueeze(0) < length.unsqueeze(1)  # (B, T_max)
        flat = torch.where(mask, start.unsqueeze(1) + steps, 0)  # pads read row 0; masked everywhere after
        return self.tokens[flat].float(), mask

    def to(self, device: torch.device | str) -> View:
        """Move the tensors to `device` once (GPU training keeps the whole view there)."""
        for name in ("pooled", "tokens", "offsets"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        return self


def _free_ram() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        return 1 << 40


def _load_tokens(split: Any, path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    offsets = split.offsets()
    width = int(getattr(split, "token_dim", None) or split.dim)
    need = int(offsets[-1]) * width * 2
    if need > RAM_FRACTION * _free_ram():
        raise MemoryError(
            f"the tokens of split {split.name!r} of {path} need {need / 2**30:.1f} GiB in RAM, more than "
            f"{RAM_FRACTION:.0%} of the {_free_ram() / 2**30:.1f} GiB free; train on pooled vectors instead "
            "(`--pooled`), or on a machine with more memory (block streaming of tokens is not implemented)")
    flat, _ = split.token_rows(0, len(split), dtype=np.float16)  # one contiguous read, fp16 in RAM
    tokens = torch.from_numpy(np.ascontiguousarray(flat))
    lengths = np.diff(offsets)
    if len(lengths) and (lengths == lengths[0]).all() and lengths[0] > 0:
        return tokens.view(len(lengths), int(lengths[0]), width), None  # e.g. 49 image tokens
    return tokens, torch.from_numpy(offsets.astype(np.int64))


def load_view(path: str | Path, split: str, *, tokens: bool | None = False) -> View:
    """Read one split of the store at `path` into RAM. tokens: True (required), False, None (if stored)."""
    path = Path(path)
    with open_store(path) as store:
        s = store.split(split)
        use_tokens = s.has_tokens if tokens is None else tokens
        if use_tokens and not s.has_tokens:
            raise ValueError(f"split {split!r} of {path} has no tokens; re-extract with them: "
                             f"`embedcache extract {store.attrs.get('dataset', path.parent.name)} "
                             f"--model {store.attrs.get('backbone', path.stem)} --tokens --force`, "
                             "or train on pooled vectors (`--pooled`)")
        tok, off = _load_tokens(s, path) if use_tokens else (None, None)
        return View(path=str(path), split=split, ids=np.asarray(s.ids).astype(str),
                    pooled=torch.from_numpy(s.pooled(np.float32)), tokens=tok, offsets=off, labels=s.labels,
                    links=None if s.links is None else np.asarray(s.links).astype(str), pairs=s.pairs,
                    attrs=dict(store.attrs), fingerprint=store.fingerprint)


def view_from_arrays(ids: Sequence[str], pooled: np.ndarray, *, tokens: list[np.ndarray] | None = None,
                     labels: np.ndarray | None = None, links: Sequence[str] | None = None,
                     attrs: dict[str, Any] | None = None) -> View:
    """A view built from in-memory arrays (tests, prompts embedded on the fly); tokens as a list of (T_i, D)."""
    tok = off = None
    if tokens is not None:
        lengths = np.array([len(t) for t in tokens], np.int64)
        tok = torch.from_numpy(np.concatenate(tokens).astype(np.float16))
        off = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    return View(path="<memory>", split="", ids=np.asarray(ids).astype(str),
                pooled=torch.as_tensor(np.asarray(pooled, np.float32)), tokens=tok, offsets=off, labels=labels,
                links=None if links is None else np.asarray(links).astype(str), attrs=dict(attrs or {}))


def concat_views(first: View, second: View) -> View:
    """Rows of `first` then rows of `second` as one view (tokens and offsets joined; labels kept if both have)."""
    tok = off = None
    if first.tokens is not None and second.tokens is not None:
        if first.offsets is None and second.offsets is None and first.tokens.shape[1:] == second.tokens.shape[1:]:
            tok = torch.cat([first.tokens, second.tokens])
        else:
            flat = [v.tokens.reshape(-1, v.dim) for v in (first, second)]
            tok = torch.cat(flat)
            off = torch.cat([_offsets(first), _offsets(second)[1:] + len(flat[0])])
    labels = None
    if first.labels is not None and second.labels is not None:
        labels = np.concatenate([first.labels, second.labels])
    return View(path=first.path, split=f"{first.split}+{second.split}", ids=np.concatenate([first.ids, second.ids]),
                pooled=torch.cat([first.pooled, second.pooled.to(first.pooled.device)]), tokens=tok, offsets=off,
                labels=labels, attrs=first.attrs, fingerprint=first.fingerprint)


def _offsets(view: View) -> torch.Tensor:
    if view.offsets is not None:
        return view.offsets
    n, length = view.tokens.shape[:2]  # fixed length (N, L, D)
    return torch.arange(n + 1, device=view.tokens.device) * length


# ---------------------------------------------------------------- joining views by id

Pairing = Callable[..., np.ndarray]
PAIRINGS: Registry[Pairing] = Registry("pairing")


class PairingError(ValueError):
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


@PAIRINGS.register("table")
def pair_from_table(views: Sequence[View], a_ids: Sequence[str], b_ids: Sequence[str]) -> np.ndarray:
    """(P, 2) rows of explicit pairs: a ids in the first store, b ids in the second."""
    if len(views) != 2:
        raise PairingError(f"pairing 'table' joins exactly two stores; found {len(views)}")
    rows = np.stack([views[0].rows_of(a_ids), views[1].rows_of(b_ids)], axis=1)
    return rows


@dataclass
class PairData:
    """Views joined into rows (P, M), optionally with per-row labels; gathers minibatches by row index."""

    views: list[View]
    rows: torch.Tensor  # (P, M) int64
    labels: torch.Tensor | None = None  # (P,) or (P, C)
    dropped: int = 0  # pair candidates without a partner in every store

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def batch(self, idx: torch.Tensor) -> Batch:
        """The minibatch of rows idx (B,): one gather per modality."""
        keys = self.rows.index_select(0, idx)  # (B, M)
        inputs = [view.gather(keys[:, m]) for m, view in enumerate(self.views)]
        labels = None if self.labels is None else self.labels.index_select(0, idx)
        return Batch(inputs, keys, labels)

    def subset(self, idx: torch.Tensor) -> PairData:
        """The same views with only rows idx."""
        labels = None if self.labels is None else self.labels[idx]
        return PairData(self.views, self.rows[idx], labels)

    def to(self, device: torch.device | str) -> PairData:
        for view in self.views:
            view.to(device)
        self.rows = self.rows.to(device)
        self.labels = None if self.labels is None else self.labels.to(device)
        return self


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
