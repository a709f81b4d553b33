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

ARGS = ["extract", "shapes", "--model", "effnet-lite0", "--tokens", "-o", "size=40", "--shard-size", "4",
        "--batch-size", "4", "--workers", "0", "--split", "train"]


def _cli(data_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "EMBEDCACHE_DATA_DIR": str(data_dir)}
    return subprocess.Popen([sys.executable, "-m", "embedcache.cli", *ARGS], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _store(data_dir: Path) -> Path:
    return data_dir / "stores" / "shapes" / "effnet-lite0.h5"


def _kill_after_shards(data_dir: Path, shards: int, delay: float) -> None:
    """Start the CLI, wait until `shards` shard files exist, then SIGKILL it `delay` seconds later."""
    proc = _cli(data_dir)
    parts = Path(str(_store(data_dir)) + ".parts") / "train"
    deadline = time.monotonic() + 300
    while len(list(parts.glob("*.h5"))) < shards and not _store(data_dir).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"extract ended early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_resume_after_sigkill_is_byte_identical(tmp_path):
    reference = tmp_path / "reference"
    assert _cli(reference).wait() == 0
    n_shards = 8  # 32 train images in shards of 4
    killed = tmp_path / "killed"
    rng = np.random.default_rng(7)
    for shards in sorted(rng.choice(np.arange(1, n_shards), size=3, replace=False)):
        _kill_after_shards(killed, int(shards), float(rng.uniform(0, 0.05)))
        if _store(killed).exists():  # got to the end before the kill landed
            break
        with pytest.raises(IncompleteStoreError):
            open_store(_store(killed))
    proc = _cli(killed)
    assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
    with open_store(_store(reference)) as a, open_store(_store(killed)) as b:
        sa, sb = a.split("train"), b.split("train")
        assert len(sa) == 32
        np.testing.assert_array_equal(sa.pooled(), sb.pooled())
        np.testing.assert_array_equal(sa.token_rows(0, len(sa))[0], sb.token_rows(0, len(sb))[0])
    assert _store(reference).read_bytes() == _store(killed).read_bytes()
