"""Experiment tracking as the field does it: `embedcache train ... --log tensorboard`.

A logger takes a finished run and writes its per-epoch history (train/val loss, learning rate, items/s and the
head's own `log_values`, e.g. the logit scale; classifier phases as their own prefix) and its final metrics
(the training summary, the validation headline, every evaluation recorded so far) where the tracking tool
reads them. Loggers are registered in `LOGGERS`; tensorboard is an optional extra
(`pip install 'embedcache[tensorboard]'`), and asking for it without it installed fails with that command.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from embedcache.errors import UserError
from embedcache.fusion.runs import Run
from embedcache.registry import Registry

LOGGERS: Registry[Callable[[Run, Path], Path]] = Registry("experiment logger")
NOT_SCALARS = ("epoch", "phase")


def epoch_scalars(run: Run) -> list[tuple[int, str, float]]:
    """(step, tag, value) for every number in the run's per-epoch history; phases of multi-phase classifiers
    are numbered on after each other and tagged `<phase>/<key>`."""
    out = []
    for step, row in enumerate(run.record.get("history", []), start=1):
        phase = row.get("phase")
        prefix = f"{phase}/" if phase else "epoch/"
        out += [(step, prefix + k, float(v)) for k, v in row.items()
                if k not in NOT_SCALARS and isinstance(v, (int, float))]
    return out


def final_scalars(run: Run) -> dict[str, float]:
    """Every final metric of the run as `<group>/<key>` (training summary, val headline, evaluations)."""
    return {f"{group}/{k}": float(v) for group, metrics in run.metrics.items() if isinstance(metrics, dict)
            for k, v in metrics.items() if isinstance(v, (int, float))}


@LOGGERS.register("tensorboard")
def tensorboard(run: Run, log_dir: Path) -> Path:
    """Write the run's scalars as TensorBoard events under `log_dir/<run id>` (`tensorboard --logdir DIR`)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--log tensorboard needs the tensorboard package",
                        fix="pip install 'embedcache[tensorboard]'") from None
    out = Path(log_dir) / run.id
    writer = SummaryWriter(str(out))
    try:
        history = epoch_scalars(run)
        for step, tag, value in history:
            writer.add_scalar(tag, value, step)
        steps = max((s for s, _, _ in history), default=0)
        for tag, value in final_scalars(run).items():
            writer.add_scalar(f"final/{tag}", value, steps)
        writer.add_text("run", f"{run.id}: head {run.record.get('head', {}).get('name', '?')}, "
                               f"seed {run.record.get('seed', '?')}, {run.dir}")
    finally:
        writer.close()
    return out


def log_run(run: Run, logger: str, log_dir: str | Path) -> Path:
    """Send a finished run to the registered `logger`; returns where it wrote."""
    return LOGGERS.get(logger)(run, Path(log_dir))
