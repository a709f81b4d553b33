"""Stores -> in-RAM tensors joined by id: what stage two trains and evaluates on.

A `View` is one split of one store read whole (one contiguous read per array): ids, pooled (N, D) fp32 and,
when asked for, the ragged token rows (kept in the stored dtype, fp16 by default, to halve the memory; cast
to fp32 per minibatch). `PairData` joins several views BY ID into pair rows (P, M) and gathers a minibatch
from a row index in one vectorised step: pooled inputs become (B, 1, D) with no mask, token inputs a padded
(B, T_max, D) plus a (B, T_max) mask. There is no per-item Dataset/DataLoader: an epoch is a permutation.

Token arrays larger than the RAM budget (a share of the free memory, or `ram_budget`) are streamed: the view
keeps a `TokenStream` and holds one block of rows at a time, read from the store in ONE contiguous read.
`PairData.epoch` then groups the pair rows into blocks (sorted by the largest streamed store's row, cut by
bytes at a random offset each epoch), shuffles the block order and the rows within each block: the
negatives of a minibatch come from its block. Pooled vectors are always held whole.

How the rows of different stores belong together (the pairings, and `join`) is embedcache.fusion.pairings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedcache.errors import BadInputError
from embedcache.fusion.heads.base import Batch
from embedcache.fusion.token_stream import TOKEN_BYTES, StreamError, TokenStream, token_tensors
from embedcache.store import open_store

RAM_FRACTION = 0.6  # token arrays up to this share of the free RAM are read whole; larger ones are streamed


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
    stream: TokenStream | None = None  # tokens too large for RAM: `tokens`/`offsets` hold stream.window's rows
    pad_to: int | None = None  # ragged rows padded to this many tokens, not the batch's longest (no GPU sync)
    _index: dict[str, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        """Width of what `gather` returns: the token width with tokens (CLIP: 768 vs 512 pooled), else pooled."""
        if self.stream is not None:
            return self.stream.width
        return int(self.tokens.shape[-1]) if self.tokens is not None else int(self.pooled.shape[1])

    @property
    def uses_tokens(self) -> bool:
        return self.tokens is not None or self.stream is not None

    def hold(self, lo: int, hi: int) -> None:
        """Streamed views: have the token rows [lo, hi) in RAM (one read unless they already are)."""
        if self.stream is None:
            return
        a, b = self.stream.window
        if not (a <= lo and hi <= b):
            self.tokens = self.offsets = None  # let the old block go before the new one is read
            tokens, offsets = self.stream.read(lo, hi)
            device = self.pooled.device
            self.tokens, self.offsets = tokens.to(device), None if offsets is None else offsets.to(device)
            self.stream.window = (lo, hi)

    def blocks(self) -> list[tuple[int, int]]:
        """Row ranges to visit every row in order: one range, or the stream's blocks."""
        if self.stream is None:
            return [(0, len(self))]
        cuts = self.stream.cuts()
        return list(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True))

    def max_tokens(self) -> int:
        """The most tokens of any row (1 without tokens); streamed views read it from their row offsets."""
        if not self.uses_tokens:
            return 1
        if self.stream is not None:
            return self.stream.max_len()
        if self.offsets is None:
            return int(self.tokens.shape[1])
        return int((self.offsets[1:] - self.offsets[:-1]).max()) if len(self) else 0

    def in_order(self, batch_size: int, by_length: bool = False, only: torch.Tensor | None = None
                 ) -> Iterator[torch.Tensor]:
        """Row batches covering every row (or the sorted unique rows `only`) in order, holding each block of a
        streamed view as it comes. by_length: within each block, rows sorted by token count, so a batch pads to
        little more than its own rows' lengths (ragged text tokens padded to a random row's length waste up to
        half the compute)."""
        for lo, hi in self.blocks():
            if only is not None:
                rows = only[int(torch.searchsorted(only, lo)):int(torch.searchsorted(only, hi))]
                if not len(rows):
                    continue
                self.hold(lo, hi)
                rows = rows.to(self.pooled.device)
            else:
                self.hold(lo, hi)
                rows = torch.arange(lo, hi, device=self.pooled.device)
            if by_length and self.uses_tokens and self.offsets is not None:
                base = self.stream.window[0] if self.stream is not None else 0  # held offsets start there
                lengths = self.offsets[rows - base + 1] - self.offsets[rows - base]
                rows = rows[torch.argsort(lengths, stable=True)]
            yield from rows.split(batch_size)

    def index(self) -> dict[str, int]:
        """id -> row (built once)."""
        if self._index is None:
            self._index = {str(i): r for r, i in enumerate(self.ids)}
        return self._index

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """Rows of `ids` (int64); -1 where an id is absent."""
        index = self.index()
        return np.fromiter((index.get(str(i), -1) for i in ids), np.int64, count=len(ids))

    def gather(self, rows: torch.Tensor, cast: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """rows (B,) -> x (B, T, D) float32 (cast=False: tokens in the held dtype) and mask (B, T) bool, or None
        when every token is real."""
        if not self.uses_tokens:
            return self.pooled.index_select(0, rows).unsqueeze(1), None  # (B, 1, D)
        if self.stream is not None:
            lo, hi = self.stream.window
            if len(rows) and (int(rows.min()) < lo or int(rows.max()) >= hi):
                raise StreamError(f"rows outside the block [{lo}, {hi}) held of the streamed tokens of {self.path}: "
                                  "iterate streamed data with PairData.epoch or View.in_order")
            rows = rows - lo
        if self.offsets is None:  # fixed length: (N, L, D)
            x = self.tokens.index_select(0, rows)
            return (x.float() if cast else x), None
        start = self.offsets.index_select(0, rows)  # (B,)
        length = self.offsets.index_select(0, rows + 1) - start
        steps = torch.arange(self.pad_to or int(length.max()), device=rows.device)  # (T_max,)
        mask = steps.unsqueeze(0) < length.unsqueeze(1)  # (B, T_max)
        flat = torch.where(mask, start.unsqueeze(1) + steps, 0)  # pads read row 0; masked everywhere after
        x = self.tokens[flat]
        return (x.float() if cast else x), mask

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


def _load_tokens(split: Any, path: Path, ram_budget: int | None, fingerprint: str = ""
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, TokenStream | None]:
    """The split's tokens whole (one contiguous read) when they fit the budget, else a TokenStream."""
    offsets = split.offsets()
    width = int(getattr(split, "token_dim", None) or split.dim)
    lengths = np.diff(offsets)
    fixed = bool(len(lengths)) and bool((lengths == lengths[0]).all()) and lengths[0] > 0
    need = int(offsets[-1]) * width * TOKEN_BYTES
    budget = int(RAM_FRACTION * _free_ram()) if ram_budget is None else int(ram_budget)
    if need <= budget:
        flat, off = split.token_rows(0, len(split), dtype=np.float16)
        return (*token_tensors(flat, off, width, fixed), None)
    largest_row = int(lengths.max()) * width * TOKEN_BYTES
    window = max(budget // 2, largest_row)  # two streamed stores (image and text tokens) fit the budget together
    return None, None, TokenStream(path, split.name, np.asarray(offsets, np.int64), width, window, fixed,
                                   fingerprint)


def load_view(path: str | Path, split: str, *, tokens: bool | None = False, ram_budget: int | None = None) -> View:
    """Read one split of the store at `path` into RAM. tokens: True (required), False, None (if stored).

    Tokens larger than `ram_budget` bytes (default: RAM_FRACTION of the free RAM) are streamed (`View.stream`)."""
    path = Path(path)
    with open_store(path) as store:
        s = store.split(split)
        use_tokens = s.has_tokens if tokens is None else tokens
        if use_tokens and not s.has_tokens:
            raise BadInputError(f"split {split!r} of {path} has no tokens; re-extract with them: "
                                f"`embedcache extract {store.attrs.get('dataset', path.parent.name)} "
                                f"--model {store.attrs.get('backbone', path.stem)} --tokens --force`, "
                                "or train on pooled vectors (`--pooled`)")
        tok, off, stream = _load_tokens(s, path, ram_budget, store.fingerprint) if use_tokens else (None, None, None)
        return View(path=str(path), split=split, ids=np.asarray(s.ids).astype(str),
                    pooled=torch.from_numpy(s.pooled(np.float32)), tokens=tok, offsets=off, labels=s.labels,
                    links=None if s.links is None else np.asarray(s.links).astype(str), pairs=s.pairs,
                    attrs=dict(store.attrs), fingerprint=store.fingerprint, stream=stream)


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


def gather_two(first: View, second: View) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]:
    """A `gather` over the rows of `first` then those of `second`, without copying either: row r < len(first)
    is first's row r, len(first) + r is second's row r. A batch comes from one view (a training batch or an
    evaluation batch); joining the two splits into one tensor would hold both twice at COCO scale."""
    for v in (first, second):
        if v.stream is not None:
            raise StreamError(f"the tokens of {v.path} are too large for RAM and are streamed; this evaluation "
                              "reads rows in any order and cannot stream them: run it on pooled vectors (a run "
                              "trained `--pooled`) or on a machine with more memory")
    n = len(first)

    def gather(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if int(rows.min()) >= n:
            return second.gather(rows - n)
        if int(rows.max()) < n:
            return first.gather(rows)
        raise ValueError(f"a batch mixes rows of {first.split!r} and {second.split!r}; gather them apart")

    return gather


def _offsets(view: View) -> torch.Tensor:
    if view.offsets is not None:
        return view.offsets
    n, length = view.tokens.shape[:2]  # fixed length (N, L, D)
    return torch.arange(n + 1, device=view.tokens.device) * length


@dataclass
class PairData:
    """Views joined into rows (P, M), optionally with per-row labels; gathers minibatches by row index."""

    views: list[View]
    rows: torch.Tensor  # (P, M) int64
    labels: torch.Tensor | None = None  # (P,) or (P, C)
    dropped: int = 0  # pair candidates without a partner in every store
    batch_device: torch.device | None = None  # stores in host memory, minibatches copied here (fusion.placement)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def batch(self, idx: torch.Tensor) -> Batch:
        """The minibatch of rows idx (B,): one gather per modality (and, with `batch_device`, one pinned
        non-blocking copy of each tensor, tokens in their held dtype, cast to fp32 on the device)."""
        keys = self.rows.index_select(0, idx)  # (B, M)
        labels = None if self.labels is None else self.labels.index_select(0, idx)
        if self.batch_device is None:
            return Batch([view.gather(keys[:, m]) for m, view in enumerate(self.views)], keys, labels)
        inputs = [view.gather(keys[:, m], cast=False) for m, view in enumerate(self.views)]
        inputs = [(_to(x, self.batch_device).float(), None if mask is None else _to(mask, self.batch_device))
                  for x, mask in inputs]
        return Batch(inputs, _to(keys, self.batch_device), None if labels is None else _to(labels, self.batch_device))

    def epoch(self, batch_size: int, gen: torch.Generator | None = None, drop_last: bool = False) -> Epoch:
        """One pass over the rows as minibatch indices, shuffled by `gen` (None: no shuffling).

        Without streamed views: one permutation of all rows, sliced into batches (`drop_last`: without the
        ragged last one). With streamed views: blocks whose token rows fit the streams' windows, in a shuffled
        order, rows shuffled within each block; no row is dropped, each block's remainder becomes its own batch
        (half a batch or more) or joins the block's last batch.
        """
        device = self.rows.device
        streamed = [m for m, v in enumerate(self.views) if v.stream is not None]
        if not streamed:
            order = torch.arange(len(self)) if gen is None else torch.randperm(len(self), generator=gen)
            return Epoch(self, [({}, _slices(order.to(device), batch_size, drop_last))])
        rows = self.rows.cpu().numpy()
        blocks = []
        for members in self._blocks(rows, streamed, gen):
            windows = {m: (int(rows[members, m].min()), int(rows[members, m].max()) + 1) for m in streamed}
            if gen is not None:
                members = members[torch.randperm(len(members), generator=gen).numpy()]
            blocks.append((windows, _block_slices(torch.from_numpy(members).to(device), batch_size)))
        if gen is not None:
            blocks = [blocks[i] for i in torch.randperm(len(blocks), generator=gen).tolist()]
        return Epoch(self, blocks)

    def _blocks(self, rows: np.ndarray, streamed: list[int], gen: torch.Generator | None) -> list[np.ndarray]:
        """Pair indices grouped by the largest stream's blocks of rows, each group split further until the rows
        it needs of every other streamed store fit that store's window."""
        lead = max(streamed, key=lambda m: self.views[m].stream.nbytes())
        stream = self.views[lead].stream
        shift = 0.0 if gen is None else float(torch.rand((), generator=gen)) * stream.window_bytes
        order = np.argsort(rows[:, lead], kind="stable")
        bounds = np.searchsorted(rows[order, lead], stream.cuts(shift))
        groups = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
        others = [m for m in streamed if m != lead]
        expected = len(groups) + sum(-(-self.views[m].stream.nbytes() // self.views[m].stream.window_bytes)
                                     for m in others)
        out: list[np.ndarray] = []
        while groups:
            members = groups.pop(0)
            if len(members) > 1 and any(self._span_bytes(rows, members, m) > self.views[m].stream.window_bytes
                                        for m in others):
                groups[:0] = np.array_split(members, 2)  # its partners' rows are spread wider than a window
            else:
                out.append(members)
            if len(out) + len(groups) > 4 * expected:
                paths = ", ".join(self.views[m].path for m in streamed)
                raise StreamError(f"the stores {paths} are all too large for RAM and their rows are not in "
                                  "matching order, so they cannot be streamed in large contiguous blocks together: "
                                  "train with pooled vectors (`--pooled`) or raise the RAM budget (`--ram-budget`)")
        return out

    def _span_bytes(self, rows: np.ndarray, members: np.ndarray, m: int) -> int:
        return self.views[m].stream.nbytes(int(rows[members, m].min()), int(rows[members, m].max()) + 1)

    def subset(self, idx: torch.Tensor) -> PairData:
        """The same views with only rows idx."""
        labels = None if self.labels is None else self.labels[idx]
        return PairData(self.views, self.rows[idx], labels, batch_device=self.batch_device)

    def to(self, device: torch.device | str) -> PairData:
        for view in self.views:
            view.to(device)
        self.rows = self.rows.to(device)
        self.labels = None if self.labels is None else self.labels.to(device)
        return self


@dataclass
class Epoch:
    """Minibatch row indices of one pass, in blocks; iterating holds each block's token rows of the streamed
    views before yielding its batches. len() is the number of batches."""

    data: PairData
    blocks: list[tuple[dict[int, tuple[int, int]], list[torch.Tensor]]]  # (view -> rows [lo, hi) held, batches)

    def __len__(self) -> int:
        return sum(len(batches) for _, batches in self.blocks)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for windows, batches in self.blocks:
            for m, (lo, hi) in windows.items():
                self.data.views[m].hold(lo, hi)
            yield from batches


def _to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`: pinned, then copied without blocking the host."""
    return x.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else x.to(device)


def _slices(order: torch.Tensor, batch_size: int, drop_last: bool) -> list[torch.Tensor]:
    n = len(order)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [order[i : min(i + batch_size, stop)] for i in range(0, stop, batch_size)]


def _block_slices(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """A streamed block's batches, dropping nothing: full batches, then the remainder on its own when it is at
    least half a batch, else added to the last batch (batch sizes stay within [batch/2, 1.5 batch))."""
    n = len(order)
    cuts = list(range(0, n - n % batch_size + 1, batch_size))
    if n % batch_size >= batch_size / 2 or len(cuts) == 1:
        cuts.append(n)
    else:
        cuts[-1] = n
    return [order[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]
