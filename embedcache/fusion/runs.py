"""One directory per trained run: `run.json` (everything about it) and `head.safetensors` (the weights).

`<results>/runs/<run_id>/run.json` holds the head spec, the training settings, the stores read (path,
backbone, modality, fingerprint, tokens or pooled), the pairing, the seed, the per-epoch history, the
metrics (training summary and every evaluation task run on it later), timings, the device and the package
versions. The run id is `<head>-<fingerprint of the inputs>`: the same head, settings and store
fingerprints give the same id, so a finished run is found again instead of retrained. The JSON is written
last and atomically, so a run directory without it is an unfinished run and is ignored.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from embedcache import __version__
from embedcache.errors import NotFoundError
from embedcache.fingerprint import fingerprint, to_plain
from embedcache.fusion.heads import Head, HeadSpec, create_head
from embedcache.fusion.user_heads import ensure_head, head_file_record
from embedcache.paths import results_dir

RUN_JSON = "run.json"
CHECKPOINT = "head.safetensors"
RUN_SCHEMA = 1


def runs_dir(root: str | Path | None = None) -> Path:
    """Where runs live: `root` if given, else <results>/runs (results: $EMBEDCACHE_RESULTS_DIR or ./results)."""
    return Path(root) if root is not None else results_dir() / "runs"


def make_run_id(head_name: str, key: Any) -> str:
    """`<head>-<12 hex>`: a function of the head name and everything in `key` (spec, settings, fingerprints)."""
    return f"{head_name}-{fingerprint(key, 12)}"


def versions() -> dict[str, str]:
    """Versions that can change the numbers of a run."""
    import numpy

    return {"embedcache": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def write_json(path: Path, record: dict[str, Any]) -> None:
    """`record` as sorted JSON at `path`, atomically (a temporary file renamed over it)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(to_plain(record), indent=1, sort_keys=True))
    os.replace(tmp, path)


@dataclass
class Run:
    """A finished run on disk."""

    dir: Path
    record: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.record["run_id"])

    @property
    def head_spec(self) -> HeadSpec:
        ensure_head(self.record)  # a head from a user's file: import it first (embedcache.fusion.user_heads)
        return HeadSpec.from_plain(self.record["head"])

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record.setdefault("metrics", {})

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """One dict per modality in head-input order: path, dataset, backbone, modality, fingerprint, tokens."""
        return self.record["inputs"]

    def load_head(self, device: torch.device | str = "cpu") -> Head:
        """Rebuild the head from its spec and load the checkpoint (safetensors: no pickle); eval mode."""
        head = create_head(self.head_spec)
        head.load_state_dict(load_file(self.dir / CHECKPOINT, device=str(device)))
        return head.to(device).eval()

    def add_metrics(self, task: str, metrics: dict[str, float], info: dict[str, Any] | None = None) -> None:
        """Record an evaluation's flat metrics (and how it was run) under `task`; rewrites run.json atomically."""
        self.metrics[task] = {k: float(v) for k, v in metrics.items()}
        if info is not None:
            self.record.setdefault("evals", {})[task] = info
        write_json(self.dir / RUN_JSON, self.record)


def save_run(record: dict[str, Any], head: Head, root: str | Path | None = None) -> Run:
    """Write the checkpoint, then run.json (last, atomically) under <root>/<record['run_id']>/."""
    out = runs_dir(root) / record["run_id"]
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    tmp = out / f"{CHECKPOINT}.tmp-{os.getpid()}"
    save_file(state, tmp, metadata={"run_id": record["run_id"], "head": head.spec.name})
    os.replace(tmp, out / CHECKPOINT)
    record = {"schema": RUN_SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions(),
              "checkpoint": CHECKPOINT, **head_file_record(head.spec.name), **record}
    write_json(out / RUN_JSON, record)
    return Run(out, json.loads((out / RUN_JSON).read_text()))


def find_run(run_id: str, root: str | Path | None = None) -> Run | None:
    """The finished run with this id under `root`, or None."""
    path = runs_dir(root) / run_id / RUN_JSON
    return Run(path.parent, json.loads(path.read_text())) if path.exists() else None


def open_run(ref: str | Path, root: str | Path | None = None) -> Run:
    """A run by id (under `root`), by directory or by its run.json path."""
    candidates = [Path(ref), Path(ref) / RUN_JSON, runs_dir(root) / str(ref) / RUN_JSON]
    for path in candidates:
        if path.name == RUN_JSON and path.is_file():
            return Run(path.parent, json.loads(path.read_text()))
    known = ", ".join(r.id for r in list_runs(root)[-10:]) or "(none)"
    raise NotFoundError(f"no run {str(ref)!r} (looked for {candidates[2]}); recent runs under "
                        f"{runs_dir(root)}: {known}. Train one with `embedcache train HEAD`")


def list_runs(root: str | Path | None = None) -> list[Run]:
    """Every finished run under `root`, oldest first."""
    paths = sorted(runs_dir(root).glob(f"*/{RUN_JSON}"), key=lambda p: p.stat().st_mtime)
    return [Run(p.parent, json.loads(p.read_text())) for p in paths]


def write_record(record: dict[str, Any], runs_root: Path) -> Run:
    """Write `<runs_root>/<run_id>/run.json` atomically (runs without a checkpoint: floors, late fusion)."""
    out = Path(runs_root) / record["run_id"]
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RUN_JSON, {"schema": RUN_SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                 "versions": versions(), **record})
    return Run(out, json.loads((out / RUN_JSON).read_text()))
