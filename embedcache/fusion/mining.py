"""Mined caption pairs: the CBMF text-text training set, cached as a small versioned HDF5 file.

The paper aligns two text backbones on pairs of COCO captions whose sentence-embedding cosine is >= 0.7
(the authors used all-MiniLM-L6-v2). `ensure_pairs` mines them once from a sentence-embedding store
(blocked cosine over the pooled vectors, i < j) and caches them at
`<data-dir>/pairs/<dataset>/<backbone>-<split>-t<threshold>.h5`, keyed by the source store's fingerprint
and the threshold: a file mined from another version of the store is re-mined, never reused.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from embedcache.fingerprint import canonical_json, fingerprint
from embedcache.paths import data_dir as resolve_data_dir
from embedcache.store import open_store

log = logging.getLogger(__name__)
PAIRS_VERSION = 1
BLOCK_ELEMENTS = 1 << 25  # similarity entries per block (128 MiB fp32): bounds memory for any N


@dataclass(frozen=True)
class MinedPairs:
    """Pairs of item ids of one split whose cosine is >= threshold, with their cosines."""

    a: np.ndarray  # (P,) str
    b: np.ndarray  # (P,) str
    score: np.ndarray  # (P,) float32 cosine
    attrs: dict[str, Any]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.a)

    @property
    def fingerprint(self) -> str:
        return str(self.attrs["fingerprint"])

    def symmetric(self) -> tuple[np.ndarray, np.ndarray]:
        """(a ids, b ids) with every pair in both orders: either backbone sees either caption of a pair."""
        return np.concatenate([self.a, self.b]), np.concatenate([self.b, self.a])


def mine_indices(emb: torch.Tensor, threshold: float, *, block: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All i < j with cos(emb_i, emb_j) >= threshold: (i, j, cos) as int64, int64, float32 arrays.

    emb (N, D); computed in row blocks against the rows after them, so memory stays ~BLOCK_ELEMENTS.
    """
    z = torch.nn.functional.normalize(emb.float(), dim=-1)
    n = len(z)
    block = block or max(1, min(n, BLOCK_ELEMENTS // max(1, n)))
    found_i, found_j, found_s = [], [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = z[start:stop] @ z[start:].T  # (b, n - start): row r is item start + r
        rows = torch.arange(stop - start, device=z.device).unsqueeze(1)
        cols = torch.arange(n - start, device=z.device).unsqueeze(0)
        hit = (sims >= threshold) & (cols > rows)  # strictly upper triangle: i < j, no self pairs
        r, c = hit.nonzero(as_tuple=True)
        found_i.append((r + start).cpu())
        found_j.append((c + start).cpu())
        found_s.append(sims[r, c].cpu())
    cat = torch.cat
    return cat(found_i).numpy(), cat(found_j).numpy(), cat(found_s).numpy().astype(np.float32)


def pairs_path(dataset: str, backbone: str, split: str, threshold: float, data_dir: str | Path | None = None) -> Path:
    """<data-dir>/pairs/<dataset>/<backbone>-<split>-t<threshold>.h5."""
    safe = backbone.replace("/", "_").replace(":", "_")
    return resolve_data_dir(data_dir) / "pairs" / dataset / f"{safe}-{split}-t{threshold:.3f}.h5"


def _attrs(store: Any, split: str, threshold: float) -> dict[str, Any]:
    attrs = {"version": PAIRS_VERSION, "source_path": str(store.path), "source_fingerprint": store.fingerprint,
             "source_backbone": store.attrs.get("backbone", ""), "dataset": store.attrs.get("dataset", ""),
             "split": split, "threshold": float(threshold)}
    return {**attrs, "fingerprint": fingerprint({k: v for k, v in attrs.items() if k != "source_path"})}


def load_pairs(path: str | Path) -> MinedPairs:
    """Read a pairs file written by `ensure_pairs`."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        attrs = json.loads(f.attrs["meta"])
        return MinedPairs(f["a"].asstr()[()].astype(str), f["b"].asstr()[()].astype(str), f["score"][()],
                          attrs, path)


def _write(path: Path, pairs: MinedPairs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    strs = h5py.string_dtype("utf-8")
    with h5py.File(tmp, "w") as f:
        f.attrs["meta"] = canonical_json(pairs.attrs)
        f.create_dataset("a", data=np.asarray(pairs.a, dtype=object), dtype=strs, track_times=False)
        f.create_dataset("b", data=np.asarray(pairs.b, dtype=object), dtype=strs, track_times=False)
        f.create_dataset("score", data=pairs.score.astype(np.float32), track_times=False)
    os.replace(tmp, path)


def ensure_pairs(store: str | Path, split: str = "train", threshold: float = 0.7, *,
                 data_dir: str | Path | None = None, device: str | None = None, force: bool = False) -> MinedPairs:
    """The pairs of `split` of the sentence-embedding store at `store` with cosine >= threshold, mined on first
    use and cached (re-mined when the store's fingerprint changed, or with force)."""
    with open_store(Path(store)) as st:
        attrs = _attrs(st, split, threshold)
        path = pairs_path(attrs["dataset"] or Path(store).parent.name, attrs["source_backbone"] or Path(store).stem,
                          split, threshold, data_dir)
        if path.exists() and not force:
            cached = load_pairs(path)
            if cached.fingerprint == attrs["fingerprint"]:
                return cached
            log.warning("re-mining %s: its source store changed (%s)", path, attrs["source_fingerprint"])
        s = st.split(split)
        ids = np.asarray(s.ids).astype(str)
        emb = torch.from_numpy(s.pooled(np.float32)).to(device or "cpu")
    i, j, cos = mine_indices(emb, threshold)
    pairs = MinedPairs(ids[i], ids[j], cos, {**attrs, "count": len(i)}, path)
    _write(path, pairs)
    return pairs
