"""Stage one through Ray with one worker against the in-process engine, on the same data, in one run.

For effnet-lite0 on the generated images and minilm on their captions: items/s of `run_plan` in this process
and through a one-worker ShardPool (the worker gets this machine's cores, the same torch threads and decode
workers), each the best of `--repeats` alternating runs into fresh stores, and their ratio (goal >= 0.85).
Ray's start-up (joining a local cluster; a worker importing and loading the encoder) is timed on its own and
kept out of the ratio. Prints a table and, as its last line, one JSON object.

    python benchmarks/bench_ray.py [--size 300] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # this script's own process: no usage report from Ray

from embedcache.extract import ExtractCfg, RunCfg, default_workers, plan_extraction, run_plan  # noqa: E402


def items_per_s(plan, run: RunCfg, encode=None) -> float:
    """items/s of run_plan on the train split into the plan's (fresh) store."""
    n = len(plan.splits["train"].items(plan.encoder.spec.modality))
    start = time.perf_counter()
    run_plan(plan, run, encode=encode)
    return n / (time.perf_counter() - start)


def fresh(plan, tmp: Path, tag: str):
    """The same plan writing into a store of its own (a store already complete would make the run a no-op)."""
    return replace(plan, path=tmp / tag / plan.path.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=300, help="generated images (captions: 3 per image)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    try:
        import ray
    except ImportError:
        print(json.dumps({"ray_installed": False}))
        return
    from embedcache.extract.ray_engine import ClusterCfg, ShardPool, portable

    cores = os.cpu_count() or 1
    start = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    figures: dict[str, float] = {"ray_init_s": round(time.perf_counter() - start, 2)}
    cluster = ClusterCfg(max_workers=1, cpus_per_worker=cores)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EMBEDCACHE_DATA_DIR"] = tmp  # this script's own process: the generated dataset goes here
        for model, bs in (("effnet-lite0", 64), ("minilm", 128)):
            cfg = portable(ExtractCfg("shapes", model, data_dir=tmp, dataset_options={"size": args.size}), cluster)
            plan = plan_extraction(cfg)
            run = RunCfg(splits=("train",), batch_size=bs, workers=default_workers())
            start = time.perf_counter()
            pool = ShardPool(cfg, run, cluster, plan)
            startup = time.perf_counter() - start
            local, remote = [], []
            with pool:
                for i in range(args.repeats):
                    local.append(items_per_s(fresh(plan, Path(tmp), f"local{i}"), run))
                    remote.append(items_per_s(fresh(plan, Path(tmp), f"ray{i}"), run, encode=pool))
            key = model.replace("-", "_")
            figures[f"{key}_inprocess_items_per_s"] = round(max(local), 1)
            figures[f"{key}_ray1_items_per_s"] = round(max(remote), 1)
            figures[f"{key}_ray1_over_inprocess"] = round(max(remote) / max(local), 3)
            figures[f"{key}_ray_worker_startup_s"] = round(startup, 2)
            print(f"{model:14s} in process {max(local):8.1f}/s  ray, 1 worker {max(remote):8.1f}/s  ratio "
                  f"{max(remote) / max(local):.3f}  (worker start-up {startup:.1f}s, not counted)")
    ray.shutdown()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
