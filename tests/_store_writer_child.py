"""Deterministic store contents and a child-process writer for tests/test_store.py (kill -9 and lock tests).

    python tests/_store_writer_child.py fill PATH SLEEP K N   # fill the store (resuming), part K of N
    python tests/_store_writer_child.py hold PATH K N         # take part K of N's lock, print 'locked', wait
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the child runs from any cwd

from embedcache.store import ShardData, StoreWriter  # noqa: E402

DIM = 8
ATTRS = {"backbone": "tiny", "dataset": "synth", "model_id": "random/tiny", "revision": "r1", "pooling": "mean",
         "dtype": "float16", "tokens": True, "preprocessing": {"max_length": 16}, "classes": ["a", "b", "c"],
         "label_kind": "single", "split_sizes": {"train": 40, "val": 8}}
PLAN = {"train": 40, "val": 8}  # split -> number of shards


def make_shard(split: str, index: int, dim: int = DIM, tokens: bool = True) -> ShardData:
    """Shard `index` of `split`: 0..5 rows (so some shards are empty), ragged tokens 0..4 long, labels, links,
    and one skipped item in every third shard. A pure function of (split, index)."""
    rng = np.random.default_rng([sum(map(ord, split)), index])
    n = int(rng.integers(0, 6))
    ids = [f"{split}-{index:03d}-{j}" for j in range(n)]
    lengths = rng.integers(0, 5, size=n).astype(np.int64)
    return ShardData(
        ids=ids,
        pooled=rng.standard_normal((n, dim)).astype(np.float32),
        lengths=lengths if tokens else None,
        tokens=rng.standard_normal((int(lengths.sum()), dim)).astype(np.float32) if tokens else None,
        labels=rng.integers(-1, 3, size=n).astype(np.int64),
        links=[f"img-{index}" if j % 2 else "" for j in range(n)],
        skipped=[(f"{split}-{index:03d}-bad", "corrupt image")] if index % 3 == 0 else [],
    )


def make_pairs(split: str) -> tuple[list[str], list[str], np.ndarray] | None:
    """Graded pairs for the 'val' split only."""
    if split != "val":
        return None
    return ["val-001-0", "val-002-1"], ["val-003-0", "val-004-0"], np.array([4.5, 0.25])


def fill(path: Path, attrs: dict = ATTRS, plan: dict[str, int] = PLAN, part: tuple[int, int] = (0, 1),
         sleep: float = 0.0, force: bool = False) -> dict[str, bool]:
    """What `embedcache extract` does with a store: skip finished splits and shards, write the rest, finish."""
    k, n = part
    finished = {}
    with StoreWriter(path, attrs, part=part, force=force) as writer:
        for split, num_shards in plan.items():
            if writer.has_split(split):
                finished[split] = True
                continue
            done = writer.done_shards(split)
            for index in range(k, num_shards, n):
                if index not in done:
                    writer.write_shard(split, index, make_shard(split, index))
                    time.sleep(sleep)
            finished[split] = writer.finish_split(split, num_shards, pairs=make_pairs(split))
    return finished


def main(argv: list[str]) -> None:
    mode, path = argv[0], Path(argv[1])
    if mode == "fill":
        fill(path, sleep=float(argv[2]), part=(int(argv[3]), int(argv[4])))
        print("filled", flush=True)
    elif mode == "hold":
        with StoreWriter(path, ATTRS, part=(int(argv[2]), int(argv[3]))):
            print("locked", flush=True)
            sys.stdin.readline()  # the parent closes stdin (or kills us) to release the lock
    else:
        raise SystemExit(f"unknown mode {mode!r}; known: fill, hold")


if __name__ == "__main__":
    main(sys.argv[1:])
