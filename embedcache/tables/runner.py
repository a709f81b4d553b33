"""Declarative pipelines: one TOML spec per result table or figure, run end to end into results/<name>.*.

The specs (frozen dataclasses, TOML reading and writing) live in `embedcache.tables.spec` and are
re-exported here; the steps (stores, trainers, evaluations) in `embedcache.tables.steps`. This module runs
them: `run_pipeline` for one spec, `run_all` for many (what `make all` / `make demo` call), each writing
results/<name>.json (the manifest: status, what is missing, which run ids fill which rows) and the table
(`embedcache.tables.results`). Nothing is retrained or re-evaluated whose inputs did not change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedcache.errors import BadInputError, UserError
from embedcache.fingerprint import fingerprint
from embedcache.paths import Paths
from embedcache.tables.reference import pipelines_dir
from embedcache.tables.spec import (
    ColumnSpec,
    EvalSpec,
    PipelineSpec,
    PlotSpec,
    RowSpec,
    RunSpec,
    StoreSpec,
    dump_pipeline,
    list_pipelines,
    load_pipeline,
    resolve_extends,
    spec_from_dict,
    spec_to_dict,
    validate,
)

log = logging.getLogger(__name__)

__all__ = [
    "AllResult", "ColumnSpec", "EvalSpec", "PipelineResult", "PipelineSpec", "PlotSpec", "RowSpec", "RunSpec",
    "StoreSpec", "dump_pipeline", "list_pipelines", "load_pipeline", "run_all", "run_pipeline", "select_pipelines",
    "spec_from_dict", "spec_to_dict", "validate",
]


# ---------------------------------------------------------------- running


@dataclass
class PipelineResult:
    """What one pipeline run did. status: complete | not run (something missing) | failed (an error)."""

    name: str
    status: str = "complete"
    missing: list[Any] = field(default_factory=list)  # pipeline_steps.Missing
    notes: list[str] = field(default_factory=list)
    runs: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # run spec -> seed -> sub -> run id
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list)
    kept_evals: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    timings: list[tuple[str, float]] = field(default_factory=list)  # (step, seconds): stores, runs, evaluations
    stand_ins: bool = False  # the rehearsal's: stores of random-weight stand-in backbones

    @property
    def ok(self) -> bool:
        return self.status == "complete"

    def summary(self) -> str:
        """One line, plus one line per missing thing and the command that gets it."""
        head = (f"{self.name}: {self.status} ({len(self.trained)} runs trained, {len(self.reused)} reused, "
                f"{len(self.evaluated)} evaluations, {self.seconds:.0f}s)")
        return "\n".join([head] + [f"  missing: {m.what}" + (f" -> `{m.fix}`" if m.fix else "") for m in self.missing])


def resolve_seeds(spec: PipelineSpec, seeds: Sequence[int] | int | None) -> tuple[int, ...]:
    """The seeds to run: the spec's (None), the first n (an int), or exactly those given."""
    chosen = spec.seeds if seeds is None else tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)
    if not chosen:
        raise BadInputError(f"pipeline {spec.name!r} needs at least one seed; got {seeds!r}")
    return chosen


def run_pipeline(spec: PipelineSpec | str | Path, paths: Paths | None = None, *,
                 seeds: Sequence[int] | int | None = None, progress: bool = False, device: str | None = None,
                 weights: Mapping[str, Path] | None = None, stand_ins: bool = False) -> PipelineResult:
    """Run one pipeline end to end and write results/<name>.json, .md, .csv (and its PNGs).

    Missing data, weights or heads make it "not run": nothing is trained and the table says what is missing
    and the command that gets it. Runs and evaluations whose inputs did not change are reused, so a second
    call redoes only what changed. paths: the data dir (raw data, stores) and results dir (tables, runs/);
    None: the defaults. seeds: None (the spec's, 3 by default), an int n (0..n-1) or a list.
    `weights` maps backbone names to local weight folders; stores of random-weight stand-ins are refused
    unless `stand_ins` (the rehearsal, whose tables then say so).
    """
    from embedcache.tables import steps as steps

    spec = user_heads(spec if isinstance(spec, PipelineSpec) else load_pipeline(spec))
    chosen = resolve_seeds(spec, seeds)
    t0 = time.perf_counter()
    paths = paths or Paths.resolve()
    runs_root = paths.runs_dir
    runs_root.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in runs_root.iterdir()}
    result = PipelineResult(spec.name, missing=steps.unregistered(spec))
    ctx = steps.StepContext(paths, device, progress)
    for st in spec.stores if not result.missing else ():  # raw data and stores alike under the data dir
        with _timed(result, f"store {st.store}/{st.backbone}"):
            missing, note = steps.ensure_store(st, paths.data_dir, weights=weights, stand_ins=stand_ins)
        result.missing += [missing] if missing else []
        result.notes += [note] if note else []
    if not result.missing:
        try:
            _train_and_evaluate(spec, chosen, ctx, result)
        except steps.missing_errors() as exc:  # e.g. a store that no [[stores]] entry makes
            result.missing.append(steps.Missing.from_error(exc))
    result.missing = steps.unique(result.missing)  # one line per missing dataset, not one per store
    result.status = "not run" if result.missing else "complete"
    ids = [i for seeds_ in result.runs.values() for subs in seeds_.values() for i in subs.values()]
    result.trained = [i for i in dict.fromkeys(ids) if i not in before]
    result.reused = [i for i in dict.fromkeys(ids) if i in before]
    result.notes += ctx.notes
    result.stand_ins = stand_ins
    result.seconds = time.perf_counter() - t0
    result.outputs = write_outputs(spec, result, paths.results_dir)
    log.info("%s", result.summary())
    return result


def user_heads(spec: PipelineSpec) -> PipelineSpec:
    """The spec with every `path.py:NAME` head imported from its file (relative to the spec's folder) and named
    by its registered NAME (embedcache.fusion.user_heads); a spec of the package's own heads is returned as is."""
    from embedcache.fusion.user_heads import is_file_ref, resolve_head

    if not any(is_file_ref(r.head) for r in spec.runs):
        return spec
    base = Path(spec.path).parent if spec.path else None
    runs = tuple(dataclasses.replace(r, head=resolve_head(r.head, base)) if is_file_ref(r.head) else r
                 for r in spec.runs)
    return dataclasses.replace(spec, runs=runs)


def _train_and_evaluate(spec: PipelineSpec, seeds: tuple[int, ...], ctx: Any, result: PipelineResult) -> None:
    from embedcache.tables import steps as steps

    for run in spec.runs:
        for seed in run.seeds or seeds:
            with _timed(result, f"train {run.id} seed {seed}"):
                runs = steps.train_run(run, seed, ctx)
            ctx.done[(run.id, seed)] = runs
            result.runs.setdefault(run.id, {})[str(seed)] = {sub: r.id for sub, r in runs.items()}
            for ev in run.evals:
                label = f"{runs[''].id}:{steps.eval_key(ev, runs[''].inputs[0]['dataset'])}"
                with _timed(result, f"evaluate {run.id} seed {seed}: {ev.task} on {ev.dataset or run.dataset}"):
                    done = steps.evaluate(runs[""], ev, ctx)
                (result.evaluated if done else result.kept_evals).append(label)


@contextlib.contextmanager
def _timed(result: PipelineResult, step: str) -> Iterator[None]:
    """Time one step into `result.timings` and the log (what a long pipeline spends where)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        result.timings.append((step, round(time.perf_counter() - t0, 2)))
        log.info("%s: %.1fs", step, result.timings[-1][1])


def manifest(spec: PipelineSpec, result: PipelineResult, runs_root: Path) -> dict[str, Any]:
    """results/<name>.json: the spec as run, its status, what was missing, and which run ids fill the rows."""
    return {"pipeline": spec.name, "spec": spec_to_dict(spec), "spec_file": spec.path,
            "spec_fingerprint": fingerprint(spec), "status": result.status,
            "missing": [dataclasses.asdict(m) for m in result.missing], "notes": result.notes,
            "runs": result.runs, "runs_dir": str(runs_root), "trained": result.trained, "reused": result.reused,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(result.seconds, 2),
            "timings": result.timings,
            **({"stand_ins": True} if result.stand_ins else {})}


def write_outputs(spec: PipelineSpec, result: PipelineResult, out_dir: Path) -> list[Path]:
    """Write the manifest atomically, then the table (markdown, csv) and plots built from it."""
    from embedcache.fusion.runs import write_json
    from embedcache.tables.results import write_results

    out_dir.mkdir(parents=True, exist_ok=True)
    record = manifest(spec, result, out_dir / "runs")
    path = out_dir / f"{spec.name}.json"
    write_json(path, record)
    return [path, *write_results(spec, record, out_dir)]


@dataclass
class AllResult:
    """The outcome of `run_all`: one PipelineResult per pipeline, in order."""

    results: list[PipelineResult]
    report: Path | None = None  # results/index.html

    @property
    def not_run(self) -> list[PipelineResult]:
        return [r for r in self.results if not r.ok]

    @property
    def exit_code(self) -> int:
        """0 when every pipeline ran; 1 otherwise (the CLI exits with it)."""
        return 1 if self.not_run else 0

    def summary(self) -> str:
        lines = [r.summary() for r in self.results]
        if self.not_run:
            lines.append("did not run: " + ", ".join(f"{r.name} ({r.status})" for r in self.not_run))
        return "\n".join(lines)


def select_pipelines(names: Sequence[str] | None = None, *, demo: bool | None = None,
                     directory: str | Path | None = None) -> list[str]:
    """Pipeline names to run: `names` as given, else every spec in the directory (demo: only the demo twins
    when True, only the papers' pipelines when False, all when None)."""
    if names:
        return list(names)
    folder = Path(directory) if directory is not None else pipelines_dir()
    chosen = []
    for name in list_pipelines(folder):
        try:
            raw = resolve_extends(folder / f"{name}.toml")["pipeline"]  # `demo` may be inherited
        except (ValueError, FileNotFoundError):  # unreadable: kept, so that run_all records it as failed
            raw = None
        if raw is None or demo is None or bool(raw.get("demo", False)) == demo:
            chosen.append(str(folder / f"{name}.toml"))
    return chosen


def run_all(names: Sequence[str] | None = None, *, demo: bool | None = None, directory: str | Path | None = None,
            paths: Paths | None = None, seeds: Sequence[int] | int | None = None, progress: bool = False,
            device: str | None = None) -> AllResult:
    """Run every selected pipeline (see `select_pipelines`); one that cannot run (missing data, weights, a head)
    or fails does not stop the others. `AllResult.exit_code` is non-zero when any did not run, and
    `AllResult.summary()` lists them with what is missing."""
    from embedcache.tables.steps import Missing

    paths = paths or Paths.resolve()
    results = []
    for name in select_pipelines(names, demo=demo, directory=directory):
        spec = None
        try:
            spec = load_pipeline(name)
        except (ValueError, FileNotFoundError) as exc:  # a spec error: its message says what to fix, no traceback
            log.error("invalid pipeline spec: %s", exc)
            results.append(PipelineResult(Path(name).stem, status="failed", missing=[
                Missing(f"the spec is invalid: {exc}", f"fix {name}, then: embedcache run {Path(name).stem}")]))
            continue
        try:
            results.append(run_pipeline(spec, paths, seeds=seeds, progress=progress, device=device))
        except Exception as exc:  # one broken pipeline must not stop `make all`
            if isinstance(exc, UserError):  # says what to do: one line, no traceback (a bug keeps its traceback)
                log.error("pipeline %s failed: %s%s", name, exc, f" (fix: {exc.fix})" if exc.fix else "")
            else:
                log.exception("pipeline %s failed", name)
            fix = exc.fix if isinstance(exc, UserError) and exc.fix else f"embedcache run {Path(name).stem}"
            failed = PipelineResult(Path(name).stem, status="failed",
                                    missing=[Missing(f"the pipeline failed: {type(exc).__name__}: {exc}", fix)])
            if spec is not None:
                failed.outputs = _try_write(spec, failed, paths.results_dir)
            results.append(failed)
    return AllResult(results, report=_try_report(paths.results_dir))


def _try_report(out_dir: Path) -> Path | None:
    """results/index.html over every manifest in `out_dir`; a failure to write it is logged, not raised."""
    from embedcache.tables.report import write_report

    try:
        return write_report(out_dir)
    except Exception:  # the tables are written; a broken page must not turn a finished run into a failure
        log.exception("could not write the report page in %s", out_dir)
        return None


def _try_write(spec: PipelineSpec, result: PipelineResult, out_dir: Path) -> list[Path]:
    try:
        return write_outputs(spec, result, out_dir)
    except Exception:  # the failure itself is already reported; a table-writing error must not hide it
        log.exception("could not write the table of %s", spec.name)
        return []
