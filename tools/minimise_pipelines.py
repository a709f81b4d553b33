"""Rewrite pipeline specs to state only what differs from another spec (`extends`), keeping them identical.

    python tools/minimise_pipelines.py CHILD=PARENT ...     e.g. demo-cbmf-mrpc=cbmf-mrpc cbmf-qqp=cbmf-mrpc

Each CHILD file is resolved first (a full file, or one that already extends), then rewritten as `extends = PARENT`
plus the smallest differences under the merge rule of embedcache/tables/spec.py (keys by position; an array is
given whole with `replace` when that is shorter or the merge cannot express it). The rewritten file is loaded back
and must give the same spec (`spec_to_dict`), else the file is left as it was. Use it after a merge brings a full
copy back (take the full file, rerun this). The header comment of the file is kept.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from embedcache.fingerprint import to_plain
from embedcache.tables import spec as S
from embedcache.tables.reference import pipelines_dir

CLASSES = {"stores": S.StoreSpec, "runs": S.RunSpec, "columns": S.ColumnSpec, "rows": S.RowSpec,
           "plots": S.PlotSpec, "evals": S.EvalSpec, "pipeline": S.PipelineSpec}
NONE = object()  # a default TOML cannot state


def defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[f.name] = NONE if value is None or value is dataclasses.MISSING else to_plain(value)
    return out


def table_diff(parent: dict, child: dict, cls: type) -> dict | None:
    """Keys the child must state over `parent`; None when a parent key cannot be reset."""
    out = {k: v for k, v in child.items() if parent.get(k) != v and k != "evals"}
    for k in parent.keys() - child.keys() - {"evals"}:
        if defaults(cls)[k] is NONE:
            return None
        out[k] = defaults(cls)[k]
    p_ev, c_ev = parent.get("evals", []), child.get("evals", [])
    if p_ev != c_ev:
        ev = array_diff(p_ev, c_ev, "evals")
        if ev is None:
            return None
        out["evals"] = ev
    return out


def array_diff(parent: list, child: list, key: str, strict: bool = False) -> list | None:
    """The child's elements as changes to the parent's by position; None (give it whole) when an element cannot be
    expressed so, or (`strict`: top-level arrays) renames an element (its id / label / file) and changes more than
    half its keys (a merge with an unrelated element would mislead a reader)."""
    out = []
    for i, table in enumerate(child):
        d = table_diff(parent[i] if i < len(parent) else {}, table, CLASSES[key])
        renamed = i < len(parent) and any(k in d for k in IDENTITY[key])
        if d is None or (strict and renamed and 2 * len(d) > len(table)):
            return None
        out.append(d)
    return out


IDENTITY = {"stores": ("dataset", "backbone", "name"), "runs": ("id",), "evals": ("task", "dataset"),
            "columns": ("label",), "rows": ("label",), "plots": ("file",)}


def lines_of(key: str, tables: list, prefix: str = "", parents: list | None = None) -> list[str]:
    """TOML lines of an array of tables; with `parents` (a merge by position), each header names its element."""
    lines = []
    for i, t in enumerate(tables):
        header = f"[[{prefix}{key}]]"
        if parents is not None:
            whole = {**(parents[i] if i < len(parents) else {}), **t}
            header += "  # " + " ".join(str(whole[k]) for k in IDENTITY[key] if whole.get(k))
        lines += ["", header] + [f"{S._key(k)} = {S._value(v)}" for k, v in t.items()
                                               if not (k == "evals" and v and isinstance(v, list))]
        if isinstance(t.get("evals"), list) and t["evals"]:
            base = parents[i].get("evals", []) if parents is not None and i < len(parents) else None
            lines += lines_of("evals", t["evals"], f"{key}.", base)
    return lines


def minimal(parent: dict, child: dict, parent_name: str, header: list[str]) -> str:
    head = [f"{S._key(k)} = {S._value(v)}" for k, v in table_diff(parent["pipeline"], child["pipeline"],
                                                                   S.PipelineSpec).items()]
    body, replace = [], []
    for key in S._PARTS:
        p, c = parent.get(key, []), child.get(key, [])
        if p == c:
            continue
        whole = lines_of(key, c) if c else ["", f"{key} = []"]
        diff = array_diff(p, c, key, strict=True) if c else None
        merged = lines_of(key, diff, parents=p) if diff is not None else None
        if merged is None or len(merged) >= len(whole):
            replace.append(key)
            body += whole
        else:
            body += merged
    top = [f'extends = "{parent_name}"'] + ([f"replace = {S._value(replace)}"] if replace else [])
    return "\n".join(header + top + ["", "[pipeline]"] + head + body) + "\n"


def main(pairs: list[str]) -> int:
    folder = pipelines_dir()
    bad = 0
    for pair in pairs:
        child, parent = pair.split("=")
        path = folder / f"{child}.toml"
        want = S.spec_to_dict(S.load_pipeline(path))
        full = S.resolve_extends(path)
        header = [line for line in path.read_text().splitlines() if line.startswith("#")][:1]
        old = path.read_text()
        path.write_text(minimal(S.resolve_extends(folder / f"{parent}.toml"), full, parent, header))
        if S.spec_to_dict(S.load_pipeline(path)) != want:
            path.write_text(old)
            print(f"{child}: the minimal form does not resolve to the same spec; left as it was")
            bad += 1
        else:
            print(f"{child}: {len(old.splitlines())} -> {len(path.read_text().splitlines())} lines")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
