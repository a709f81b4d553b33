"""The rehearsal: every paper pipeline end to end at the papers' real row counts, on stand-ins (`make rehearsal`).

Writes stand-in data in each dataset's published layout (embedcache.datasets.stand_in_data, `--scale` times the
real counts) and random-weight stand-ins of every backbone (embedcache.backbones.stand_ins) under its own
directory (never the user's data/), then runs each paper pipeline through the real code (extract,
mine, train with a cap on minibatches, evaluate, table), one child process per pipeline. Prints per pipeline
the wall time, the peak RSS of the process tree, the disk its new stores take and the `--plan` estimate beside
it (checked within 10%), and ends with one JSON line. Exit status 1 when a pipeline fails or a check misses.

    nice -n 10 python benchmarks/rehearsal.py --scale 0.01
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PIPELINES_DIR = Path(__file__).resolve().parents[1] / "pipelines"
RSS_LIMIT = 8 << 30  # the goal: no pipeline above 8 GiB
SIZE_TOLERANCE = 0.10  # the plan's store size estimate against the bytes on disk ...
SIZE_SLACK = 16 << 10  # ... or this many bytes: a store of a few rows is mostly HDF5's fixed overhead
PROBE_EPOCHS = {"linear-probe": 2, "finetune": 1}  # evaluations that train: epochs in the rehearsal
# Head widths in the rehearsal, as small as the stand-ins' 32-d outputs: rows and tokens stay the papers' (what
# scale bugs depend on); the paper widths (CBMF's 256-d encoder with a 2,048 feed-forward over 197 ViT tokens)
# would spend the CPU hours on dense arithmetic that a GPU does in seconds and that tells nothing about scale.
SMALL_HEAD = {"dim": 32, "ff_dim": 64, "mlp_hidden": 64}


def paper_pipelines() -> list[str]:
    """Every paper pipeline of pipelines/ (the demo twins run on the offline data already)."""
    from embedcache.tables.runner import select_pipelines

    return [Path(p).stem for p in select_pipelines(demo=False, directory=PIPELINES_DIR)]


def rehearsal_spec(name: str) -> Any:
    """The pipeline `name` as the rehearsal runs it: one seed, one epoch per run, short probe/finetune."""
    import dataclasses

    from embedcache.tables.spec import load_pipeline

    spec = load_pipeline(PIPELINES_DIR / f"{name}.toml")
    runs = []
    for run in spec.runs:
        evals = tuple(dataclasses.replace(ev, options={**ev.options, "epochs": PROBE_EPOCHS[ev.task],
                                                       "log_at": [PROBE_EPOCHS[ev.task]]})
                      if ev.task in PROBE_EPOCHS else ev for ev in run.evals)
        train = {**run.train, "epochs": 1} if run.trainer != "majority" else run.train
        runs.append(dataclasses.replace(run, train=train, evals=evals, options={**small_head(run.head), **run.options}))
    return dataclasses.replace(spec, runs=tuple(runs), seeds=(0,))


def small_head(head: str) -> dict[str, int]:
    """The SMALL_HEAD widths that narrow the head `head` (none for trainers without a head; a width whose default is
    0 means "the inputs' own", e.g. CLFA's teacher space, and is left so)."""
    import dataclasses

    from embedcache.fusion.heads import HEADS

    if not head or head not in HEADS:
        return {}
    defaults = {f.name: f.default for f in dataclasses.fields(HEADS.get(head).Cfg)}
    return {k: v for k, v in SMALL_HEAD.items() if isinstance(defaults.get(k), int) and defaults[k] > v}


def backbones_of(names: list[str]) -> list[str]:
    from embedcache.tables.spec import load_pipeline

    return sorted({st.backbone for n in names for st in load_pipeline(PIPELINES_DIR / f"{n}.toml").stores})


def datasets_of(names: list[str]) -> list[str]:
    from embedcache.tables.spec import load_pipeline

    datasets = {st.dataset for n in names for st in load_pipeline(PIPELINES_DIR / f"{n}.toml").stores}
    return sorted(datasets - {"class-prompts"})


def prepare(root: Path, scale: float, names: list[str]) -> dict[str, Path]:
    """Stand-in data under root/data/raw and stand-in weights under root/weights; returns the weights map."""
    from embedcache.backbones.stand_ins import build_stand_ins
    from embedcache.datasets import stand_in_data

    for ds in datasets_of(names):
        t0 = time.perf_counter()
        stand_in_data.generate(ds, root / "data" / "raw" / ds, scale)
        print(f"data {ds}: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    return build_stand_ins(backbones_of(names), root / "weights")


def child(name: str, root: Path, weights: dict[str, Path], steps: int) -> int:
    """One pipeline in this process: plan (estimates written to plan.json), run, and its status as exit code."""
    import logging

    from embedcache.fusion.train import step_cap
    from embedcache.paths import Paths
    from embedcache.tables.plan import format_plan, plan_pipeline
    from embedcache.tables.runner import run_pipeline

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    spec = rehearsal_spec(name)
    data, results = root / "data", root / "results"
    plan = plan_pipeline(spec, data_dir=data, seeds=(0,), results_dir=results, weights=weights)
    print(format_plan(plan), file=sys.stderr, flush=True)
    estimates = {str(s.path): s.est_bytes for s in plan.stores if s.done_bytes is None}
    (root / f"plan-{name}.json").write_text(json.dumps(estimates))
    with step_cap(steps):
        result = run_pipeline(spec, Paths.resolve(data, results), seeds=(0,), weights=weights, stand_ins=True)
    print(result.summary(), file=sys.stderr, flush=True)
    return 0 if result.ok else 1


def tree_memory(ps: Any) -> tuple[int, int]:
    """(RSS, PSS) summed over a process and its descendants. RSS counts pages shared between them (torch's
    libraries in every decode worker) once per process, an upper bound; PSS splits them (Linux smaps_rollup)."""
    import psutil

    rss = pss = 0
    for p in [ps, *ps.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return rss, pss


def watch(cmd: list[str], env: dict[str, str], log: Path) -> tuple[int, float, float, int, int]:
    """Run `cmd`, polling the memory of it and its descendants; returns (exit code, wall seconds, CPU seconds of
    the tree, peak tree RSS, peak tree PSS). CPU seconds are what the figures mean on a shared machine, where
    wall time stretches with the load."""
    import resource

    import psutil

    t0, peak, peak_pss = time.perf_counter(), 0, 0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss, pss = tree_memory(ps)
                peak, peak_pss = max(peak, rss), max(peak_pss, pss)
            except psutil.Error:
                pass
            time.sleep(0.5)  # reading smaps_rollup of the tree costs CPU; a peak lasts longer than this
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.returncode, time.perf_counter() - t0, cpu, peak, peak_pss


def run_one(name: str, root: Path, steps: int) -> dict[str, Any]:
    """One pipeline in a child process, measured; its stores' disk against the plan's estimate."""
    cmd = [sys.executable, __file__, "--child", name, "--dir", str(root), "--steps", str(steps)]
    env = {**os.environ, "EMBEDCACHE_DATA_DIR": str(root / "data"), "PYTHONUNBUFFERED": "1"}
    rc, seconds, cpu, peak, peak_pss = watch(cmd, env, root / f"log-{name}.txt")
    plan_file = root / f"plan-{name}.json"
    estimates = json.loads(plan_file.read_text()) if plan_file.exists() else {}
    actual = {p: Path(p).stat().st_size for p in estimates if Path(p).exists()}
    est, disk = sum(estimates[p] for p in actual), sum(actual.values())
    off = [f"{Path(p).parent.name}/{Path(p).name} plan {estimates[p]:,} vs disk {b:,}" for p, b in actual.items()
           if abs(estimates[p] - b) > max(SIZE_TOLERANCE * b, SIZE_SLACK)]
    return {"pipeline": name, "ok": rc == 0, "seconds": round(seconds, 1), "cpu_s": round(cpu, 1),
            "peak_rss_gib": round(peak / 2**30, 2), "peak_pss_gib": round(peak_pss / 2**30, 2),
            "new_store_bytes": disk, "plan_bytes": est, "plan_misses": off, "log": str(root / f"log-{name}.txt")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="times the papers' real row counts (default 1.0)")
    ap.add_argument("--dir", type=Path, default=None, help="working directory (default: a temp dir per scale)")
    ap.add_argument("--steps", type=int, default=5, help="minibatches per training epoch and validation pass")
    ap.add_argument("--pipelines", nargs="*", default=None, help="default: every paper pipeline (not the demos)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    root = args.dir or Path(tempfile.gettempdir()) / f"embedcache-rehearsal-{args.scale:g}"
    root.mkdir(parents=True, exist_ok=True)
    if args.child:
        weights = json.loads((root / "weights.json").read_text())
        return child(args.child, root, {k: Path(v) for k, v in weights.items()}, args.steps)
    t0 = time.perf_counter()
    args.pipelines = args.pipelines or paper_pipelines()
    weights = prepare(root, args.scale, list(args.pipelines))
    (root / "weights.json").write_text(json.dumps({k: str(v) for k, v in weights.items()}))
    prep = time.perf_counter() - t0
    rows = []
    for name in args.pipelines:
        rows.append(run_one(name, root, args.steps))
        r = rows[-1]
        print(f"{name:20s} {'ok' if r['ok'] else 'FAILED':6s} {r['seconds']:7.1f}s wall {r['cpu_s']:7.1f}s CPU  "
              f"peak RSS {r['peak_rss_gib']:5.2f} GiB (PSS {r['peak_pss_gib']:5.2f})  "
              f"new stores {r['new_store_bytes'] / 2**20:9.1f} MiB  "
              f"plan {r['plan_bytes'] / 2**20:9.1f} MiB"
              + (f"  plan misses: {'; '.join(r['plan_misses'])}" if r["plan_misses"] else ""), flush=True)
        if not r["ok"]:
            print(f"  see {r['log']}", flush=True)
    total = time.perf_counter() - t0
    ok = all(r["ok"] and not r["plan_misses"] and r["peak_rss_gib"] * 2**30 <= RSS_LIMIT for r in rows)
    disk = sum(f.stat().st_size for f in (root / "data" / "stores").rglob("*") if f.is_file())
    print(json.dumps({"rehearsal": "ok" if ok else "failed", "scale": args.scale, "steps": args.steps,
                      "prepare_s": round(prep, 1), "total_s": round(total, 1),
                      "total_cpu_s": round(sum(r["cpu_s"] for r in rows), 1), "store_bytes": disk,
                      "max_peak_rss_gib": max((r["peak_rss_gib"] for r in rows), default=0), "pipelines": rows}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
