"""Pipeline specs: one TOML file per result table or figure, run end to end into results/<name>.*.

A spec (pipelines/<name>.toml, read into the frozen dataclasses below) names the stores to extract, the runs
to train (head, stores, settings, evaluations), and the table: its columns, its rows (which run and which
metrics each shows, the variant, the paper's row beside it) and its plots. `run_pipeline` extracts what is
missing (stage one's own no-op skips fresh stores), trains every run over its seeds (a run whose inputs did
not change is found by its id instead of retrained), evaluates (an evaluation whose inputs did not change
is kept), writes results/<name>.json (the manifest: which run ids fill which rows) and the table through
`embedcache.tables.results`. When data, weights or a head are missing, nothing is trained and the table still
appears, saying what is missing and the command that gets it. `run_all` runs many and reports what did not run.

    [pipeline]                 name, title, source, reference (a key of pipelines/reference.toml), seeds,
                               demo, twin_of, notes
    [[stores]]                 dataset, backbone, name (store name), tokens, options, root, limit
    [[runs]]                   id, head, trainer, dataset, backbones, options, train, teacher, teacher_names,
                               seeds; [[runs.evals]]: task, dataset, name, options
    [[columns]]                label, metric, scale, ref, digits, x
    [[rows]]                   label, run ("<id>" or "<id>/<late-fusion method>"), metrics, prefix, keys,
                               kind (ours | baseline | floor), variant, ref
    [[plots]]                  kind (sts-tolerance | hit-rate | columns), file, rows, prefix

A spec states only what differs from another with a top-level `extends = "<name>"` (a file of the same folder,
itself resolved first; a cycle or an unknown name is a one-line error). The merge, done on the parsed TOML before
any checking (`resolve_extends`): [pipeline] is merged key by key. An array of tables ([[stores]], [[runs]],
[[runs.evals]], [[columns]], [[rows]], [[plots]]) that the child leaves out is the parent's; one the child gives
is merged by position: the result has the child's elements, the i-th being the parent's i-th (if any) with the
child's keys replacing its keys (an empty `[[rows]]` keeps the parent's row as it is). Every other value,
inline tables (options, train) and lists included, replaces the parent's whole. `replace = ["stores", ...]`
(top level) names arrays the child gives whole, not merged. A key cannot be deleted: set it to its default.
`dump_pipeline` writes the resolved spec, with no `extends`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedcache.errors import BadInputError, NotFoundError
from embedcache.fingerprint import to_plain
from embedcache.paths import UnsafeNameError, safe_name
from embedcache.tables.reference import REFERENCE_FILE, pipelines_dir, read_toml

ROW_KINDS = ("ours", "baseline", "floor")
PLOT_KINDS = ("sts-tolerance", "hit-rate", "columns")
DEFAULT_SEEDS = (0, 1, 2)


# ---------------------------------------------------------------- specs


@dataclass(frozen=True)
class StoreSpec:
    """One stage-one store: `dataset` embedded by `backbone` into stores/<name or dataset>/<backbone>.h5."""

    dataset: str
    backbone: str
    name: str = ""
    tokens: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    root: str = ""
    limit: int | None = None

    @property
    def store(self) -> str:
        return self.name or self.dataset


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation task (embedcache.fusion.tasks) on a trained run; `name` overrides the metric group's key."""

    task: str
    dataset: str = ""
    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSpec:
    """A head trained over the pipeline's seeds. trainer: align | classify | late-fusion | majority ("" picks
    classify for classifier heads, align otherwise); `train` holds the trainer's keyword arguments."""

    id: str
    head: str = ""
    trainer: str = ""
    dataset: str = ""
    backbones: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    evals: tuple[EvalSpec, ...] = ()
    teacher: str = ""  # id of an earlier align run whose outputs become the teacher stores
    teacher_names: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()  # empty: the pipeline's seeds


@dataclass(frozen=True)
class ColumnSpec:
    """A table column: metric suffix (joined to the row's prefix), display scale, the paper's column name."""

    label: str
    metric: str
    scale: float = 1.0
    ref: str = ""
    digits: int = 2
    x: float | None = None  # position on a `columns` plot (e.g. the epoch)


@dataclass(frozen=True)
class RowSpec:
    """A table row: the run (and late-fusion method) and metric group it reads, the paper's row beside it."""

    label: str
    run: str
    metrics: str = "test"
    prefix: str = ""
    keys: dict[str, str] = field(default_factory=dict)  # column label -> full metric key (floors)
    kind: str = "ours"
    variant: str = ""
    ref: str = ""


@dataclass(frozen=True)
class PlotSpec:
    """A figure from the rows' metrics, written beside the table (results/<file>)."""

    kind: str
    file: str
    rows: tuple[str, ...] = ()  # row labels; empty: every row that is not a floor
    prefix: str = ""


@dataclass(frozen=True)
class PipelineSpec:
    """Everything one table or figure needs; `path` records where it was read from (not compared)."""

    name: str
    title: str
    source: str = ""
    reference: str = ""
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    demo: bool = False
    twin_of: str = ""
    notes: tuple[str, ...] = ()
    stores: tuple[StoreSpec, ...] = ()
    runs: tuple[RunSpec, ...] = ()
    columns: tuple[ColumnSpec, ...] = ()
    rows: tuple[RowSpec, ...] = ()
    plots: tuple[PlotSpec, ...] = ()
    path: str = field(default="", compare=False)


# ---------------------------------------------------------------- TOML <-> specs

_NESTED = {"evals": EvalSpec}
_PARTS = {"stores": StoreSpec, "runs": RunSpec, "columns": ColumnSpec, "rows": RowSpec, "plots": PlotSpec}


def _make(cls: type, raw: dict[str, Any], where: str) -> Any:
    """Build a spec dataclass from a TOML table: unknown keys fail naming the known ones; lists -> tuples."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise BadInputError(f"{where}: unknown key(s) {unknown}; known: {', '.join(fields)}")
    values = {}
    for key, value in raw.items():
        if key in _NESTED:
            value = tuple(_make(_NESTED[key], v, f"{where}.{key}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    try:
        return cls(**values)
    except TypeError as err:
        raise BadInputError(f"{where}: {err}") from None


def spec_from_dict(raw: dict[str, Any], where: str = "<dict>") -> PipelineSpec:
    """A PipelineSpec from parsed TOML ([pipeline] plus the arrays of tables); checked for consistency."""
    if "pipeline" not in raw:
        raise BadInputError(f"{where}: a pipeline spec needs a [pipeline] table with at least name and title")
    known = ("pipeline", *_PARTS)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise BadInputError(f"{where}: unknown table(s) {unknown}; known: {', '.join(known)}")
    parts = {key: tuple(_make(cls, t, f"{where} [[{key}]] #{i + 1}") for i, t in enumerate(raw.get(key, [])))
             for key, cls in _PARTS.items()}
    spec = _make(PipelineSpec, {**raw["pipeline"], **parts}, f"{where} [pipeline]")
    validate(spec, where)
    return spec


def validate(spec: PipelineSpec, where: str = "") -> None:
    """Internal consistency of a spec (ids, references between its parts); registries are checked at run time."""
    where = where or spec.name
    ids = [r.id for r in spec.runs]
    problems = [f"run id {i!r} appears twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
    for n, run in enumerate(spec.runs):
        if run.teacher and run.teacher not in ids[:n]:
            problems.append(f"run {run.id!r}: teacher {run.teacher!r} must be an earlier run")
        if run.evals and run.trainer in ("late-fusion", "majority"):
            problems.append(f"run {run.id!r}: a {run.trainer} run takes no evals")
    for row in spec.rows:
        if row.run.split("/")[0] not in ids:
            problems.append(f"row {row.label!r}: run {row.run!r} is not one of {ids}")
        if row.kind not in ROW_KINDS:
            problems.append(f"row {row.label!r}: kind {row.kind!r} is not one of {ROW_KINDS}")
    labels = {r.label for r in spec.rows}
    for plot in spec.plots:
        if plot.kind not in PLOT_KINDS or set(plot.rows) - labels:
            problems.append(f"plot {plot.file!r}: kind must be one of {PLOT_KINDS} and rows among the row labels")
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
        problems.append(f"seeds must be distinct and non-empty; found {spec.seeds}")
    problems += _unsafe_names(spec)
    if problems:
        raise BadInputError(f"{where}: " + "; ".join(problems))


def _unsafe_names(spec: PipelineSpec) -> list[str]:
    """Names that become paths (results/<name>.*, stores/<store>/, plot files) must be plain file names."""
    named = [("pipeline name", spec.name), *(("store name", st.store) for st in spec.stores),
             *(("plot file", p.file) for p in spec.plots)]
    problems = []
    for what, name in named:
        try:
            safe_name(name, what)
        except UnsafeNameError as exc:
            problems.append(str(exc))
    return problems


def spec_to_dict(spec: PipelineSpec) -> dict[str, Any]:
    """The TOML-shaped dict of a spec (defaults left out), the inverse of `spec_from_dict`."""
    def table(obj: Any) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if f.name == "path" or value == default:
                continue
            out[f.name] = [table(v) for v in value] if f.name in _NESTED else to_plain(value)
        return out

    out: dict[str, Any] = {"pipeline": table(dataclasses.replace(spec, **dict.fromkeys(_PARTS, ())))}
    for key in _PARTS:
        if getattr(spec, key):
            out[key] = [table(item) for item in getattr(spec, key)]
    return out


def dump_pipeline(spec: PipelineSpec) -> str:
    """The spec as TOML text (`load_pipeline` reads it back into an equal spec)."""
    raw = spec_to_dict(spec)
    lines = ["[pipeline]"] + [f"{_key(k)} = {_value(v)}" for k, v in raw["pipeline"].items()]
    for key in _PARTS:
        for item in raw.get(key, []):
            lines += ["", f"[[{key}]]"] + [f"{_key(k)} = {_value(v)}" for k, v in item.items() if k != "evals"]
            for ev in item.get("evals", []):
                lines += ["", f"[[{key}.evals]]"] + [f"{_key(k)} = {_value(v)}" for k, v in ev.items()]
    return "\n".join(lines) + "\n"


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        items = [_value(x) for x in v]
        long = sum(map(len, items)) > 100  # long lists (notes) one item per line
        return "[\n  " + ",\n  ".join(items) + ",\n]" if long else "[" + ", ".join(items) + "]"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


# ---------------------------------------------------------------- extends


def resolve_extends(path: Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The parsed TOML of `path` with its `extends` chain merged in (see the module docstring)."""
    raw = read_toml(path)
    parent_name = raw.pop("extends", None)
    replace = raw.pop("replace", [])
    if parent_name is None:
        if replace:
            raise BadInputError(f"{path}: `replace` needs an `extends`; remove it or name the spec to extend")
        return raw
    chain = (*seen, path.stem)
    if parent_name in chain:
        raise BadInputError(f"{path}: extends cycle {' -> '.join((*chain, parent_name))}; remove one `extends`")
    parent_path = path.parent / f"{parent_name}.toml"
    if not parent_path.is_file():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.toml")))
        raise BadInputError(f"{path}: extends {parent_name!r}, but there is no {parent_path}; known: {known}")
    unknown = sorted(set(replace) - set(_PARTS))
    if unknown:
        raise BadInputError(f"{path}: replace names {unknown}; arrays of tables are: {', '.join(_PARTS)}")
    return merge_specs(resolve_extends(parent_path, chain), raw, frozenset(replace))


def merge_specs(parent: dict[str, Any], child: dict[str, Any], replace: frozenset[str] = frozenset()
                ) -> dict[str, Any]:
    """Parsed spec `child` over `parent`: top-level tables merged key by key, arrays of tables by position (except
    those named in `replace`: the child's whole), any other value the child's."""
    out = dict(parent)
    for key, value in child.items():
        old = parent.get(key)
        if isinstance(value, dict) and isinstance(old, dict):  # [pipeline]
            out[key] = {**old, **value}
        elif key not in replace and _is_tables(value) and _is_tables(old):
            out[key] = _merge_arrays(old, value)
        else:
            out[key] = value
    return out


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def _merge_arrays(parent: list[dict[str, Any]], child: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Element i: the parent's i-th table with the child's keys replacing its keys; nested arrays of tables
    ([[runs.evals]]) merged the same way; as many elements as the child gives."""
    out = []
    for i, table in enumerate(child):
        base = parent[i] if i < len(parent) else {}
        merged = dict(base)
        for key, value in table.items():
            nested = _is_tables(value) and _is_tables(base.get(key)) and value
            merged[key] = _merge_arrays(base[key], value) if nested else value
        out.append(merged)
    return out


def list_pipelines(directory: str | Path | None = None) -> list[str]:
    """Names of the pipeline specs in `directory` (default: the pipelines dir): every *.toml with [pipeline]."""
    folder = Path(directory) if directory is not None else pipelines_dir()
    return sorted(p.stem for p in folder.glob("*.toml") if p.name != REFERENCE_FILE and _is_pipeline(p))


def _is_pipeline(path: Path) -> bool:
    """A spec file, or one that does not parse (kept, so that running it reports the error instead of the whole
    listing failing on it)."""
    try:
        return bool({"pipeline", "extends"} & set(read_toml(path)))
    except BadInputError:
        return True


def load_pipeline(name_or_path: str | Path) -> PipelineSpec:
    """A spec by file path, or by name from the pipelines dir (./pipelines or $EMBEDCACHE_PIPELINES_DIR)."""
    path = Path(name_or_path)
    if not path.is_file():
        path = pipelines_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(list_pipelines()) if pipelines_dir().is_dir() else "(no pipelines dir)"
        raise NotFoundError(f"no pipeline {str(name_or_path)!r} (looked for {path}); known: {known}")
    return dataclasses.replace(spec_from_dict(resolve_extends(path), str(path)), path=str(path))
