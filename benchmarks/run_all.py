"""`make bench`: run every benchmark script and print, as the last line, one JSON object of all figures.

Each script prints its own figures and ends with a JSON line; this runner merges those lines, keyed by
script (`extract.*`, `train.*`, `stream.*`, ...). Scripts run one after the other so they do not compete for the
cores. Where torch sees a CUDA GPU the GPU benchmarks run as well: stage one end to end (`gpu.*`, gpu_extract.py,
~3 minutes on an H200) and stage two at COCO size (`train_gpu.*`, bench_train_gpu.py, ~2-3 minutes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = {"extract": "bench_extract.py", "ray": "bench_ray.py", "train": "bench_train.py", "stream": "bench_stream.py",
           "mining": "bench_mining.py", "retrieval": "bench_retrieval.py"}
GPU_SCRIPTS = {"gpu": "gpu_extract.py", "train_gpu": "bench_train_gpu.py"}  # only where a CUDA GPU is visible


def scripts(cuda: bool) -> dict[str, str]:
    """The benchmark scripts to run, by JSON key prefix: the GPU ones only when `cuda`."""
    return {**SCRIPTS, **(GPU_SCRIPTS if cuda else {})}


def main() -> int:
    import torch

    merged: dict[str, object] = {}
    failed = []
    for key, script in scripts(torch.cuda.is_available()).items():
        print(f"== {script}", flush=True)
        proc = subprocess.run([sys.executable, str(HERE / script)], stdout=subprocess.PIPE, text=True)
        print(proc.stdout, end="", flush=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            failed.append(script)
            continue
        merged.update({f"{key}.{k}": v for k, v in json.loads(lines[-1]).items()})
    if failed:
        merged["failed"] = failed
    print(json.dumps(merged))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
