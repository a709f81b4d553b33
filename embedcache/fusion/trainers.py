"""The one way to train anything in stage two: `fit_run(head, data, cfg, run, options)`.

Alignment heads (`align`, embedcache.fusion.train), classifier heads (`classify`, embedcache.fusion.classify),
late-fusion weightings (`late-fusion`, embedcache.fusion.late_fusion) and the majority floor (`majority`,
embedcache.fusion.majority) each register a `Trainer` in `jobs.TRAINERS` where they are defined; this module
imports them all, so `trainer_for(name)` finds every one whatever was imported first. The CLI and the
pipelines both call `fit_run`: one lookup from a head, method or trainer name to its trainer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The trainer modules register themselves on import; this module is where they are all known.
from embedcache.fusion import classify, late_fusion, majority, train  # noqa: F401
from embedcache.fusion.jobs import TRAINERS, DataSpec, RunOptions, TrainCfg, Trainer, TrainJob, job_from
from embedcache.fusion.runs import Run
from embedcache.registry import UnknownNameError

__all__ = ["DataSpec", "RunOptions", "TrainCfg", "TrainJob", "Trainer", "fit_flat", "fit_job", "fit_run",
           "trainable", "trainer_for"]


def trainable() -> list[tuple[str, Trainer]]:
    """Every (name, trainer) that `fit_run` accepts, trainer by trainer, names sorted within each."""
    return [(name, TRAINERS.get(t)) for t in TRAINERS.names() for name in TRAINERS.get(t).names()]


def trainer_for(name: str) -> Trainer:
    """The registered trainer of a head, late-fusion method or trainer name; unknown names list the known ones."""
    found = next((TRAINERS.get(t) for t in TRAINERS.names() if TRAINERS.get(t).serves(name)), None)
    if found is None:
        known = ", ".join(sorted({n for n, _ in trainable()} | set(TRAINERS.names())))
        raise UnknownNameError(f"unknown head {name!r}; known: {known}")
    return found


def fit_job(job: TrainJob) -> dict[str, Run]:
    """Train (or find) `job` with its trainer: {sub name: Run} ("" for a single run, else one per method)."""
    return trainer_for(job.head).fit(job)


def fit_run(head: str, data: DataSpec = DataSpec(), cfg: TrainCfg = TrainCfg(), run: RunOptions = RunOptions(),
            options: Mapping[str, Any] | None = None) -> dict[str, Run]:
    """Train the head (or late-fusion method, or trainer) `head` on `data` with `cfg` and write its run(s).
    options: the trainer's options (a head's options and `targets`; late fusion: see LateOptions)."""
    return fit_job(TrainJob(head, data, cfg, run, dict(options or {})))


def fit_flat(head: str, settings: Mapping[str, Any]) -> dict[str, Run]:
    """`fit_run` with every setting in one flat mapping (a pipeline's `train` table plus where it runs); each key
    goes to the config that has it (see `jobs.job_from`)."""
    return fit_job(job_from(head, settings))
