"""Stage two never imports transformers or timm (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

STAGE_TWO = ["embedcache.train", "embedcache.heads", "embedcache.tasks", "embedcache.views", "embedcache.losses",
             "embedcache.runs", "embedcache.pairs", "embedcache.embed"]
FORBIDDEN = ("transformers", "timm")


def test_stage_two_imports_neither_transformers_nor_timm() -> None:
    code = (
        "import json, sys\n"
        + "".join(f"import {m}\n" for m in STAGE_TWO)
        + f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
        + "print(json.dumps(sorted(m for m in sys.modules if m.startswith('embedcache'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    forbidden, loaded = json.loads(out[0]), json.loads(out[1])
    assert forbidden == [], f"stage two pulled in {forbidden}"
    assert set(STAGE_TWO) <= set(loaded)  # the modules really were imported
