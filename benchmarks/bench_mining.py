"""Text-text pair mining at COCO scale: per-image mining (the authors' scope) over 414,113 captions of 82,783
images (5 per image, a few with 6-7), 384-d as all-MiniLM-L6-v2, against the cross-image top-k option on a slice.

Prints seconds, peak RSS growth and pairs for each, and, as its last line, one JSON object.

    python benchmarks/bench_mining.py [--captions 414113] [--topk-rows 20000]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from _measure import measured

from embedcache.fusion.mining import mine_top_k, mine_within_groups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--captions", type=int, default=414_113)
    ap.add_argument("--topk-rows", type=int, default=20_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    images = args.captions // 5
    groups = np.concatenate([np.repeat(np.arange(images), 5), rng.integers(0, images, args.captions - 5 * images)])
    rng.shuffle(groups)
    base = torch.randn(images, 384)
    emb = base[torch.from_numpy(groups)] + 0.5 * torch.randn(args.captions, 384)  # captions near their image
    (i, _, _), per_image = measured(lambda: mine_within_groups(emb, groups, 0.7))
    per_image = {"captions": args.captions, **per_image, "pairs": len(i)}
    (k, _, _), topk = measured(lambda: mine_top_k(emb[: args.topk_rows], 0.7, 5))
    topk = {"captions": args.topk_rows, "seconds": topk["seconds"], "pairs": len(k)}  # its RSS: above the first peak
    print(f"per image : {per_image['captions']:,} captions in {per_image['seconds']:.2f} s, {len(i):,} pairs, "
          f"peak RSS +{per_image['peak_rss_growth_mib']:.0f} MiB")
    print(f"top-5     : {topk['captions']:,} captions in {topk['seconds']:.2f} s, {len(k):,} pairs (quadratic time)")
    print(json.dumps({"per_image": per_image, "top5": topk}))


if __name__ == "__main__":
    main()
