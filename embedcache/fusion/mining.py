"""Mined caption pairs: the CBMF text-text training set, cached as a small versioned HDF5 file.

The authors (text_text/coco_dataset.py make_positive_pairs, github b-faye/lightweightCRL) pair only captions
of the SAME image whose all-MiniLM-L6-v2 cosine is >= 0.7, in both directions, and add every caption paired
with itself. `ensure_pairs` does the same from a sentence-embedding store whose rows link to their image
(scope "image", the default): captions are grouped by link and compared within their group only, so mining
is linear in the number of captions (COCO's 414k captions: ~1M comparisons). Cross-image mining exists only
as an explicit, bounded option (scope "topk": each caption's `top_k` nearest captions of the whole split
with cosine >= threshold; quadratic time in blocks, O(n k) output). The file keeps each unordered pair
once (i < j); `MinedPairs.training_pairs` gives both directions plus the self pairs. Files are cached at
`<data-dir>/pairs/<dataset>/<backbone>-<split>-t<threshold>-<scope>.h5`, keyed by the source store's
fingerprint, the threshold and the scope: a file mined from another version of the store is re-mined.
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

from embedcache.errors import BadInputError
from embedcache.fingerprint import canonical_json, fingerprint
from embedcache.paths import data_dir as resolve_data_dir
from embedcache.store import open_store

log = logging.getLogger(__name__)
PAIRS_VERSION = 2  # 2: mined within each image (scope), self pairs at training time
BLOCK_ELEMENTS = 1 << 25  # similarity entries per block (128 MiB fp32): bounds memory for any N
SCOPES = ("image", "topk")
GATHER_ROWS = 1 << 16  # caption pairs compared per slice in per-image mining (2 x 65,536 x 384 fp32 = 192 MiB)


class NoLinksError(BadInputError):
    """Per-image mining needs the caption store to link each caption to its image."""


@dataclass(frozen=True)
class MinedPairs:
    """Unordered pairs (a, b) of item ids of one split whose cosine is >= threshold, with their cosines."""

    a: np.ndarray  # (P,) str
    b: np.ndarray  # (P,) str
    score: np.ndarray  # (P,) float32 cosine
    attrs: dict[str, Any]
    path: Path | None = None
    ids: np.ndarray | None = None  # (N,) str: every caption of the split (for the self pairs)

    def __len__(self) -> int:
        return len(self.a)

    @property
    def fingerprint(self) -> str:
        return str(self.attrs["fingerprint"])

    def symmetric(self) -> tuple[np.ndarray, np.ndarray]:
        """(a ids, b ids) with every pair in both orders: either backbone sees either caption of a pair."""
        return np.concatenate([self.a, self.b]), np.concatenate([self.b, self.a])

    def training_pairs(self, self_pairs: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The authors' training list: every pair in both orders, plus (c, c) for every caption of the split."""
        a, b = self.symmetric()
        if not self_pairs or self.ids is None:
            return a, b
        return np.concatenate([self.ids, a]), np.concatenate([self.ids, b])


def mine_indices(emb: torch.Tensor, threshold: float, *, block: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All i < j with cos(emb_i, emb_j) >= threshold over the WHOLE set: (i, j, cos) as int64, int64, float32.

    Quadratic: a reference for the tests and small sets, not for mining. emb (N, D); computed in row blocks
    against the rows after them, so memory stays ~BLOCK_ELEMENTS.
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


def mine_within_groups(emb: torch.Tensor, groups: np.ndarray, threshold: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All i < j of the SAME group with cos(emb_i, emb_j) >= threshold: (i, j, cos) as in `mine_indices`.

    emb (N, D), groups (N,) any hashable labels (the caption's image id). Rows are stably sorted by group;
    a pair of the same group is then (k, k + d) in sorted order with d < the largest group size G, so the
    work is N * G dot products in G - 1 vectorised passes and memory is O(N): linear in the captions.
    """
    z = torch.nn.functional.normalize(emb.float(), dim=-1)
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(codes, kind="stable")  # (N,) rows grouped; original order kept inside each group
    sorted_codes = codes[order]
    sizes = np.bincount(codes) if len(codes) else np.zeros(0, np.int64)
    found_i, found_j, found_s = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    for d in range(1, int(sizes.max(initial=1))):
        k = np.nonzero(sorted_codes[:-d] == sorted_codes[d:])[0]  # (P_d,) positions whose +d is the same group
        i, j = order[k], order[k + d]  # i < j: the stable sort keeps the original order within a group
        cos = _paired_cosines(z, i, j)
        keep = cos >= threshold
        found_i.append(i[keep])
        found_j.append(j[keep])
        found_s.append(cos[keep].astype(np.float32))
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_s)


def _paired_cosines(z: torch.Tensor, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(P,) float32 dot products of unit rows z[i] and z[j], gathered GATHER_ROWS pairs at a time (bounded memory)."""
    out = [np.zeros(0, np.float32)]
    for a in range(0, len(i), GATHER_ROWS):
        rows_i, rows_j = torch.from_numpy(i[a:a + GATHER_ROWS]), torch.from_numpy(j[a:a + GATHER_ROWS])
        out.append((z[rows_i] * z[rows_j]).sum(-1).cpu().numpy())  # (b, D) x 2 -> (b,)
    return np.concatenate(out)


def mine_top_k(emb: torch.Tensor, threshold: float, top_k: int, *, block: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-image pairs, bounded: each row's `top_k` nearest other rows with cosine >= threshold, as unique
    unordered pairs (i < j, cos). Time quadratic (row blocks against all rows), memory ~BLOCK_ELEMENTS plus the
    O(N top_k) result."""
    if top_k < 1:
        raise BadInputError(f"top_k must be >= 1; found {top_k}")
    z = torch.nn.functional.normalize(emb.float(), dim=-1)
    n = len(z)
    block = block or max(1, min(n, BLOCK_ELEMENTS // max(1, n)))
    k = min(top_k, max(n - 1, 0))
    found_i, found_j, found_s = [], [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = z[start:stop] @ z.T  # (b, N)
        sims[torch.arange(stop - start), torch.arange(start, stop)] = -2.0  # never a row with itself
        val, col = sims.topk(k, dim=1) if k else (sims[:, :0], sims[:, :0].long())
        row = torch.arange(start, stop).unsqueeze(1).expand_as(col)
        hit = val >= threshold
        found_i.append(torch.minimum(row, col)[hit].cpu())
        found_j.append(torch.maximum(row, col)[hit].cpu())
        found_s.append(val[hit].cpu())
    i, j, s = (torch.cat(x).numpy() for x in (found_i, found_j, found_s))
    _, first = np.unique(i.astype(np.int64) * max(n, 1) + j, return_index=True)  # a pair found from both ends
    return i[first], j[first], s[first].astype(np.float32)


def pairs_path(dataset: str, backbone: str, split: str, threshold: float, data_dir: str | Path | None = None,
               scope: str = "image", top_k: int | None = None) -> Path:
    """<data-dir>/pairs/<dataset>/<backbone>-<split>-t<threshold>-<image | topK>.h5."""
    safe = backbone.replace("/", "_").replace(":", "_")
    tag = "image" if scope == "image" else f"top{top_k}"
    return resolve_data_dir(data_dir) / "pairs" / dataset / f"{safe}-{split}-t{threshold:.3f}-{tag}.h5"


def _attrs(store: Any, split: str, threshold: float, scope: str, top_k: int | None) -> dict[str, Any]:
    attrs = {"version": PAIRS_VERSION, "source_path": str(store.path), "source_fingerprint": store.fingerprint,
             "source_backbone": store.attrs.get("backbone", ""), "dataset": store.attrs.get("dataset", ""),
             "split": split, "threshold": float(threshold), "scope": scope,
             "top_k": None if scope == "image" else int(top_k or 0)}
    return {**attrs, "fingerprint": fingerprint({k: v for k, v in attrs.items() if k != "source_path"})}


def load_pairs(path: str | Path) -> MinedPairs:
    """Read a pairs file written by `ensure_pairs`."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        attrs = json.loads(f.attrs["meta"])
        ids = f["ids"].asstr()[()].astype(str) if "ids" in f else None
        return MinedPairs(f["a"].asstr()[()].astype(str), f["b"].asstr()[()].astype(str), f["score"][()],
                          attrs, path, ids)


def _write(path: Path, pairs: MinedPairs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    strs = h5py.string_dtype("utf-8")
    with h5py.File(tmp, "w") as f:
        f.attrs["meta"] = canonical_json(pairs.attrs)
        f.create_dataset("a", data=np.asarray(pairs.a, dtype=object), dtype=strs, track_times=False)
        f.create_dataset("b", data=np.asarray(pairs.b, dtype=object), dtype=strs, track_times=False)
        f.create_dataset("score", data=pairs.score.astype(np.float32), track_times=False)
        if pairs.ids is not None:
            f.create_dataset("ids", data=np.asarray(pairs.ids, dtype=object), dtype=strs, track_times=False)
    os.replace(tmp, path)


def _image_groups(split: Any, store: str | Path, ids: np.ndarray) -> np.ndarray:
    """(N,) the image id of each caption; a caption without a link is its own group (only its self pair)."""
    links = split.links
    if links is None:
        raise NoLinksError(f"{store} has no caption -> image links in split {split.name!r}, so captions cannot be "
                           "paired within their image; mine across images instead with scope='topk' and a top_k "
                           "(embedcache pairs DATASET --scope topk --top-k 5)")
    links = np.asarray(links).astype(str)
    return np.where(links == "", np.char.add("no-image:", ids), links)


def ensure_pairs(store: str | Path, split: str = "train", threshold: float = 0.7, *, scope: str = "image",
                 top_k: int | None = None, data_dir: str | Path | None = None, device: str | None = None,
                 force: bool = False) -> MinedPairs:
    """The pairs of `split` of the sentence-embedding store at `store` with cosine >= threshold, mined on first
    use and cached (re-mined when the store's fingerprint changed, or with force). scope "image" (the authors'):
    captions of the same image only; "topk": each caption's `top_k` nearest captions across the split."""
    if scope not in SCOPES:
        raise BadInputError(f"unknown mining scope {scope!r}; known: {', '.join(SCOPES)}")
    if scope == "topk" and not top_k:
        raise BadInputError("scope 'topk' mines across images and needs a bound: give top_k (--top-k on the command "
                         "line), e.g. 5")
    with open_store(Path(store)) as st:
        attrs = _attrs(st, split, threshold, scope, top_k)
        path = pairs_path(attrs["dataset"] or Path(store).parent.name, attrs["source_backbone"] or Path(store).stem,
                          split, threshold, data_dir, scope, top_k)
        if path.exists() and not force:
            cached = load_pairs(path)
            if cached.fingerprint == attrs["fingerprint"]:
                return cached
            log.warning("re-mining %s: its source store changed (%s)", path, attrs["source_fingerprint"])
        s = st.split(split)
        ids = np.asarray(s.ids).astype(str)
        groups = _image_groups(s, store, ids) if scope == "image" else None
        emb = torch.from_numpy(s.pooled(np.float32)).to(device or "cpu")
    if groups is not None:
        i, j, cos = mine_within_groups(emb, groups, threshold)
    else:
        i, j, cos = mine_top_k(emb, threshold, int(top_k or 0))
    pairs = MinedPairs(ids[i], ids[j], cos, {**attrs, "count": len(i), "captions": len(ids)}, path, ids)
    _write(path, pairs)
    return pairs
