"""Stage-one speed: the model alone vs the whole extraction to a store, measured side by side.

For effnet-lite0 on the generated images and minilm on their captions: items/s of the model on
preprocessed tensors already in memory, items/s of `run_plan` (decode in workers, tokenise, encode,
write shards, merge), and their ratio. Prints a table and, as its last line, one JSON object.

    python benchmarks/bench_extract.py [--size 600] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from embedcache.datasets.images import check_text, load_image
from embedcache.extract import ExtractCfg, RunCfg, default_workers, plan_extraction, run_plan


def model_alone(plan, items, batch_size: int) -> float:
    """items/s of encoder.encode on inputs prepared in memory beforehand (same batches as extraction)."""
    enc = plan.encoder
    if enc.spec.modality == "image":
        tf = enc.image_transform()
        batches = [torch.stack([tf(load_image(it.image, it.id)) for it in items[s:s + batch_size]])
                   for s in range(0, len(items), batch_size)]
    else:
        texts = sorted((check_text(it.text, it.id) for it in items), key=len, reverse=True)
        batches = [enc.tokenize(texts[s:s + batch_size]) for s in range(0, len(texts), batch_size)]
    enc.encode(batches[0])  # warm-up (allocator, lazy init)
    start = time.perf_counter()
    for batch in batches:
        enc.encode(batch)
    return len(items) / (time.perf_counter() - start)


def whole_extraction(plan, batch_size: int, workers: int) -> float:
    """items/s of run_plan on the train split into a fresh store (model already loaded)."""
    n = len(plan.splits["train"].items(plan.encoder.spec.modality))
    start = time.perf_counter()
    run_plan(plan, RunCfg(splits=("train",), batch_size=batch_size, workers=workers))
    return n / (time.perf_counter() - start)


def cpu_layouts(plan, batch_size: int, workers: int, reps: int = 2) -> dict[str, float]:
    """The demo's image extraction on CPU (decode workers + model + store), NCHW vs channels_last and 1 vs 2
    torch threads, interleaved in one run (best of `reps`): what the CPU path gained from channels_last."""
    enc, best = plan.encoder, {}
    threads = torch.get_num_threads()
    for _ in range(reps):
        for n_threads in (1, 2):
            for channels_last in (False, True):
                torch.set_num_threads(n_threads)
                enc.channels_last = channels_last
                enc.to("cpu")
                shutil.rmtree(plan.path.parent, ignore_errors=True)  # a fresh store each time
                key = f"{'channels_last' if channels_last else 'nchw'}_{n_threads}t"
                best[key] = max(best.get(key, 0.0), whole_extraction(plan, batch_size, workers))
    torch.set_num_threads(threads)
    enc.channels_last = enc.is_cnn
    enc.to("cpu")
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=600, help="generated images (captions: 3 per image)")
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--layout-size", type=int, default=200, help="images for the NCHW vs channels_last comparison")
    args = ap.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EMBEDCACHE_DATA_DIR"] = tmp  # the generated dataset and the stores both go here
        for model, bs in (("effnet-lite0", 64), ("minilm", 128)):
            plan = plan_extraction(ExtractCfg("shapes", model, data_dir=Path(tmp),
                                              dataset_options={"size": args.size}, device="cpu"))
            items = plan.splits["train"].items(plan.encoder.spec.modality)
            alone = model_alone(plan, items, bs)
            whole = whole_extraction(plan, bs, args.workers)
            key = model.replace("-", "_")
            figures[f"{key}_model_items_per_s"] = round(alone, 1)
            figures[f"{key}_extract_items_per_s"] = round(whole, 1)
            figures[f"{key}_extract_over_model"] = round(whole / alone, 3)
            print(f"{model:14s} {len(items):6d} items  model alone {alone:8.1f}/s  whole extraction "
                  f"{whole:8.1f}/s  ratio {whole / alone:.3f}")
        plan = plan_extraction(ExtractCfg("shapes", "effnet-lite0", data_dir=Path(tmp), store_name="layouts",
                                          dataset_options={"size": args.layout_size}, device="cpu"))
        layouts = cpu_layouts(plan, 64, args.workers)
        for key, rate in layouts.items():
            figures[f"effnet_lite0_cpu_{key}_items_per_s"] = round(rate, 1)
        for threads in ("1t", "2t"):  # the demo pins one torch thread (Makefile)
            figures[f"effnet_lite0_cpu_channels_last_over_nchw_{threads}"] = round(
                layouts[f"channels_last_{threads}"] / layouts[f"nchw_{threads}"], 3)
        print("effnet-lite0 extraction on CPU, items/s: " + "  ".join(f"{k} {v:.1f}" for k, v in layouts.items())
              + f"  (channels_last over NCHW at 1 thread, as in make demo: "
              f"{figures['effnet_lite0_cpu_channels_last_over_nchw_1t']:.2f}x)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
