"""Heads from a user's own Python file: `embedcache train path/to/my_heads.py:NAME`, no package edit.

The file is imported by path (importlib) and registers its heads in `HEADS` as the package's own do
(`@HEADS.register("my-head")` on a `Head` subclass). `resolve_head("my_heads.py:my-head")` imports it once per
process and returns the registered name. Every run trained with such a head records the file's absolute path
and sha256 in its run.json (`head_file`), so `embedcache eval`, `embed` and later pipelines re-import it when
they rebuild the head; a pipeline names the same `path.py:NAME` as its run's `head` (a relative path is read
from the pipeline file's folder, else the working directory).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from embedcache.errors import BadInputError, NotFoundError
from embedcache.fusion.heads.base import HEADS

SEPARATOR = ".py:"
_LOADED: dict[Path, list[str]] = {}  # resolved file -> the head names it registered
HEAD_FILES: dict[str, Path] = {}  # head name -> the user file that registered it


def is_file_ref(ref: str) -> bool:
    """True for `path/to/file.py:NAME`."""
    return SEPARATOR in ref


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_head_file(path: str | Path) -> list[str]:
    """Import a user's head file by path (once per process) and return the head names it registered."""
    file = Path(path).expanduser().resolve()
    if file in _LOADED:
        return _LOADED[file]
    if not file.is_file():
        raise NotFoundError(f"head file {path} not found; pass `embedcache train path/to/my_heads.py:NAME` "
                            "with a path to an existing Python file")
    before = set(HEADS.names())
    name = f"embedcache_user_heads.{file.stem}_{hashlib.sha256(str(file).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    added = sorted(set(HEADS.names()) - before)
    _LOADED[file] = added
    HEAD_FILES.update({h: file for h in added})
    return added


def forget_head_files() -> None:
    """Unregister every head imported from a user file (a notebook re-importing an edited file, tests)."""
    for name in HEAD_FILES:
        HEADS.unregister(name)
    HEAD_FILES.clear()
    _LOADED.clear()


def resolve_head(ref: str, base: str | Path | None = None) -> str:
    """A registered head name for `ref`: a plain name as is; `file.py:NAME` imports the file (relative paths
    from `base` when the file is there, else the working directory) and checks it registered NAME."""
    if not is_file_ref(ref):
        return ref
    file, _, name = ref.rpartition(":")
    path = Path(file)
    if base is not None and not path.is_absolute() and (Path(base) / path).is_file():
        path = Path(base) / path
    added = load_head_file(path)
    if name not in HEADS:
        raise BadInputError(f"{file} registers no head {name!r} (it registered: {', '.join(added) or 'none'}); "
                            f"decorate a Head subclass with @HEADS.register({name!r})")
    return name


def head_file_record(name: str) -> dict[str, Any]:
    """What a run records about a user head's file ({} for the package's own heads)."""
    file = HEAD_FILES.get(name)
    return {"head_file": {"path": str(file), "sha256": sha256(file)}} if file else {}


def ensure_head(record: dict[str, Any]) -> None:
    """Before rebuilding a run's head: import the user file it was trained from when its name is not registered
    (a new process). A file edited since training is imported as it is now; the recorded sha256 says which
    version trained the run."""
    name = record.get("head", {}).get("name", "")
    info = record.get("head_file")
    if name and name not in HEADS and info:
        load_head_file(info["path"])
