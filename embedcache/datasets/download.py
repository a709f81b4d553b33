"""`embedcache download NAME`: fetch a dataset's official archives into its published layout.

Each source lists its files (URL, published checksum where one exists, and where the archive unpacks to).
Downloads resume: bytes go to ``<file>.part`` and a rerun asks the server for the rest (HTTP Range). A
finished file is checked against its md5/sha256 (a mismatch deletes it and fails), then unpacked into ``dest``
and deleted; a ``.<file>.done`` marker makes a rerun skip it. The base URL of every file can be replaced
(argument `base_url`, else $EMBEDCACHE_DOWNLOAD_BASE) by a mirror serving the same file names.

Each adapter module registers its dataset's sources beside the adapter (`register_source`), with the
provenance of its URLs and checksums; importing `embedcache.datasets` imports every adapter module.
"""

from __future__ import annotations

import hashlib
import http.client
import lzma
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from embedcache import __version__
from embedcache.errors import UserError
from embedcache.registry import Registry

ENV_BASE = "EMBEDCACHE_DOWNLOAD_BASE"
CHUNK = 1 << 20


class DownloadError(UserError, RuntimeError):
    """A download failed (network, HTTP status, incomplete file); the message says how to retry."""


class ChecksumError(DownloadError):
    """A downloaded file does not match its published checksum (it has been deleted)."""


class NoDownloadError(DownloadError):
    """The dataset has no direct download; the message says where to request it and the layout to unpack to."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source: its URL, published checksum, and the folder (relative to dest) it unpacks into
    (None: keep the file as downloaded)."""

    url: str
    md5: str | None = None
    sha256: str | None = None
    extract_to: str | None = "."

    @property
    def filename(self) -> str:
        return unquote(PurePosixPath(urlparse(self.url).path).name)

    @property
    def checksums(self) -> tuple[tuple[str, str], ...]:
        """(algorithm, published hex digest) for each checksum the file has."""
        return tuple((algo, want) for algo, want in (("md5", self.md5), ("sha256", self.sha256)) if want)


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from: its files, or (no direct download) where to request it."""

    name: str
    files: tuple[RemoteFile, ...] = ()
    request: str | None = None
    layout: str = ""
    dataset: str = ""  # the adapter that reads it (default: `name`); its raw dir is the default destination


SOURCES: Registry[Source] = Registry("download source")


def register_source(*sources: Source) -> None:
    """Register each source under its name; adapter modules call this beside the adapter that reads it."""
    for source in sources:
        SOURCES.register(source.name, source)


def default_dest(name: str, data_dir: str | Path | None = None) -> Path:
    """Where `download(name, ...)` should put its files so the adapter finds them: <data-dir>/raw/<dataset>."""
    from embedcache.paths import raw_dir

    return raw_dir(SOURCES.get(name).dataset or name, data_dir)


def download(name: str, dest: Path, base_url: str | None = None) -> Path:
    """Fetch dataset `name` into `dest` in its published layout and return `dest` (pass it as --root, or use
    <data-dir>/raw/<name> as dest so the adapter finds it by itself). Resumes partial downloads, checks
    published checksums, unpacks archives; raises NoDownloadError for datasets that must be requested."""
    source = SOURCES.get(name)
    dest = Path(dest)
    if source.request:
        raise NoDownloadError(f"dataset {name!r} has no direct download: {source.request}.\n"
                              f"Unpack it so that: {source.layout.replace('<dest>', str(dest))}")
    base = base_url or os.environ.get(ENV_BASE) or None
    dest.mkdir(parents=True, exist_ok=True)
    for remote in source.files:
        _fetch_one(name, remote, dest, base)
    return dest


def _fetch_one(name: str, remote: RemoteFile, dest: Path, base: str | None) -> None:
    done = dest / f".{remote.filename}.done"
    if done.exists():
        return
    url = f"{base.rstrip('/')}/{remote.filename}" if base else remote.url
    path = dest / remote.filename
    if not (path.is_file() and _checksum_ok(remote, path)):
        fetch(url, path)
        verify(remote, path, name)
    if remote.extract_to is not None:
        extract(path, dest / remote.extract_to, strip_same_name=remote.extract_to != ".")
        path.unlink()
    done.touch()


def fetch(url: str, path: Path) -> Path:
    """GET `url` into `path` through `<path>.part`, resuming a partial .part with an HTTP Range request."""
    part = path.with_name(path.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"embedcache/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the .part is complete
            part.replace(path)
            return path
        raise DownloadError(f"GET {url}: HTTP {exc.code} {exc.reason}. Retry later, or set {ENV_BASE} to a mirror "
                            f"serving {path.name}, or put the file in {path.parent} yourself.") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"GET {url}: {getattr(exc, 'reason', exc)}. Check the network, or set {ENV_BASE} to a "
                            f"mirror, or put {path.name} in {path.parent} yourself.") from None
    with resp:
        resumed = resp.status == 206  # else the server ignored Range and sends the whole file again
        length = resp.headers.get("Content-Length")
        total = (have if resumed else 0) + int(length) if length is not None else None
        try:
            _stream(resp, part, "ab" if resumed else "wb", have if resumed else 0, total, path.name)
        except (http.client.HTTPException, OSError) as exc:
            raise DownloadError(f"GET {url}: interrupted after {part.stat().st_size} bytes ({exc!r}); "
                                f"rerun the same command to resume.") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"GET {url}: got {size} of {total} bytes; rerun the same command to resume.")
    part.replace(path)
    return path


def _stream(resp: Any, part: Path, mode: str, start: int, total: int | None, label: str) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar, open(part, mode) as out:
        task = bar.add_task(label, total=total, completed=start)
        while chunk := resp.read(CHUNK):
            out.write(chunk)
            bar.advance(task, len(chunk))


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _checksum_ok(remote: RemoteFile, path: Path) -> bool:
    return all(_digest(path, algo) == want for algo, want in remote.checksums)


def verify(remote: RemoteFile, path: Path, name: str) -> None:
    """Raise ChecksumError (and delete `path`) when it does not match the published md5/sha256."""
    for algo, want in remote.checksums:
        if (found := _digest(path, algo)) != want:
            path.unlink()
            raise ChecksumError(
                f"{path.name}: {algo} {found} does not match the published {want}; the file was deleted. "
                f"Rerun `embedcache download {name}` to fetch it again (a mirror set by {ENV_BASE} must serve "
                f"the official file).")


def extract(archive: Path, target: Path, strip_same_name: bool = False) -> Path:
    """Unpack a .zip / .tar(.gz) into `target`; __MACOSX entries are skipped. With `strip_same_name`, an archive
    whose members all sit in one folder named like `target` unpacks into target's parent (no target/target).
    Each archive is opened once (a .tar.gz is only listed beforehand when `strip_same_name` needs its names).
    Members are unpacked into a hidden staging folder and moved into place only when the whole archive read
    cleanly: a truncated or corrupt archive raises DownloadError and leaves nothing partial behind."""
    target.mkdir(parents=True, exist_ok=True)
    stage = target / f".unpacking-{os.getpid()}"
    try:
        dest = _unpack(archive, stage, target, strip_same_name)
        _move_into(stage, dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError) as exc:
        opened = "could not be opened" not in str(exc)  # tarfile's "neither gz, bz2, xz nor tar" (several lines)
        why = f"truncated or corrupt ({type(exc).__name__}: {str(exc).splitlines()[0]})" if opened else "not a zip " \
            "or tar archive"
        raise DownloadError(f"{archive}: {why}; nothing was unpacked. Delete the archive and rerun the download") \
            from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target


def _unpack(archive: Path, stage: Path, target: Path, strip_same_name: bool) -> Path:
    """Unpack into `stage`; return where its contents belong (target, or its parent: see `extract`)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:  # extract() sanitises '..' and absolute names
            names = [n for n in zf.namelist() if not n.startswith("__MACOSX/")]
            zf.extractall(stage, members=names)
        return _into(target, names, strip_same_name)
    with tarfile.open(archive) as tf:
        names = tf.getnames() if strip_same_name else []
        tf.extractall(stage, filter="data")  # refuses links and paths outside
    return _into(target, names, strip_same_name)


def _move_into(src: Path, dst: Path) -> None:
    """Move the tree `src` into `dst`, merging with folders already there (renames: same file system)."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        there = dst / entry.name
        if entry.is_dir() and there.is_dir():
            _move_into(entry, there)
        else:
            os.replace(entry, there)


def _into(target: Path, names: list[str], strip_same_name: bool) -> Path:
    """target's parent when `strip_same_name` and every member sits in one folder named like target, else target."""
    return target.parent if strip_same_name and {n.split("/", 1)[0] for n in names} == {target.name} else target
