"""`make bench`: run every benchmark script and print, as the last line, one JSON object of all figures.

Each script prints its own figures and ends with a JSON line; this runner merges those lines, keyed by
script (`extract.*`, `train.*`, `stream.*`; `gpu.*` from gpu_extract.py only where CUDA is present). Scripts run one
after the other so they do not compete for the cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = {"extract": "bench_extract.py", "ray": "bench_ray.py", "train": "bench_train.py", "stream": "bench_stream.py",
           "mining": "bench_mining.py", "retrieval": "bench_retrieval.py"}


GPU_SCRIPTS = {"gpu": "gpu_extract.py"}  # only where CUDA is present (issue 13's figures; ~3 minutes on an H200)


def scripts() -> dict[str, str]:
    """The scripts to run here: the CPU ones, and the GPU ones when torch sees a CUDA device."""
    import torch

    return {**SCRIPTS, **(GPU_SCRIPTS if torch.cuda.is_available() else {})}


def main() -> int:
    merged: dict[str, object] = {}
    failed = []
    for key, script in scripts().items():
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
