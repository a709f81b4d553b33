"""Small real stores for the stage-two tests, written with StoreWriter in the exact store layout.

`make_toy_stores` writes a toy dataset with learnable structure and no backbone:
- images: class c of C; latent z = centre_c + noise; the image store holds A_img z (+ small noise).
- captions: 3 per image; semantic s = z + noise; two text stores ("text-a", "text-b") hold
  A_a [s; nuisance_a] and A_b [s; nuisance_b]. The nuisance is large and differs per store, so the raw
  cosine of a text store is a poor judge of meaning while what the two stores share is exactly s.
- graded caption pairs per split: score 5 * max(cos(s_a, s_b), 0) rounded to 0.1.
- class prompts: a store of C items (one per class, label = class) holding A_a [centre_c; 0].
Everything follows from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedcache.paths import store_path
from embedcache.store import ShardData, StoreWriter

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "heart", "moon")


@dataclass
class SplitArrays:
    ids: list[str]
    pooled: np.ndarray
    tokens: list[np.ndarray] | None = None
    labels: np.ndarray | None = None
    links: list[str] | None = None
    pairs: tuple[list[str], list[str], np.ndarray] | None = None


@dataclass
class ToyStores:
    data_dir: Path
    dataset: str
    paths: dict[str, Path] = field(default_factory=dict)  # backbone -> store path
    semantics: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (N_text, L) caption semantics


def write_store(path: Path, attrs: dict, splits: dict[str, SplitArrays], shard: int = 100) -> Path:
    """Write `splits` through StoreWriter in shards of `shard` rows (so merging is exercised too)."""
    with StoreWriter(path, attrs) as writer:
        for name, s in splits.items():
            starts = list(range(0, max(1, len(s.ids)), shard))
            for k, a in enumerate(starts):
                b = min(len(s.ids), a + shard)
                data = ShardData(ids=s.ids[a:b], pooled=s.pooled[a:b],
                                 labels=None if s.labels is None else s.labels[a:b],
                                 links=None if s.links is None else s.links[a:b])
                if s.tokens is not None:
                    rows = s.tokens[a:b]
                    data.lengths = np.array([len(t) for t in rows], np.int64)
                    data.tokens = np.concatenate(rows) if rows else np.zeros((0, s.pooled.shape[1]), np.float32)
                writer.write_shard(name, k, data)
            writer.finish_split(name, len(starts), pairs=s.pairs)
    return path


def _attrs(dataset: str, backbone: str, modality: str, tokens: bool) -> dict:
    return {"backbone": backbone, "modality": modality, "dataset": dataset, "classes": list(CLASSES),
            "label_kind": "single", "tokens": tokens, "dtype": "float16", "model_id": f"toy/{backbone}"}


def _tokens(pooled: np.ndarray, rng: np.random.Generator, lengths: np.ndarray) -> list[np.ndarray]:
    rows = zip(pooled, lengths, strict=True)
    return [(v + 0.3 * rng.standard_normal((n, len(v)))).astype(np.float32) for v, n in rows]


def make_toy_stores(data_dir: Path, *, sizes: dict[str, int] | None = None, captions: int = 3,
                    image_dim: int = 48, text_dims: tuple[int, int] = (32, 40), latent: int = 16,
                    nuisance: float = 2.0, tokens: bool = False, pairs_per_split: int = 300, seed: int = 0,
                    dataset: str = "toy") -> ToyStores:
    """Write image, text-a, text-b and prompt stores for `dataset` under data_dir/stores; see module doc."""
    rng = np.random.default_rng(seed)
    sizes = sizes or {"train": 240, "val": 60, "test": 60}
    centres = rng.standard_normal((len(CLASSES), latent)) * 1.5
    a_img = rng.standard_normal((latent, image_dim)) / np.sqrt(latent)
    a_txt = [rng.standard_normal((2 * latent, d)) / np.sqrt(latent) for d in text_dims]
    out = ToyStores(Path(data_dir), dataset)
    splits: dict[str, dict[str, SplitArrays]] = {"image": {}, "text-a": {}, "text-b": {}}
    for split, n in sizes.items():
        labels = rng.integers(0, len(CLASSES), n)
        z = centres[labels] + 0.8 * rng.standard_normal((n, latent))
        img_ids = [f"{split}-img{i:05d}" for i in range(n)]
        img = (z @ a_img + 0.05 * rng.standard_normal((n, image_dim))).astype(np.float32)
        parent = np.repeat(np.arange(n), captions)
        sem = z[parent] + 0.3 * rng.standard_normal((len(parent), latent))
        cap_ids = [f"{split}-cap{i:06d}" for i in range(len(parent))]
        links = [img_ids[p] for p in parent]
        pairs = _graded_pairs(sem, cap_ids, parent, rng, pairs_per_split)
        out.semantics[split] = sem
        img_tokens = _tokens(img, rng, np.full(n, 4)) if tokens else None
        splits["image"][split] = SplitArrays(img_ids, img, img_tokens, labels)
        for k, (name, a) in enumerate(zip(("text-a", "text-b"), a_txt, strict=True)):
            noise = nuisance * rng.standard_normal((len(parent), latent))
            txt = (np.concatenate([sem, noise], axis=1) @ a).astype(np.float32)
            txt_tokens = _tokens(txt, rng, rng.integers(2, 7, len(parent))) if tokens else None
            splits[name][split] = SplitArrays(cap_ids, txt, txt_tokens, labels[parent], links,
                                              pairs if k == 0 else None)
    for backbone, modality in (("image", "image"), ("text-a", "text"), ("text-b", "text")):
        path = store_path(dataset, backbone, data_dir)
        out.paths[backbone] = write_store(path, _attrs(dataset, backbone, modality, tokens), splits[backbone])
    prompt = (np.concatenate([centres, np.zeros_like(centres)], axis=1) @ a_txt[0]).astype(np.float32)
    path = store_path(f"{dataset}-prompts", "text-a", data_dir)
    prompt_tokens = _tokens(prompt, rng, np.full(len(prompt), 3)) if tokens else None
    out.paths["prompts"] = write_store(path, _attrs(f"{dataset}-prompts", "text-a", "text", tokens), {
        "prompts": SplitArrays([f"prompt-{c}" for c in CLASSES], prompt, prompt_tokens, np.arange(len(CLASSES)))})
    return out


def _graded_pairs(sem: np.ndarray, ids: list[str], parent: np.ndarray, rng: np.random.Generator, n: int
                  ) -> tuple[list[str], list[str], np.ndarray]:
    """n caption pairs, a third from the same image (high scores), the rest random; gold 5 * max(cos, 0)."""
    a = rng.integers(0, len(ids), n)
    same = rng.random(n) < 0.33
    siblings = np.array([rng.choice(np.flatnonzero(parent == parent[i])) for i in a])
    b = np.where(same, siblings, rng.integers(0, len(ids), n))
    unit = sem / np.linalg.norm(sem, axis=1, keepdims=True)
    score = np.round(5 * np.clip((unit[a] * unit[b]).sum(1), 0, 1), 1)
    return [ids[i] for i in a], [ids[i] for i in b], score.astype(np.float64)


def fit_one(head: str, **settings):
    """One run of `head` through the one trainer path (`fit_flat`: each setting goes to DataSpec, TrainCfg,
    RunOptions or the head's options by name): the tests' shorthand for a single-run trainer."""
    from embedcache.fusion.trainers import fit_flat

    return fit_flat(head, settings)[""]
