"""The layout's contract: stage two (fusion/, evaluate/, store/) imports nothing of stage one (datasets,
backbones, extract) nor transformers/timm, and the package has no import cycles."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import embedcache

PACKAGE = Path(embedcache.__file__).parent
STAGE_TWO = ("embedcache.fusion", "embedcache.evaluate", "embedcache.store")
FORBIDDEN = ("transformers", "timm", "embedcache.datasets", "embedcache.backbones", "embedcache.extract")


def _modules(prefix: str = "embedcache") -> list[str]:
    return [prefix] + [m.name for m in pkgutil.walk_packages([str(PACKAGE)], "embedcache.")]


def test_stage_two_imports_nothing_of_stage_one() -> None:
    stage_two = [m for m in _modules() if m.startswith(STAGE_TWO)]
    assert "embedcache.fusion.train" in stage_two and "embedcache.fusion.heads.cbmf" in stage_two
    code = (
        "import json, sys\n"
        + "".join(f"import {m}\n" for m in stage_two)
        + f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [], "stage two pulled in stage one or a backbone library"


def _source_imports(module: str) -> dict[str, int]:
    """Every module name `module`'s source imports, at any depth (function-level too), with its line."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found[node.module] = node.lineno
        elif isinstance(node, ast.Import):
            found.update({a.name: node.lineno for a in node.names})
    return found


def test_stage_two_source_imports_nothing_of_stage_one_even_inside_functions() -> None:
    # The runtime check above imports each module; an import inside a function runs only when called.
    stage_two = [m for m in _modules() if m.startswith(STAGE_TWO)]
    bad = [f"{m}:{line} imports {name}" for m in stage_two for name, line in _source_imports(m).items()
           if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == []
    assert "torch" in _source_imports("embedcache.fusion.train")  # the walk does see imports


def _imports(module: str) -> set[str]:
    """Project modules `module` imports at any depth of its source (function-level imports included)."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("embedcache"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("embedcache"))
    return found


def test_no_import_cycles() -> None:
    modules = set(_modules())
    graph = {m: {i for i in _imports(m) if i in modules and i != m and not m.startswith(i + ".")} for m in modules}
    # a package's __init__ re-exporting its own submodules is not a cycle
    graph = {m: {i for i in deps if not i.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []
