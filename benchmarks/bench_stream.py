"""Stage-two streaming: what training from a token store too large for RAM costs against holding it whole.

Writes two token stores with the offline text-image shapes (`--pairs` images of 49 x 1280 tokens, one caption
each of 8-16 x 384 tokens, fp16, the real store layout through StoreWriter) to a temporary folder, then in the
same run times one cbmf-add epoch (batch 64) with the tokens held whole and with them streamed under a RAM
budget of 1/`--blocks` of the image tokens (so each epoch reads ~2 x `--blocks` blocks). The ratio of their
seconds per trained row is the cost of streaming (held whole, `fit` drops the ragged last batch; streamed
blocks drop nothing). The stores are fresh in the
page cache, so the reads here cost memory bandwidth, not disk: on a cold disk add (store size / disk read
rate) per epoch, which the printed block size lets you judge.

    python benchmarks/bench_stream.py [--pairs 3000] [--blocks 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from embedcache.fusion.heads import HeadSpec, create_head
from embedcache.fusion.pairings import join
from embedcache.fusion.train import TrainCfg, fit
from embedcache.fusion.views import load_view
from embedcache.store import ShardData, StoreWriter

IMAGE_DIM, TEXT_DIM, IMAGE_TOKENS, BATCH, SHARD = 1280, 384, 49, 64, 500


def write_stores(root: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    g = np.random.default_rng(seed)
    z = g.standard_normal((n, 32)).astype(np.float32)
    image, text = root / "image.h5", root / "text.h5"
    a_img, a_txt = g.standard_normal((32, IMAGE_DIM)).astype(np.float32), g.standard_normal((32, TEXT_DIM))
    base = {"dataset": "bench", "dtype": "float16", "tokens": True}
    with StoreWriter(image, {**base, "backbone": "image", "modality": "image"}) as wi, \
            StoreWriter(text, {**base, "backbone": "text", "modality": "text"}) as wt:
        for k, a in enumerate(range(0, n, SHARD)):
            rows = range(a, min(n, a + SHARD))
            img = z[a : rows.stop] @ a_img
            tok = img[:, None] + g.standard_normal((len(rows), IMAGE_TOKENS, IMAGE_DIM), np.float32)
            wi.write_shard("train", k, ShardData(ids=[f"i{r}" for r in rows], pooled=img,
                                                 tokens=tok.reshape(-1, IMAGE_DIM),
                                                 lengths=np.full(len(rows), IMAGE_TOKENS, np.int64)))
            lengths = g.integers(8, 17, len(rows))
            txt = (z[a : rows.stop] @ a_txt).astype(np.float32)
            ttok = np.concatenate([t + g.standard_normal((k_, TEXT_DIM), np.float32) for t, k_ in zip(txt, lengths,
                                                                                                    strict=True)])
            wt.write_shard("train", k, ShardData(ids=[f"c{r}" for r in rows], pooled=txt, tokens=ttok,
                                                 lengths=lengths.astype(np.int64), links=[f"i{r}" for r in rows]))
        shards = len(range(0, n, SHARD))
        wi.finish_split("train", shards)
        wt.finish_split("train", shards)
    return image, text


def epoch_seconds(image: Path, text: Path, budget: int | None, rows: int | None = None
                  ) -> tuple[float, dict[str, float]]:
    data = join([load_view(image, "train", tokens=True, ram_budget=budget),
                 load_view(text, "train", tokens=True, ram_budget=budget)], "links")
    data = data if rows is None else data.subset(torch.arange(rows))
    val = data.subset(torch.arange(BATCH))
    torch.manual_seed(0)
    head = create_head(HeadSpec.create("cbmf-add", (IMAGE_DIM, TEXT_DIM), ("image", "text")))
    cfg = TrainCfg(epochs=1, batch_size=BATCH)
    seconds = fit(head, data, val, cfg).history[0]["seconds"]
    streams = [v.stream for v in data.views if v.stream is not None]
    trained = sum(len(b) for _, batches in data.epoch(BATCH, torch.Generator(), cfg.drop_last).blocks for b in batches)
    info = {"reads": sum(s.reads for s in streams), "bytes_read": sum(s.bytes_read for s in streams),
            "window_bytes": max((s.window_bytes for s in streams), default=0), "rows_trained": trained}
    return seconds, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--blocks", type=int, default=8, help="RAM budget = image tokens / blocks")
    args = ap.parse_args()
    res: dict[str, object] = {"bench": "stream", "pairs": args.pairs, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        image, text = write_stores(Path(tmp), args.pairs)
        res["write_s"] = round(time.perf_counter() - t0, 1)
        image_bytes = args.pairs * IMAGE_TOKENS * IMAGE_DIM * 2
        res["image_token_bytes"], res["budget_bytes"] = image_bytes, image_bytes // args.blocks
        epoch_seconds(image, text, None, rows=2 * BATCH)  # warm-up: page cache, allocator, kernels
        whole_s, whole = epoch_seconds(image, text, None)
        streamed_s, info = epoch_seconds(image, text, image_bytes // args.blocks)
    res.update(info, in_ram_epoch_s=round(whole_s, 2), in_ram_rows_trained=whole["rows_trained"],
               streamed_epoch_s=round(streamed_s, 2))
    res["stream_cost_ratio"] = round((streamed_s / info["rows_trained"]) / (whole_s / whole["rows_trained"]), 3)
    print(f"image tokens {image_bytes / 2**20:.0f} MiB, budget {res['budget_bytes'] / 2**20:.0f} MiB: "
          f"in RAM {res['in_ram_epoch_s']:.1f} s/epoch, streamed {res['streamed_epoch_s']:.1f} s/epoch "
          f"({info['reads']} reads of ~{info['window_bytes'] / 2**20:.0f} MiB, ratio {res['stream_cost_ratio']})",
          flush=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
