"""The CBMF authors' Fig. 4 retrieval at Flickr8k scale: 40,455 caption queries over 40,455 gallery rows (8,091
images, 5 rows each), 256-d. `repeated_gallery_ranks` (against the distinct images, weighted) beside
`best_positive_ranks` over the expanded gallery, on the same inputs; prints seconds, peak RSS growth, whether
the ranks agree and, as its last line, one JSON object.

    python benchmarks/bench_retrieval.py [--images 8091] [--dim 256]
"""

from __future__ import annotations

import argparse
import json

import torch
from _measure import measured, rss_peak_mib

from embedcache.evaluate.retrieval import best_positive_ranks, repeated_gallery_ranks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8091)
    ap.add_argument("--dim", type=int, default=256)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.images, args.dim, generator=gen)
    answer = torch.arange(args.images).repeat_interleave(5)
    captions = images[answer] + 2.0 * torch.randn(len(answer), args.dim, generator=gen)
    counts = torch.full((args.images,), 5)
    rss0 = rss_peak_mib()
    ours, weighted = measured(lambda: repeated_gallery_ranks(captions, images, answer, counts))
    # from the same baseline: max(weighted, expanded), which is the expanded's own as it holds the 5x gallery
    expanded, naive = measured(lambda: best_positive_ranks(captions, images[answer], [[q] for q in range(len(answer))]),
                               since=rss0)
    same = bool(torch.equal(ours, expanded))
    print(f"{len(answer):,} queries x {len(answer):,} rows: weighted {weighted['seconds']:.1f} s "
          f"(+{weighted['peak_rss_growth_mib']:.0f} MiB), expanded {naive['seconds']:.1f} s, "
          f"ratio {naive['seconds'] / weighted['seconds']:.1f}x, equal ranks: {same}")
    print(json.dumps({"queries": len(answer), "weighted": weighted, "expanded": naive, "equal": same}))


if __name__ == "__main__":
    main()
