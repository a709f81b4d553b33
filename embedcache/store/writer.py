"""Crash-safe sharded writing: StoreWriter fills `<path>.parts/` shard by shard and merges complete
splits into a temporary file renamed over the store (see embedcache/store/__init__.py).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from embedcache.errors import BadInputError
from embedcache.fingerprint import fingerprint
from embedcache.store.integrity import check_final, final_problems, shard_damage
from embedcache.store.layout import (
    DTYPES,
    DamagedStoreError,
    ShardData,
    StoreError,
    StoreLockedError,
    _check_shard,
    _count_shards,
    _extract_cmd,
    _read_pairs,
    _shard_files,
    _stale_error,
    _write_attrs,
    _write_shard_file,
    _write_split,
    full_attrs,
    parts_dir,
)

# ---------------------------------------------------------------------------------------------- files


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(src: Path, dst: Path) -> None:
    """fsync src, rename it over dst atomically, fsync the directory so the rename survives power loss."""
    _fsync(src)
    os.replace(src, dst)
    _fsync(dst.parent)


def _try_lock(path: Path, blocking: bool) -> int | None:
    """An fd holding an exclusive flock on path (created if needed), or None if another holder has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = _try_lock(path, blocking=True)
    try:
        yield
    finally:
        os.close(fd)  # closing the fd releases the flock



# ---------------------------------------------------------------------------------------------- writer


class StoreWriter:
    """Fills one store, shard by shard, crash-safely; part=(k, n) writes only the shards with index % n == k.

    Holds an exclusive flock on ``<path>.parts/lock-<k>-of-<n>`` while open, so one process per part; the OS
    drops it if the process dies. A final file with another fingerprint is refused (StaleStoreError) unless
    ``force``, in which case it is replaced when the first split is finished. Shards left by a run with another
    fingerprint are discarded. ``force`` only overrides staleness: a store with this very fingerprint is kept.
    """

    def __init__(self, path: Path, attrs: dict[str, Any], *, force: bool = False,
                 part: tuple[int, int] = (0, 1)) -> None:
        k, n = part
        if not 0 <= k < n:
            raise BadInputError(f"part must be (k, n) with 0 <= k < n; found {part}")
        self.path, self.part, self.force = Path(path), (k, n), force
        self.attrs = full_attrs(attrs)
        self.fingerprint = fingerprint(self.attrs)
        self._dtype = DTYPES[str(self.attrs.get("dtype", "float16"))]
        self._checked: tuple[tuple[int, int, int], dict[str, Any]] | None = None  # see _final_attrs
        self._final_usable()  # stale and not force: raise now rather than after hours of extraction
        self.parts = parts_dir(self.path)
        self.parts.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = self._lock_part()
        try:
            with _locked(self.parts / "merge.lock"):
                self._drop_damaged_final()
                self._reconcile_manifest()
                self._drop_leftovers()
            self._drop_own_tmp()
        except BaseException:
            self.close()
            raise

    def _lock_part(self) -> int:
        k, n = self.part
        lock = self.parts / f"lock-{k}-of-{n}"
        fd = _try_lock(lock, blocking=False)
        if fd is None:
            owner = lock.read_text().strip() or "unknown pid"
            raise StoreLockedError(f"another writer (pid and host: {owner}) holds {lock}: part {k} of {n} of "
                                   f"{self.path} is being written. Wait for it, or stop that process.")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        return fd

    def _reconcile_manifest(self) -> None:
        manifest = self.parts / "manifest.json"
        old = _read_manifest(manifest)
        if old.get("fingerprint") == self.fingerprint:
            return
        busy = self._other_writers()
        if busy:
            raise StoreLockedError(f"{self.parts} is being filled with other settings (fingerprint "
                                   f"{old.get('fingerprint')}, writers holding {busy}); wait for them or stop them "
                                   "before writing this store with new settings")
        for d in self.parts.iterdir():  # shards of other settings: useless, and they must never be merged
            if d.is_dir():
                shutil.rmtree(d)
        tmp = self.parts / f"manifest.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "attrs": self.attrs}, sort_keys=True, indent=1))
        _replace(tmp, manifest)  # after the discard: a kill in between discards the rest next time

    def _drop_damaged_final(self) -> None:
        """With force, a final file of this very fingerprint is kept only if every value checks out (finite, the
        recorded sha256): --force rebuilds whatever state the file is in, at the cost of one read of it."""
        if self.force and self._final_fingerprint() == self.fingerprint and final_problems(self.path):
            self.path.unlink()

    def _drop_leftovers(self) -> None:
        """What a kill can leave behind (call under the merge lock, so no merge is running): half-built final
        files, and the shards of splits that were merged but not yet deleted when the process died."""
        for stale in self.path.parent.glob(f"{self.path.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        for d in self.parts.iterdir():
            if d.is_dir() and self.has_split(d.name):
                self._drop_shards(d.name)

    def _other_writers(self) -> list[str]:
        mine, busy = f"lock-{self.part[0]}-of-{self.part[1]}", []
        for lock in sorted(self.parts.glob("lock-*")):
            fd = None if lock.name == mine else _try_lock(lock, blocking=False)
            if fd is None and lock.name != mine:
                busy.append(f"{lock.name} ({lock.read_text().strip()})")
            elif fd is not None:
                os.close(fd)
        return busy

    def _drop_own_tmp(self) -> None:
        k, n = self.part  # a .tmp of our indices is a shard whose writer died in flight: we hold its lock
        for tmp in self.parts.glob("*/*.h5.tmp"):
            if int(tmp.name.split(".")[0]) % n == k:
                tmp.unlink(missing_ok=True)

    def _final_usable(self) -> bool:
        """True if the final file exists with our fingerprint; False if absent, or stale and force is set."""
        try:
            old = self._final_attrs()
        except DamagedStoreError:
            if self.force:  # whatever state the file is in, --force rebuilds it
                return False
            raise
        if old is None:
            return False
        if old.get("fingerprint") == self.fingerprint:
            return True
        if self.force:
            return False
        raise _stale_error(self.path, old, {**self.attrs, "fingerprint": self.fingerprint})

    def _final_attrs(self) -> dict[str, Any] | None:
        """check_final's attrs of the final file (None when absent, DamagedStoreError when damaged), checked once per
        version of the file: a writer asks for each split several times, and each check reads every split's ids. A
        merge replaces the file by rename (a new inode), so (inode, size, mtime) names the version."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._checked is None or self._checked[0] != key:
            self._checked = (key, check_final(self.path))
        return self._checked[1]

    def _final_fingerprint(self) -> str | None:
        """The fingerprint of a sound final file; None when it is absent or damaged (it is then never kept)."""
        try:
            old = self._final_attrs()
        except DamagedStoreError:
            return None
        return None if old is None else old.get("fingerprint")

    def has_split(self, split: str) -> bool:
        """True if the final store has this split complete, with this writer's fingerprint."""
        if self._final_fingerprint() != self.fingerprint:
            return False
        with h5py.File(self.path, "r") as f:
            return split in f

    def done_shards(self, split: str) -> set[int]:
        """Indices of the shards of this split already on disk (written by any part). A shard that does not open
        or lacks its datasets (damaged on disk: shards appear only whole) is deleted, so it is encoded again."""
        done = set()
        for index, shard in _shard_files(self.parts / split).items():
            if shard_damage(shard):
                shard.unlink(missing_ok=True)
            else:
                done.add(index)
        return done

    def write_shard(self, split: str, index: int, data: ShardData) -> None:
        """Write one shard atomically: to ``<index:06d>.h5.tmp``, fsync, then rename into place."""
        k, n = self.part
        if index % n != k or index < 0:
            raise BadInputError(f"part {k} of {n} writes shards with index % {n} == {k}; found index {index}")
        if not split or "/" in split or split.startswith("."):
            raise BadInputError(f"split names must be plain names; found {split!r}")
        arrays = _check_shard(data, self._dtype)
        want_tokens = self.attrs.get("tokens")
        if want_tokens is not None and bool(want_tokens) != ("tokens" in arrays) and len(arrays["ids"]):
            raise BadInputError(f"store attrs say tokens={want_tokens} but the shard has tokens={'tokens' in arrays}")
        split_dir = self.parts / split
        split_dir.mkdir(exist_ok=True)
        final = split_dir / f"{index:06d}.h5"
        tmp = split_dir / f"{index:06d}.h5.tmp"
        _ensure_space(tmp, sum(getattr(v, "nbytes", 0) for v in arrays.values())
                      + sum(len(s) + 16 for s in arrays["ids"]) + 64 * len(arrays["skipped"]))
        with _cleaned_up(tmp):
            _write_shard_file(tmp, arrays, {"fingerprint": self.fingerprint, "split": split, "index": index})
            _replace(tmp, final)

    def finish_split(self, split: str, num_shards: int,
                     pairs: tuple[list[str], list[str], np.ndarray] | None = None) -> bool:
        """Merge the split into the final file if all its shards 0..num_shards-1 exist; True once it is there.

        Any part may call it; a merge lock serialises them. The new file (existing complete splits of this
        fingerprint + this split's shards in index order + pairs) is built beside the final path and renamed
        over it, then the split's shards are deleted. False if shards are still missing (other parts).
        """
        with _locked(self.parts / "merge.lock"):
            if self.has_split(split):
                self._drop_shards(split)  # a kill between rename and cleanup leaves them behind
                return True
            shards = _shard_files(self.parts / split)
            if any(i not in shards for i in range(num_shards)):
                return False
            self._check_shard_fingerprints([shards[i] for i in range(num_shards)])
            self._drop_leftovers()
            self._merge(split, [shards[i] for i in range(num_shards)], pairs)
            self._drop_shards(split)
        return True

    def _check_shard_fingerprints(self, files: list[Path]) -> None:
        for p in files:
            damage = shard_damage(p)
            if damage:
                p.unlink(missing_ok=True)
                raise StoreError(f"shard {p} is damaged ({damage}); it was deleted: rerun `{_extract_cmd(self.path)}` "
                                 "to encode it again")
            with h5py.File(p, "r") as f:
                found = f.attrs.get("fingerprint")
            if found != self.fingerprint:
                p.unlink()
                raise StoreError(f"shard {p} has fingerprint {found}, expected {self.fingerprint} (written by a "
                                 f"writer with other settings); it was deleted: rerun {_extract_cmd(self.path)}")

    def _merge(self, split: str, shard_files: list[Path], pairs: tuple | None) -> None:
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        keep = self._final_usable()  # a stale final (force) contributes nothing
        _ensure_space(tmp, sum(p.stat().st_size for p in shard_files) + (self.path.stat().st_size if keep else 0))
        with _cleaned_up(tmp), h5py.File(self.path, "r") if keep else _no_file() as old, h5py.File(tmp, "w") as out:
            # sorted: the bytes must not depend on the order in which splits were finished
            names = sorted({split, *(old.keys() if old is not None else ())})
            for name in names:
                if name == split:
                    _write_split(out.create_group(name), list(shard_files), pairs, self._dtype)
                else:
                    _write_split(out.create_group(name), [old[name]], _read_pairs(old[name]), self._dtype)
            _write_attrs(out, {**self.attrs, "fingerprint": self.fingerprint, "complete": True})
            out.close()  # before the rename, inside the clean-up
            _replace(tmp, self.path)

    def _drop_shards(self, split: str) -> None:
        d = self.parts / split
        if d.is_dir():
            for p in d.iterdir():
                p.unlink(missing_ok=True)
            with suppress(OSError):  # a stray .tmp of another part appeared meanwhile: leave the directory
                d.rmdir()

    def close(self) -> None:
        """Release the part lock; remove the .parts directory once nothing is pending and no writer is left."""
        if self._lock_fd is None:
            return
        os.close(self._lock_fd)
        self._lock_fd = None
        if _count_shards(self.parts) == 0 and self._final_fingerprint() == self.fingerprint:
            self._remove_parts()

    def _remove_parts(self) -> None:
        # Only when we can take every lock: another writer still running keeps the directory.
        fds = []
        try:
            for lock in sorted(self.parts.glob("lock-*")) + [self.parts / "merge.lock"]:
                fd = _try_lock(lock, blocking=False)
                if fd is None:
                    return
                fds.append(fd)
            if _count_shards(self.parts) == 0:
                shutil.rmtree(self.parts)
        finally:
            for fd in fds:
                os.close(fd)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_manifest(path: Path) -> dict[str, Any]:
    """The parts' manifest, or {} when absent or unreadable (its shards are then discarded as of other settings)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


@contextmanager
def _no_file() -> Iterator[None]:
    yield None


@contextmanager
def _cleaned_up(tmp: Path) -> Iterator[None]:
    """Remove `tmp` if the block fails (a full disk, a kill signal turned exception): no temp file is left. An
    OSError becomes a StoreError saying what to free; finished shards and the old final file stay as they were."""
    try:
        yield
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "No space left" in str(exc)
        if isinstance(exc, OSError) or full:  # h5py reports a failed flush as RuntimeError
            raise _write_error(tmp, "the disk is full" if full else (getattr(exc, "strerror", None) or str(exc)),
                               full) from None
        raise


def _write_error(tmp: Path, why: str, full: bool) -> StoreError:
    return StoreError(f"cannot write {tmp.name} in {tmp.parent}: {why}; nothing partial was left behind. "
                      f"{'Free space there' if full else 'Fix that'} and rerun extract: finished shards are kept "
                      "and it resumes")


def _ensure_space(tmp: Path, need: int) -> None:
    """Refuse before writing when the file system lacks `need` bytes (+20% and 256 KiB of HDF5 overhead): a
    write that runs out of space half way makes h5py fail noisily while closing the file."""
    free = shutil.disk_usage(tmp.parent).free
    if free < need * 1.2 + (256 << 10):
        raise _write_error(tmp, f"the disk is full (about {need:,} bytes needed, {free:,} free)", True)

