"""The steps a pipeline runs: what is missing, stage-one stores, the trainers, the evaluations.

Kept apart from the specs (embedcache.tables.spec) and the runner (embedcache.tables.runner) so each stays
short. Every step is keyed by its inputs: stores through stage one's own fingerprint check, runs through
their run ids (store fingerprints + head config + training settings + seed), evaluations through a
fingerprint of the task, its options and the evaluated stores recorded in the run's JSON, so a re-run
redoes only what changed.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedcache.datasets import DATASETS
from embedcache.fingerprint import fingerprint
from embedcache.paths import store_path
from embedcache.registry import Registry

if TYPE_CHECKING:
    from embedcache.fusion.runs import Run
    from embedcache.tables.spec import EvalSpec, PipelineSpec, RunSpec, StoreSpec

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- running: what is missing


FIX_COMMAND = re.compile(r"(embedcache (download|extract)|hf download|pip install) ")


@dataclass
class Missing:
    """Why a pipeline cannot run: what is missing, the full message, and the command that gets it."""

    what: str
    fix: str = ""
    detail: str = ""

    @classmethod
    def from_error(cls, exc: BaseException) -> Missing:
        text = str(exc)
        first = text.split(" Looked in")[0].split("\n")[0].strip()
        candidates = re.findall(r"`([^`]+)`", text) + [ln.strip() for ln in text.splitlines()]
        commands = list(dict.fromkeys(c for c in candidates if FIX_COMMAND.match(c)))
        extracts = [c for c in commands if c.startswith("embedcache extract ")]  # one per missing store: all
        fix = "; ".join(extracts) if extracts else next(iter(commands), "")
        if not fix and "To get it:" in text:
            fix = text.split("To get it:", 1)[1].strip().splitlines()[0]
        return cls(first, fix, text)


def missing_errors() -> tuple[type[BaseException], ...]:
    from embedcache.backbones.common import WeightsNotFoundError
    from embedcache.backbones.offline import OfflineWeightsError
    from embedcache.datasets import DatasetNotFoundError
    from embedcache.fusion.train import StoresMissingError
    from embedcache.store import StaleStoreError

    return DatasetNotFoundError, WeightsNotFoundError, OfflineWeightsError, StoresMissingError, StaleStoreError


def load_head_families() -> list[str]:
    """Import the optional head/trainer modules (classifier heads, CLFA, late fusion) so their names register;
    returns the modules that failed to import (their heads then show as not registered)."""
    failed = []
    for module in ("embedcache.fusion.classify", "embedcache.fusion.heads.clfa", "embedcache.fusion.late_fusion"):
        try:
            importlib.import_module(module)
        except Exception as err:  # a module mid-edit must not sink every pipeline
            log.warning("could not import %s: %s", module, err)
            failed.append(module)
    return failed


def unregistered(spec: PipelineSpec) -> list[Missing]:
    """Heads, tasks, late-fusion methods, datasets and backbones the spec names that are not registered."""
    from embedcache.backbones import resolve_spec
    from embedcache.fusion.heads import HEADS
    from embedcache.fusion.tasks import TASKS

    failed = load_head_families()
    late_module = "embedcache.fusion.late_fusion"
    late = None if late_module in failed else importlib.import_module(late_module)
    methods = late.LATE_FUSIONS if late else Registry("late fusion")  # empty when the module did not import
    found: list[Missing] = []

    def need(kind: str, name: str, ok: Callable[[str], bool], known: Callable[[], list[str]], where: str) -> None:
        if not ok(name):
            found.append(Missing(f"{kind} {name!r} is not registered", f"register it in {where}",
                                 f"known {kind}s: {', '.join(known())}"))

    for run in spec.runs:
        if run.trainer:
            need("pipeline trainer", run.trainer, TRAINERS.__contains__, TRAINERS.names, "embedcache/tables/steps.py")
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
    from embedcache.extract import extract

    path = store_path(st.store, st.backbone, data_dir)
    key = (str(path.resolve()), fingerprint(st))
    if key in _VERIFIED and path.exists():
        return None, None
    t0 = time.perf_counter()
    try:
        extract(st.dataset, st.backbone, tokens=st.tokens, root=st.root or None, data_dir=data_dir,
                dataset_options=dict(st.options) or None, store_name=st.name or None, limit=st.limit,
                weights=(weights or {}).get(st.backbone))
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
    """A Missing when the store at `path` holds random-weight stand-in embeddings and they are not allowed."""
    from embedcache.store import open_store

    with open_store(path) as store:
        if allowed or not store.attrs.get("stand_in"):
            return None
    return Missing(f"{path} holds stand-in embeddings (random-weight {st.backbone!r} of the rehearsal), not results",
                   extract_command(st, data_dir, force=True)), None


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

    data_dir: str | Path | None
    runs_root: Path
    device: str | None = None
    progress: bool = False
    done: dict[tuple[str, int], dict[str, Run]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def common(self, seed: int) -> dict[str, Any]:
        return {"data_dir": self.data_dir, "seed": seed, "runs_root": self.runs_root, "device": self.device,
                "progress": self.progress}


Trainer = Callable[["RunSpec", int, StepContext], dict[str, "Run"]]
TRAINERS: Registry[Trainer] = Registry("pipeline trainer")


def trainer_name(run: RunSpec) -> str:
    """The run's trainer: as given, else `classify` for classifier heads and `align` for the others."""
    if run.trainer:
        return run.trainer
    from embedcache.fusion.heads import HEADS

    return "classify" if getattr(HEADS.get(run.head), "task", None) == "classify" else "align"


def _where(run: RunSpec) -> dict[str, Any]:
    return {"dataset": run.dataset or None, "backbones": tuple(run.backbones) or None}


@TRAINERS.register("align")
def _align(run: RunSpec, seed: int, ctx: StepContext) -> dict[str, Run]:
    from embedcache.fusion.train import train

    return {"": train(run.head, **_where(run), options=dict(run.options) or None, **run.train, **ctx.common(seed))}


@TRAINERS.register("classify")
def _classify(run: RunSpec, seed: int, ctx: StepContext) -> dict[str, Run]:
    from embedcache.fusion.classify import train_classifier

    return {"": train_classifier(run.head, **_where(run), options=dict(run.options) or None, **run.train,
                                 **ctx.common(seed))}


@TRAINERS.register("late-fusion")
def _late(run: RunSpec, seed: int, ctx: StepContext) -> dict[str, Run]:
    from embedcache.fusion.late_fusion import late_fusion

    kwargs = {k: v for k, v in run.train.items() if k != "methods"}
    return dict(late_fusion(run.train.get("methods"), dataset=run.dataset, backbones=run.backbones, **kwargs,
                            **ctx.common(seed)))


@TRAINERS.register("majority")
def _majority(run: RunSpec, seed: int, ctx: StepContext) -> dict[str, Run]:
    """The majority-class floor: the commonest TRAINING class (multi-label: every category present in at least
    half the training items) predicted for every test row, scored like the classifiers."""
    from embedcache.fusion.classify import evaluate_probs, label_info, load_labelled
    from embedcache.fusion.runs import find_run, make_run_id, write_record
    from embedcache.fusion.train import check_stores, run_inputs

    opts = {"train_split": "train", "test_split": "test", **run.train}
    paths = check_stores("majority", run.dataset, tuple(run.backbones), ctx.data_dir, None)
    train = load_labelled(paths, opts["train_split"])
    inputs = run_inputs(train)
    run_id = make_run_id("majority", {"inputs": [i["fingerprint"] for i in inputs], "options": opts})
    if (found := find_run(run_id, ctx.runs_root)) is not None:
        return {"": found}
    test = load_labelled(paths, opts["test_split"])
    kind, classes = label_info(train)
    y = train.labels.numpy()
    prior = np.bincount(y, minlength=len(classes)) / len(y) if kind == "single" else y.mean(axis=0)
    guess = np.eye(len(classes))[prior.argmax()] if kind == "single" else (prior >= 0.5).astype(np.float64)
    probs = np.tile(guess, (len(test), 1))  # (N_test, C): the same prediction for every row
    record = {"run_id": run_id, "task": "majority", "head": {"name": "majority"}, "seed": seed, "inputs": inputs,
              "data": {**opts, "train_rows": len(train), "test_rows": len(test)}, "classes": classes,
              "label_kind": kind, "prior": prior.tolist(),
              "metrics": {"test": evaluate_probs(probs, test.labels.numpy(), kind, classes)}}
    return {"": write_record(record, ctx.runs_root)}


def train_run(run: RunSpec, seed: int, ctx: StepContext) -> dict[str, Run]:
    """Train (or find) one run spec at one seed; teacher stores are written first when the run has a teacher."""
    if run.teacher:
        ensure_teacher(run, ctx)
    return TRAINERS.get(trainer_name(run))(run, seed, ctx)


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
