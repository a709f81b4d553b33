"""Stage one on a Ray cluster: the driver plans and writes the store, a pool of Ray actors encodes whole shards.

Ray Core actors, not Ray Data: the unit of work is a whole shard (its batches, hence its numbers, are those of
the in-process engine), each actor loads the encoder once and keeps it, and the driver writes every returned
shard through the same `run_plan` and StoreWriter as one process does, so the store's bytes do not depend on
how many workers there were. A worker killed mid-shard is restarted by Ray (max_restarts=-1) and the driver
hands its shard out again; nothing of a lost shard reached the store. Workers re-plan from the plain
`ExtractCfg` (raw data at the same path on every node) and must reach the driver's fingerprint.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from embedcache.backbones.common import is_random
from embedcache.datasets import Item
from embedcache.errors import UserError
from embedcache.extract.engine import encode_shards, run_plan, split_shards
from embedcache.extract.plan import (
    ExtractCfg,
    ExtractError,
    ExtractPlan,
    Progress,
    RunCfg,
    SplitReport,
    WorkerStat,
    plan_extraction,
)
from embedcache.fingerprint import diff_keys
from embedcache.paths import data_dir
from embedcache.store import ShardData, store_fingerprint

INSTALL_HINT = "--ray needs Ray, which is not installed: pip install 'embedcache[ray]'"
# Passed on to the workers when set on the driver: where weights are found and whether the hub may be asked.
_ENV_PASSED = ("HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HOME")
MAX_LOSSES = 3  # a shard whose worker dies more often than this fails the run (a poison shard, not bad luck)


@dataclass(frozen=True)
class ClusterCfg:
    """Where and how wide: `address` None starts or finds a cluster as ray.init() does, "auto" joins a running
    one, else "host:port" or "ray://host:port"; one worker per `gpus_per_worker` GPUs (or `cpus_per_worker`
    CPUs when 0), at most `max_workers` and never more than there are shards. `threads`: torch threads per
    worker (None: the driver's, so CPU numbers equal a one-process run on the driver)."""

    address: str | None = None
    max_workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    threads: int | None = None


def import_ray() -> Any:
    """The ray module, or an ExtractError naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise ExtractError(INSTALL_HINT, fix="pip install 'embedcache[ray]'") from None
    return ray


def connect(cluster: ClusterCfg) -> float:
    """Join (or start) the cluster unless this process already has; returns the seconds it took."""
    ray = import_ray()
    start = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - start


def extract_on_ray(
    cfg: ExtractCfg, run: RunCfg, cluster: ClusterCfg, *, progress: Progress | None = None,
) -> tuple[Path, list[SplitReport]]:
    """`extract` with the shards encoded by a pool of Ray workers: same plan, same writer, same bytes.

    Each report's `workers` names every worker's shards, rows and items/s for that split.
    """
    connect(cluster)
    cfg = portable(cfg, cluster)
    plan = plan_extraction(cfg)
    with ShardPool(cfg, run, cluster, plan) as pool:
        reports = run_plan(plan, run, progress=progress, encode=pool)
    for r in reports:
        r.workers = list(pool.stats.get(r.split, {}).values())
    return plan.path, reports


def portable(cfg: ExtractCfg, cluster: ClusterCfg) -> ExtractCfg:
    """The cfg as every node must read it: absolute paths (a worker's cwd is not the driver's), and the device
    the workers compute on (it enters the fingerprint through the compute dtype)."""
    device = cfg.device or ("cuda" if cluster.gpus_per_worker else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ExtractError(f"the workers compute on {device} and the driver plans the store on the same device, "
                           "but this driver has no GPU: start it on a GPU node (e.g. the head node)")

    def absolute(p: str | Path | None) -> str | None:
        return None if p is None else str(Path(p).expanduser().resolve())

    keep = cfg.weights is None or ":" in str(cfg.weights) or is_random(cfg.weights)  # not paths
    weights = cfg.weights if keep else absolute(cfg.weights)
    return replace(cfg, root=absolute(cfg.root), data_dir=absolute(data_dir(cfg.data_dir)), weights=weights,
                   device=device, dataset_options=dict(cfg.dataset_options))


# --------------------------------------------------------------------------------------------- worker


class ShardWorker:
    """A Ray actor: plans the same store from the cfg once (dataset listing, encoder), then encodes whole shards.

    A failure to plan is kept and raised by `ready`/`encode`, so Ray does not restart the actor for it.
    """

    def __init__(self, cfg: ExtractCfg, run: RunCfg, threads: int) -> None:
        torch.set_num_threads(threads)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.run, self.shards, self.error = run, {}, None
        try:
            self.plan: ExtractPlan = plan_extraction(cfg)
        except Exception as exc:  # raised on the driver by ready()
            self.error = exc

    def ready(self) -> tuple[str, dict[str, Any]]:
        """This worker's name and store attrs (the driver compares their fingerprint with its own)."""
        if self.error is not None:
            raise self.error
        return self.name, self.plan.attrs

    def encode(self, split: str, index: int) -> Iterator[int | tuple[ShardData, str, float]]:
        """Yields the rows done after each batch, then (shard data, worker name, busy seconds)."""
        if self.error is not None:
            raise self.error
        if split not in self.shards:
            self.shards[split] = split_shards(self.plan, split)
        shard = {index: self.shards[split][index]}
        events: queue.SimpleQueue = queue.SimpleQueue()
        start = time.perf_counter()
        # The encoder runs on a thread so that this generator can hand each batch's count to the driver
        # while the shard is still being encoded (encode_shards reports rows through a callback).
        threading.Thread(target=_encode_into, args=(self.plan, split, shard, self.run, events), daemon=True).start()
        while not isinstance(event := events.get(), ShardData):
            if isinstance(event, BaseException):
                raise event
            if event:
                yield event
        yield event, self.name, time.perf_counter() - start


def _encode_into(plan: ExtractPlan, split: str, shard: dict[int, list[Item]], run: RunCfg,
                 events: queue.SimpleQueue) -> None:
    try:
        for _, data in encode_shards(plan, split, shard, run, events.put):
            events.put(data)
    except BaseException as exc:  # re-raised by the generator, hence on the driver
        events.put(exc)


# --------------------------------------------------------------------------------------------- driver


class ShardPool:
    """The driver's side: a fixed pool of ShardWorker actors, used as run_plan's `encode`.

    Shards go to idle workers; finished ones are yielded in completion order (the writer files them by index).
    A worker lost mid-shard takes its rows back from the progress view and its shard goes back to the queue;
    Ray restarts the actor, and calls made meanwhile wait for it.
    """

    def __init__(self, cfg: ExtractCfg, run: RunCfg, cluster: ClusterCfg, plan: ExtractPlan) -> None:
        self.ray = import_ray()
        shards = sum(len(split_shards(plan, s)) for s in plan.splits)
        n = max(1, min(shards, cluster.max_workers or self._capacity(cluster)))
        actor = self.ray.remote(num_cpus=cluster.cpus_per_worker, num_gpus=cluster.gpus_per_worker,
                                max_restarts=-1, max_task_retries=0)(ShardWorker)
        env = {k: os.environ[k] for k in _ENV_PASSED if k in os.environ}
        # CPU kernels (oneDNN convolutions) give other last bits with another thread count: workers use the
        # driver's, so that their numbers are those of this command run in one process here.
        threads = cluster.threads or torch.get_num_threads()
        self.actors = [actor.options(runtime_env={"env_vars": env}).remote(cfg, run, threads) for _ in range(n)]
        self.names = [f"w{i}" for i in range(n)]
        self.alive = [True] * n
        self.stats: dict[str, dict[int, WorkerStat]] = {}
        try:
            self.startup_s = self._ready(store_fingerprint(plan.attrs), plan.attrs)
        except BaseException:
            self.__exit__()
            raise

    def _capacity(self, cluster: ClusterCfg) -> int:
        res = self.ray.cluster_resources()
        if cluster.gpus_per_worker:
            return int(res.get("GPU", 0) // cluster.gpus_per_worker)
        return int(res.get("CPU", 1) // cluster.cpus_per_worker)

    def _ready(self, fingerprint: str, attrs: dict[str, Any]) -> float:
        """Wait until every worker has planned; its fingerprint must be the driver's. Returns the seconds."""
        start = time.perf_counter()
        for slot, ref in enumerate([a.ready.remote() for a in self.actors]):
            name, theirs = self._get(ref)
            self.names[slot] = f"w{slot} {name}"
            if store_fingerprint(theirs) != fingerprint:
                raise ExtractError(f"worker {name} plans another store than the driver (differs in: "
                                   f"{'; '.join(diff_keys(attrs, theirs))}); install the same versions and "
                                   "raw data on every node")
        return time.perf_counter() - start

    def _get(self, ref: Any) -> Any:
        """ray.get, raising our own errors (a bad item, a missing dataset) as themselves rather than wrapped."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, UserError):
                raise cause from None
            raise

    def __call__(self, plan: ExtractPlan, split: str, shards: dict[int, list[Item]], run: RunCfg,
                 advance: Callable[..., None]) -> Iterator[tuple[int, ShardData]]:
        q = _Queue(deque(shards), deque(range(len(self.actors))), [0.0] * len(self.actors))
        while q.todo or q.running:
            for slot in q.free_slots():
                index = q.todo.popleft()
                q.running[self.actors[slot].encode.remote(split, index)] = [slot, index, 0]
            if not q.running:
                time.sleep(0.2)  # every free worker is restarting
                continue
            ready, _ = self.ray.wait(list(q.running), num_returns=1, timeout=0.5)
            for gen in ready:
                slot, index, rows = q.running[gen]
                try:
                    event = self._get(next(gen))
                except (self.ray.exceptions.RayActorError, self.ray.exceptions.WorkerCrashedError):
                    self._lost(q, gen, split, advance)
                    continue
                self.alive[slot] = True
                if isinstance(event, int):  # rows done by one more batch
                    q.running[gen][2] += event
                    advance(event, workers=self._alive())
                    continue
                del q.running[gen]
                q.idle.append(slot)
                data, name, seconds = event
                st = self._stat(split, slot)
                st.name, st.shards, st.items, st.seconds = f"w{slot} {name}", st.shards + 1, st.items + rows, \
                    st.seconds + seconds
                yield index, data

    def _lost(self, q: _Queue, gen: Any, split: str, advance: Callable[..., None]) -> None:
        """A worker died mid-shard, or refused the call while Ray restarts it: the shard goes back to the queue
        and its rows are taken back from the view; the worker gets calls again after a pause."""
        slot, index, rows = q.running.pop(gen)
        if self.alive[slot]:  # one death, one restart (however many calls it then refuses)
            self.alive[slot] = False
            self._stat(split, slot).restarts += 1
            q.losses[index] = q.losses.get(index, 0) + 1
            if q.losses[index] > MAX_LOSSES:
                raise ExtractError(f"shard {index} of split {split!r} killed its worker {q.losses[index]} times "
                                   f"(last {self.names[slot]}); out of memory? try a smaller --batch-size")
        advance(-rows, workers=self._alive())
        q.todo.appendleft(index)
        q.idle.append(slot)
        q.not_before[slot] = time.monotonic() + 0.5

    def _stat(self, split: str, slot: int) -> WorkerStat:
        return self.stats.setdefault(split, {}).setdefault(slot, WorkerStat(self.names[slot]))

    def _alive(self) -> str:
        return f"{sum(self.alive)}/{len(self.alive)}"

    def __enter__(self) -> ShardPool:
        return self

    def __exit__(self, *exc: object) -> None:
        for actor in self.actors:  # shards still running (an error elsewhere) are abandoned, not written
            self.ray.kill(actor)


@dataclass
class _Queue:
    """One split's dispatch state: shards to do, free workers, calls in flight, restart pauses, losses."""

    todo: deque[int]
    idle: deque[int]
    not_before: list[float]  # per worker: no call before this time.monotonic() (it is restarting)
    running: dict[Any, list[int]] = field(default_factory=dict)  # generator -> [worker, shard, rows so far]
    losses: dict[int, int] = field(default_factory=dict)  # shard -> deaths of its workers

    def free_slots(self) -> list[int]:
        """Idle workers past their pause, at most one per shard still to do (taken off the idle queue)."""
        now = time.monotonic()
        slots = [s for s in self.idle if self.not_before[s] <= now][:len(self.todo)]
        for s in slots:
            self.idle.remove(s)
        return slots
