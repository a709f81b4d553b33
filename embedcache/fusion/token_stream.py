"""Token rows too large for RAM, left in the store and read one block of rows at a time (`TokenStream`).

A `View` (embedcache.fusion.views) whose tokens exceed the RAM budget keeps one of these instead of the token
array, and holds one block of rows at a time, read in ONE contiguous read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from embedcache.errors import UserError
from embedcache.store import StoreError, open_store

TOKEN_BYTES = 2  # tokens are held as fp16


class StreamError(UserError, RuntimeError):
    """Streamed token rows cannot be served the way asked (says why and what to do instead)."""


@dataclass
class TokenStream:
    """Token rows left in the store, read one block of rows [lo, hi) at a time in one contiguous read.

    window_bytes is the size a block aims at; `reads`/`bytes_read` count what was read (for reports)."""

    path: Path
    split: str
    offsets: np.ndarray  # (N+1,) int64 token offsets of the whole split
    width: int
    window_bytes: int
    fixed: bool  # every row has the same number of tokens: blocks are (n, L, D), no mask
    fingerprint: str = ""  # of the store the view was loaded from: each block's read checks it is still that store
    window: tuple[int, int] = (0, 0)
    reads: int = 0
    bytes_read: int = 0

    def max_len(self) -> int:
        """The most tokens of any row of the split."""
        return int(np.diff(self.offsets).max()) if len(self.offsets) > 1 else 0

    def nbytes(self, lo: int = 0, hi: int | None = None) -> int:
        """fp16 bytes of the token rows [lo, hi) (default: the whole split)."""
        hi = len(self.offsets) - 1 if hi is None else hi
        return int(self.offsets[hi] - self.offsets[lo]) * self.width * TOKEN_BYTES

    def cuts(self, shift: float = 0.0) -> np.ndarray:
        """Row boundaries [0, ..., N] cutting the split into blocks of about window_bytes, the first cut
        `shift` bytes in (so the blocks differ from epoch to epoch)."""
        cum = (self.offsets - self.offsets[0]) * self.width * TOKEN_BYTES
        inner = np.searchsorted(cum, np.arange(shift or self.window_bytes, cum[-1], self.window_bytes))
        return np.unique(np.concatenate([[0], inner, [len(self.offsets) - 1]]))

    def read(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token rows [lo, hi) as (tokens, local offsets) in the View layout, read in one contiguous read."""
        with open_store(self.path) as store:
            sp = store.split(self.split)
            if store.fingerprint != self.fingerprint or not np.array_equal(sp.offsets(), self.offsets):
                raise StoreError(f"store {self.path} changed while it was streamed (fingerprint {self.fingerprint} "
                                 f"-> {store.fingerprint}, or other token rows): a run must not mix two stores; "
                                 "rerun once the store is rebuilt")
            flat, off = sp.token_rows(lo, hi, dtype=np.float16)
        self.reads, self.bytes_read = self.reads + 1, self.bytes_read + flat.nbytes
        return token_tensors(flat, off, self.width, self.fixed)

    def describe(self) -> str:
        return (f"{_human(self.nbytes())} of tokens (split {self.split!r} of {self.path}) streamed in blocks of "
                f"~{_human(self.window_bytes)}, one contiguous read each")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError  # unreachable


def token_tensors(flat: np.ndarray, offsets: np.ndarray, width: int, fixed: bool
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flat (T, D) token rows + (n+1,) offsets -> the View layout: (n, L, D) and no offsets when fixed."""
    tokens = torch.from_numpy(np.ascontiguousarray(flat))
    if fixed:
        return tokens.view(len(offsets) - 1, -1, width), None  # e.g. 49 image tokens
    return tokens, torch.from_numpy(offsets.astype(np.int64))
