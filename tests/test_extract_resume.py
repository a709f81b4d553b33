"""kill -9 during `embedcache extract`, then rerun: the store ends byte-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embedcache.store import IncompleteStoreError, open_store

pytestmark = pytest.mark.slow

ARGS = ["extract", "shapes", "--model", "effnet-lite0", "--tokens", "-o", "size=80", "--shard-size", "4",
        "--batch-size", "4", "--workers", "0", "--split", "train"]


def _cli(data_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "EMBEDCACHE_DATA_DIR": str(data_dir)}
    return subprocess.Popen([sys.executable, "-m", "embedcache.cli", *ARGS], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _store(data_dir: Path) -> Path:
    return data_dir / "stores" / "shapes" / "effnet-lite0.h5"


def _kill_mid_extraction(data_dir: Path, delay: float) -> None:
    """Start the CLI, wait until it has written its first shard, then SIGKILL it after `delay` seconds."""
    proc = _cli(data_dir)
    parts = Path(str(_store(data_dir)) + ".parts") / "train"
    deadline = time.monotonic() + 120
    while not (parts.exists() and any(parts.glob("*.h5"))):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"extract ended before writing a shard: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_resume_after_sigkill_is_byte_identical(tmp_path):
    reference = tmp_path / "reference"
    assert _cli(reference).wait() == 0
    killed = tmp_path / "killed"
    rng = np.random.default_rng(7)
    for delay in rng.uniform(0.0, 1.0, size=3):
        _kill_mid_extraction(killed, float(delay))
        if _store(killed).exists():  # the run got to the end before the kill: nothing left to interrupt
            break
        with pytest.raises(IncompleteStoreError):
            open_store(_store(killed))
    proc = _cli(killed)
    assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
    with open_store(_store(reference)) as a, open_store(_store(killed)) as b:
        sa, sb = a.split("train"), b.split("train")
        np.testing.assert_array_equal(sa.pooled(), sb.pooled())
        np.testing.assert_array_equal(sa.token_rows(0, len(sa))[0], sb.token_rows(0, len(sb))[0])
    assert _store(reference).read_bytes() == _store(killed).read_bytes()
