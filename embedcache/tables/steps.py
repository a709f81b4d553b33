"""The steps a pipeline runs: what is missing, stage-one stores, the trainers, the evaluations.

Kept apart from the specs (embedcache.tables.spec) and the runner (embedcache.tables.runner) so each stays
short. Every step is keyed by its inputs: stores through stage one's own fingerprint check, runs through
their run ids (store fingerprints + head config + training settings + seed), evaluations through a
fingerprint of the task, its options and the evaluated stores recorded in the run's JSON, so a re-run
redoes only what changed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedcache.datasets import DATASETS
from embedcache.errors import UserError
from embedcache.fingerprint import fingerprint
from embedcache.paths import Paths, store_path

if TYPE_CHECKING:
    from embedcache.fusion.runs import Run
    from embedcache.tables.spec import EvalSpec, PipelineSpec, RunSpec, StoreSpec

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- running: what is missing


@dataclass
class Missing:
    """Why a pipeline cannot run: what is missing, the full message, and the command that gets it."""

    what: str
    fix: str = ""
    detail: str = ""

    @classmethod
    def from_error(cls, exc: UserError) -> Missing:
        """The missing thing a UserError names: its message's first line, its `fix`, its full message."""
        text = str(exc)
        return cls(text.split(" Looked in")[0].split("\n")[0].strip(), exc.fix, text)


def missing_errors() -> tuple[type[UserError], ...]:
    """The UserErrors that mean "something is missing here" (data, weights, stores, a stale or damaged store): a
    pipeline records them as NOT RUN with their `fix`; any other error fails the pipeline."""
    from embedcache.backbones.common import WeightsNotFoundError
    from embedcache.backbones.offline import OfflineWeightsError
    from embedcache.datasets import DatasetNotFoundError
    from embedcache.fusion.train import StoresMissingError
    from embedcache.store import DamagedStoreError, StaleStoreError

    return (DatasetNotFoundError, WeightsNotFoundError, OfflineWeightsError, StoresMissingError, StaleStoreError,
            DamagedStoreError)


def unregistered(spec: PipelineSpec) -> list[Missing]:
    """Heads, tasks, late-fusion methods, datasets and backbones the spec names that are not registered."""
    from embedcache.backbones import resolve_spec
    from embedcache.fusion.heads import HEADS
    from embedcache.fusion.late_fusion import LATE_FUSIONS as methods
    from embedcache.fusion.tasks import TASKS
    from embedcache.fusion.trainers import TRAINERS

    found: list[Missing] = []

    def need(kind: str, name: str, ok: Callable[[str], bool], known: Callable[[], list[str]], where: str) -> None:
        if not ok(name):
            found.append(Missing(f"{kind} {name!r} is not registered", f"register it in {where}",
                                 f"known {kind}s: {', '.join(known())}"))

    for run in spec.runs:
        if run.trainer:
            need("pipeline trainer", run.trainer, TRAINERS.__contains__, TRAINERS.names, "embedcache/fusion/")
        for head in list(run.train.get("heads") or []) + ([run.head] if run.head else []):
            need("head", head, HEADS.__contains__, HEADS.names, "embedcache/heads/")
        for method in run.train.get("methods") or []:
            need("late-fusion method", method, methods.__contains__, methods.names, "embedcache/fusion/late_fusion.py")
        for ev in run.evals:
            need("evaluation task", ev.task, TASKS.__contains__, TASKS.names, "embedcache/fusion/tasks.py")
    for st in spec.stores:
        need("dataset", st.dataset, DATASETS.__contains__, DATASETS.names, "embedcache/datasets/")
        need("backbone", st.backbone, lambda n: _resolves(resolve_spec, n), lambda: ["see `embedcache models`"],
             "embedcache/backbones/specs.py")
    return unique(found)


def _resolves(resolve: Callable[[str], Any], name: str) -> bool:
    try:
        resolve(name)
        return True
    except KeyError:
        return False


def unique(items: list[Missing]) -> list[Missing]:
    """The first of each distinct `what`, in order."""
    seen, out = set(), []
    for m in items:
        if m.what not in seen:
            seen.add(m.what)
            out.append(m)
    return out


# ---------------------------------------------------------------- stage one

_VERIFIED: set[tuple[str, str]] = set()  # (store path, spec fingerprint) checked fresh in this process


def ensure_store(st: StoreSpec, data_dir: str | Path | None, *, weights: Mapping[str, Path] | None = None,
                 stand_ins: bool = False) -> tuple[Missing | None, str | None]:
    """Extract the store if missing or incomplete (extract's own no-op skips a fresh one). Returns what is
    missing (data or weights), or a note when an existing store is used without being re-verified.
    `weights` maps backbone names to local weight folders; a store of random-weight stand-ins
    (backbones/stand_ins.py) is refused unless `stand_ins` (the rehearsal)."""
    from embedcache.extract import ExtractCfg, extract

    path = store_path(st.store, st.backbone, data_dir)
    key = (str(path.resolve()), fingerprint(st))
    if key in _VERIFIED and path.exists():
        return None, None
    t0 = time.perf_counter()
    try:
        extract(ExtractCfg(st.dataset, st.backbone, tokens=st.tokens, root=st.root or None, data_dir=data_dir,
                           dataset_options=dict(st.options), store_name=st.name or None, limit=st.limit,
                           weights=(weights or {}).get(st.backbone)))
    except missing_errors() as exc:
        from embedcache.store import StaleStoreError

        missing = Missing.from_error(exc)
        if isinstance(exc, StaleStoreError):
            return dataclasses.replace(missing, fix=extract_command(st, data_dir, force=True)), None
        if path.exists():  # e.g. a store copied from elsewhere, weights not installed here: usable, unverified
            return refuse_stand_in(st, path, data_dir, stand_ins) or (
                None, f"{path}: used as found, its freshness not verified ({missing.what})")
        return missing, None
    if (refused := refuse_stand_in(st, path, data_dir, stand_ins)) is not None:
        return refused
    if not stand_ins:  # a store checked under the rehearsal's leave is checked again outside it
        _VERIFIED.add(key)
    log.info("store %s ready (%.1fs)", path, time.perf_counter() - t0)
    return None, None


def refuse_stand_in(st: StoreSpec, path: Path, data_dir: str | Path | None, allowed: bool
                    ) -> tuple[Missing, None] | None:
    """A Missing when the store at `path` holds random-weight embeddings that are not allowed: the rehearsal's
    stand-ins unless `allowed` (the rehearsal), and `--weights random` stores (speed work only) always."""
    from embedcache.store import not_results, open_store

    with open_store(path) as store:
        attrs = store.attrs
    reason = not_results(attrs)
    if not reason or (allowed and attrs.get("weights") != "random"):
        return None
    return Missing(f"{path} holds {reason}, not results", extract_command(st, data_dir, force=True)), None


def extract_command(st: StoreSpec, data_dir: str | Path | None = None, force: bool = False) -> str:
    """The `embedcache extract` command line that makes the store of `st`."""
    parts = ["embedcache extract", st.dataset, "--model", st.backbone]
    parts += ["--name", st.name] if st.name else []
    parts += ["--tokens"] if st.tokens else []
    parts += [f"-o {k}={json.dumps(v, separators=(',', ':'))}" for k, v in st.options.items()]
    parts += ["--root", st.root] if st.root else []
    parts += ["--limit", str(st.limit)] if st.limit else []
    parts += ["--data-dir", str(data_dir)] if data_dir else []
    return " ".join(parts + (["--force"] if force else []))


# ---------------------------------------------------------------- trainers


@dataclass
class StepContext:
    """Where a pipeline's steps read and write, and the runs finished so far ((run id, seed) -> runs)."""

    paths: Paths
    device: str | None = None
    progress: bool = False
    done: dict[tuple[str, int], dict[str, Run]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.paths.data_dir

    @property
    def runs_root(self) -> Path:
        return self.paths.runs_dir


def run_settings(run: RunSpec, seed: int, ctx: StepContext) -> dict[str, Any]:
    """The flat settings of one run spec at one seed: its `train` table, stores, head options and where it runs
    (embedcache.fusion.jobs.job_from routes each key to its config)."""
    return {**run.train, "dataset": run.dataset or None, "backbones": tuple(run.backbones) or None,
            "options": {**(run.train.get("options") or {}), **run.options}, "seed": seed,
            "data_dir": ctx.data_dir, "runs_root": ctx.runs_root, "device": ctx.device, "progress": ctx.progress}


def train_run(run: RunSpec, seed: int, ctx: StepContext) -> dict[str, Run]:
    """Train (or find) one run spec at one seed with the trainer of its head (or its named trainer); teacher
    stores are written first when the run has a teacher."""
    from embedcache.fusion.trainers import fit_flat

    if run.teacher:
        ensure_teacher(run, ctx)
    return fit_flat(run.head or run.trainer, run_settings(run, seed, ctx))


def ensure_teacher(run: RunSpec, ctx: StepContext) -> None:
    """The teacher run's outputs (its first seed) as the stores `teacher_names`, rewritten only when they
    come from another run."""
    from embedcache.fusion.classify import write_head_stores
    from embedcache.store import open_store

    seed = min(s for rid, s in ctx.done if rid == run.teacher)
    teacher = ctx.done[(run.teacher, seed)][""]
    dataset = teacher.inputs[0]["dataset"]
    fresh = True
    for name in run.teacher_names:
        path = store_path(dataset, name, ctx.data_dir)
        try:
            with open_store(path) as store:
                fresh &= store.attrs.get("model_id") == f"run:{teacher.id}"
        except Exception:  # absent or unreadable: write it
            fresh = False
    if not fresh:
        write_head_stores(teacher, names=list(run.teacher_names), data_dir=ctx.data_dir, force=True)


# ---------------------------------------------------------------- evaluations


def eval_key(ev: EvalSpec, trained_on: str) -> str:
    """The metric group an evaluation fills: its name, else the task's (`task@dataset` on another dataset)."""
    from embedcache.fusion.tasks import metrics_key

    return ev.name or metrics_key(ev.task, ev.dataset, trained_on)


def _store_fingerprints(run: Run, dataset: str, data_dir: str | Path | None) -> dict[str, str]:
    from embedcache.store import open_store

    out = {}
    for inp in run.inputs:
        for name in (dataset, f"{dataset}-prompts"):
            path = store_path(name, inp["backbone"], data_dir)
            if path.exists():
                with open_store(path) as store:
                    out[str(path)] = store.fingerprint
    return out


def evaluate(run: Run, ev: EvalSpec, ctx: StepContext) -> bool:
    """Run one evaluation on `run` and record it in its JSON; kept (False) when the task, its options and the
    evaluated stores are those already recorded."""
    from embedcache.fusion.tasks import TASKS, Context

    trained_on = run.inputs[0]["dataset"]
    dataset, key = ev.dataset or trained_on, eval_key(ev, trained_on)
    fp = fingerprint({"task": ev.task, "dataset": dataset, "options": ev.options,
                      "stores": _store_fingerprints(run, dataset, ctx.data_dir)})
    if (run.record.get("evals") or {}).get(key, {}).get("pipeline_fingerprint") == fp and key in run.metrics:
        return False
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in ev.options.items()}
    metrics, info = TASKS.get(ev.task)(Context(run, dataset, ctx.data_dir, ctx.device), **options)
    run.add_metrics(key, metrics, {"task": ev.task, "dataset": dataset, **info, "options": ev.options,
                                   "pipeline_fingerprint": fp})
    return True
