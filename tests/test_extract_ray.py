"""Stage one on Ray (one local cluster for the whole run): the same store bytes as one process for 1, 2 and 3
workers, workers SIGKILLed mid-shard, a killed driver resumed, --on-error with planted bad items, and the
one-line message when Ray is absent."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import embedcache
from embedcache.cli import app
from embedcache.extract import ExtractCfg, ExtractError, RunCfg, extract
from embedcache.extract.ray_engine import INSTALL_HINT, ClusterCfg, extract_on_ray
from embedcache.store import open_store

SIZE = {"size": 12}  # shapes: 12 images, 36 captions in train
ROOT = Path(embedcache.__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_cluster():
    """One local 2-CPU cluster for the test run; its workers import this checkout's embedcache."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'embedcache[ray]')")
    with pytest.MonkeyPatch.context() as mp:  # read when the cluster's processes start, then restored
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDCACHE_DATA_DIR", str(tmp_path))
    return tmp_path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pool(workers: int) -> ClusterCfg:
    # fractions of the 2 test CPUs, so that 3 workers fit on them
    return ClusterCfg(max_workers=workers, cpus_per_worker=0.5)


def _reference(cfg: ExtractCfg, run: RunCfg) -> str:
    """The store bytes of the same extraction in this process, under another data dir."""
    path, _ = extract(cfg, run)
    return _sha(path)


def test_without_ray_the_flag_says_how_to_install(data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ExtractError, match=r"pip install 'embedcache\[ray\]'"):
        extract_on_ray(ExtractCfg("shapes", "minilm"), RunCfg(), ClusterCfg())
    result = CliRunner().invoke(app, ["extract", "shapes", "--model", "minilm", "--ray"])
    assert result.exit_code == 1 and INSTALL_HINT in " ".join(result.output.split())


_REFERENCE: dict[str, str] = {}  # model -> store sha256 of the one-process extraction, computed once


@pytest.mark.parametrize(("model", "workers"), [
    ("minilm", 1),
    pytest.param("minilm", 2, marks=pytest.mark.slow),
    pytest.param("minilm", 3, marks=pytest.mark.slow),
    pytest.param("effnet-lite0", 2, marks=pytest.mark.slow),  # images: decoded and preprocessed by the workers
])
def test_same_bytes_as_one_process_for_1_2_3_workers(ray_cluster, data_dir, model, workers):
    run = RunCfg(batch_size=4, workers=0)
    cfg = ExtractCfg("shapes", model, data_dir=data_dir / "ray", dataset_options=SIZE, shard_size=8, tokens=True)
    if model not in _REFERENCE:
        _REFERENCE[model] = _reference(replace(cfg, data_dir=data_dir / "one"), run)
    path, reports = extract_on_ray(cfg, run, _pool(workers))
    assert _sha(path) == _REFERENCE[model]
    names = {w.name.split()[0] for r in reports for w in r.workers}
    assert len(names) == workers  # more shards than workers: every worker had some
    assert sum(w.items for r in reports for w in r.workers) == sum(r.rows for r in reports)


def _encoding_workers(owner: int) -> list[int]:
    """pids of this cluster's actors busy in ShardWorker.encode (Ray titles a busy worker `ray::Class.method`)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes()
            if title.startswith(b"ray::ShardWorker.encode") and _descends_from(int(proc.name), owner):
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


def _descends_from(pid: int, owner: int) -> bool:
    while pid > 1:
        if pid == owner:
            return True
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


@pytest.mark.slow
def test_workers_killed_mid_shard_are_replaced_and_their_shards_redone(ray_cluster, data_dir):
    run = RunCfg(batch_size=2, workers=0)
    base = ExtractCfg("shapes", "minilm", dataset_options={"size": 24}, shard_size=4)
    want = _reference(replace(base, data_dir=data_dir / "one"), run)
    kills, done = [], threading.Event()
    rng = random.Random(12)

    def killer() -> None:  # three SIGKILLs at random moments, each of a worker inside a shard
        while len(kills) < 3 and not done.is_set():
            time.sleep(rng.uniform(0.2, 1.0))
            busy = _encoding_workers(os.getpid())
            if busy:
                os.kill(rng.choice(busy), signal.SIGKILL)
                kills.append(time.time())

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        path, reports = extract_on_ray(replace(base, data_dir=data_dir / "ray"), run, _pool(2))
    finally:
        done.set()
        thread.join()
    assert kills, "no worker was caught mid-shard"
    assert 1 <= sum(w.restarts for r in reports for w in r.workers) <= len(kills)
    assert _sha(path) == want  # no row missing, none twice


@pytest.mark.slow
def test_a_killed_driver_rerun_keeps_its_finished_shards(ray_cluster, data_dir):
    run = RunCfg(batch_size=2, workers=0)
    cfg = ExtractCfg("shapes", "minilm", data_dir=data_dir / "ray", dataset_options={"size": 24}, shard_size=4)
    want = _reference(replace(cfg, data_dir=data_dir / "one"), run)
    cmd = [sys.executable, "-m", "embedcache.cli", "extract", "shapes", "--model", "minilm", "-o", "size=24",
           "--shard-size", "4", "--batch-size", "2", "--workers", "0", "--data-dir", str(data_dir / "ray"),
           "--ray", "--ray-address", ray_cluster, "--max-workers", "1", "--cpus-per-worker", "0.5"]
    train = data_dir / "ray" / "stores" / "shapes" / "minilm.h5.parts" / "train"
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while len(list(train.glob("*.h5"))) < 3:
            assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the driver wrote no shards in time"
            time.sleep(0.1)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    kept = [int(f.name.split(".")[0]) for f in train.glob("*.h5")]
    path, reports = extract_on_ray(cfg, run, _pool(1))
    report = next(r for r in reports if r.split == "train")
    # the rerun encoded only what the kept shards did not hold (4 rows each, the last one maybe fewer)
    assert sum(w.items for w in report.workers) == report.rows - sum(min(4, report.rows - 4 * i) for i in kept)
    assert _sha(path) == want


def _messy_folder(root: Path) -> None:
    """An imagefolder with good images and planted bad ones: truncated, not an image, empty."""
    for cls, n in (("circle", 3), ("square", 3)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (16 + i, 16), (40 * i, 90, 200)).save(root / cls / f"{i}.png")
    good = (root / "circle" / "0.png").read_bytes()
    (root / "circle" / "trunc.png").write_bytes(good[: len(good) // 2])
    (root / "square" / "text.jpg").write_text("not an image")
    (root / "square" / "empty.png").write_bytes(b"")


def test_on_error_follows_one_process(ray_cluster, data_dir, tmp_path):
    _messy_folder(tmp_path / "raw")
    cfg = ExtractCfg("imagefolder", "effnet-lite0", root=tmp_path / "raw", store_name="messy", shard_size=4)
    skip = RunCfg(on_error="skip", workers=0)
    want = _reference(replace(cfg, data_dir=data_dir / "one"), skip)
    path, reports = extract_on_ray(replace(cfg, data_dir=data_dir / "ray"), skip, _pool(1))
    assert _sha(path) == want
    with open_store(path) as store:
        assert sorted(dict(store.split("all").skipped)) == ["circle/trunc.png", "square/empty.png", "square/text.jpg"]
    with pytest.raises(ExtractError, match=r"(?s)'circle/trunc.png'.*on-error skip"):
        extract_on_ray(replace(cfg, data_dir=data_dir / "fail"), RunCfg(workers=0), _pool(1))
