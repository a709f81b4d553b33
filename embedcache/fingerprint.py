"""Canonical JSON of plain-data specs and the hash of it: the fingerprint of everything stored."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def to_plain(obj: Any) -> Any:
    """Dataclasses, tuples, paths and numpy scalars -> JSON-able dicts, lists and scalars. A dataclass field
    with metadata `omit_default` is left out while it holds its default (fields added after ids were pinned)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("omit_default") and getattr(obj, f.name) == f.default)}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch arrays and scalars
        return obj.tolist()
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace: equal specs give equal strings."""
    return json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON, shortened to `length` hex digits."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def diff_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable lines naming each top-level key whose value differs between two attribute dicts."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict) and a and b:  # e.g. dataset_files: name the changed file
            lines += [f"{key}[{name}]:{rest}" for name, _, rest in (ln.partition(":") for ln in diff_keys(a, b))]
        elif canonical_json(a) != canonical_json(b):
            lines.append(f"{key}: {canonical_json(a)[:80]} -> {canonical_json(b)[:80]}")
    return lines
