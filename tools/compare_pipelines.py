"""Check that every pipeline spec resolves to the same spec as at a git revision (run ids and tables depend on it).

    python tools/compare_pipelines.py [REF]        REF defaults to main

Reads pipelines/ at REF (git archive into a temporary folder) and here, loads each spec with this checkout's
loader (so `extends` is resolved on both sides) and compares `spec_to_dict` and the fingerprint the runner
records. Prints one line per spec; exits 1 when any differs or the two sets of names differ.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from embedcache.fingerprint import fingerprint
from embedcache.tables.spec import list_pipelines, load_pipeline, spec_to_dict


def main(ref: str = "main") -> int:
    archive = subprocess.run(["git", "archive", ref, "pipelines"], capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        tarfile.open(fileobj=io.BytesIO(archive)).extractall(tmp, filter="data")
        old_dir, new_dir = Path(tmp) / "pipelines", Path("pipelines")
        old, new = list_pipelines(old_dir), list_pipelines(new_dir)
        bad = sorted(set(old) ^ set(new))
        for name in bad:
            print(f"{name}: only {'at ' + ref if name in old else 'here'}")
        for name in sorted(set(old) & set(new)):
            a, b = load_pipeline(old_dir / f"{name}.toml"), load_pipeline(new_dir / f"{name}.toml")
            same = spec_to_dict(a) == spec_to_dict(b) and fingerprint(a) == fingerprint(dataclasses.replace(
                b, path=a.path))
            print(f"{name}: {'identical' if same else 'DIFFERENT'}")
            bad += [] if same else [name]
    print(f"{len(new)} pipelines here, {len(bad)} differ from {ref}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
