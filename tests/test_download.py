"""`download` against a real HTTP server on 127.0.0.1 serving fixture archives under the official file names."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from embedcache.datasets import create_dataset
from embedcache.datasets import download as dl
from embedcache.registry import Registry


@dataclasses.dataclass
class Server:
    """What the test server serves and what it saw."""

    url: str
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    cut_after: dict[str, int] = dataclasses.field(default_factory=dict)  # first GET of a file stops after n bytes
    honour_range: bool = True
    requests: list[tuple[str, str | None]] = dataclasses.field(default_factory=list)  # (file, Range header)


def _handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            name = self.path.rsplit("/", 1)[-1]
            state.requests.append((name, self.headers.get("Range")))
            data = state.files.get(name)
            if data is None:
                self.send_error(404)
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and state.honour_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            body = data[start:]
            if name in state.cut_after:  # simulate a dropped connection mid-transfer
                body = body[: state.cut_after.pop(name)]
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state := Server("")))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/mirror"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _with_md5(monkeypatch: pytest.MonkeyPatch, name: str, md5s: dict[str, str]) -> None:
    """The real source of `name`, with the fixture archives' md5s in place of the published ones."""
    real = dl.SOURCES.get(name)
    files = tuple(dataclasses.replace(f, md5=md5s.get(f.filename, f.md5)) for f in real.files)
    sources: Registry[dl.Source] = Registry("download source")
    for other in dl.SOURCES.names():
        sources.register(other, dl.SOURCES.get(other))
    sources._items[name] = dataclasses.replace(real, files=files)
    monkeypatch.setattr(dl, "SOURCES", sources)


def _cifar10_tgz() -> bytes:
    def pickled(obj: dict) -> bytes:
        return pickle.dumps(obj, protocol=2)

    members = {f"data_batch_{b}": pickled({"data": np.full((1, 3072), b, np.uint8), "labels": [b]})
               for b in range(1, 6)}
    members["test_batch"] = pickled({"data": np.zeros((2, 3072), np.uint8), "labels": [3, 7]})
    members["batches.meta"] = pickled({"label_names": [f"c{i}" for i in range(10)]})
    return tar_gz({f"cifar-10-batches-py/{name}": data for name, data in members.items()})


def tar_gz(members: dict[str, bytes]) -> bytes:
    """A .tar.gz in memory holding `members` (name -> bytes) as regular files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_cifar10_downloads_verifies_unpacks_and_loads(tmp_path: Path, server: Server,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    tgz = _cifar10_tgz()
    server.files["cifar-10-python.tar.gz"] = tgz
    _with_md5(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": _md5(tgz)})
    dest = dl.download("cifar10", tmp_path / "raw" / "cifar10", base_url=server.url)
    assert (dest / "cifar-10-batches-py" / "batches.meta").is_file()
    assert not (dest / "cifar-10-python.tar.gz").exists() and (dest / ".cifar-10-python.tar.gz.done").exists()
    assert [it.label for it in create_dataset("cifar10", root=dest).load_split("test").images] == [3, 7]
    dl.download("cifar10", dest, base_url=server.url)  # done: no second request
    assert server.requests == [("cifar-10-python.tar.gz", None)]


def test_env_base_and_gz_files_kept_as_published(tmp_path: Path, server: Server,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def idx(a: np.ndarray) -> bytes:
        return gzip.compress(bytes([0, 0, 8, a.ndim]) + b"".join(n.to_bytes(4, "big") for n in a.shape) + a.tobytes())

    for prefix, n in (("train", 3), ("t10k", 2)):
        server.files[f"{prefix}-images-idx3-ubyte.gz"] = idx(np.zeros((n, 28, 28), np.uint8))
        server.files[f"{prefix}-labels-idx1-ubyte.gz"] = idx(np.arange(n, dtype=np.uint8))
    _with_md5(monkeypatch, "fashion-mnist", {k: _md5(v) for k, v in server.files.items()})
    monkeypatch.setenv(dl.ENV_BASE, server.url)
    dest = dl.download("fashion-mnist", tmp_path / "fm")
    assert sorted(p.name for p in dest.glob("*.gz")) == sorted(server.files)
    assert [it.label for it in create_dataset("fashion-mnist", root=dest).load_split("test").images] == [0, 1]


def test_interrupted_download_resumes_with_range(tmp_path: Path, server: Server,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tgz = _cifar10_tgz()
    server.files["cifar-10-python.tar.gz"] = tgz
    server.cut_after["cifar-10-python.tar.gz"] = 100
    _with_md5(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": _md5(tgz)})
    with pytest.raises(dl.DownloadError, match=f"100 of {len(tgz)} bytes; rerun the same command to resume"):
        dl.download("cifar10", tmp_path, base_url=server.url)
    assert (tmp_path / "cifar-10-python.tar.gz.part").read_bytes() == tgz[:100]
    dl.download("cifar10", tmp_path, base_url=server.url)
    assert server.requests[-1] == ("cifar-10-python.tar.gz", "bytes=100-")
    assert (tmp_path / "cifar-10-batches-py" / "test_batch").is_file()
    assert not (tmp_path / "cifar-10-python.tar.gz.part").exists()


def test_server_without_range_support_restarts_cleanly(tmp_path: Path, server: Server,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tgz = _cifar10_tgz()
    server.files["cifar-10-python.tar.gz"], server.honour_range = tgz, False
    _with_md5(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": _md5(tgz)})
    (tmp_path / "cifar-10-python.tar.gz.part").write_bytes(b"stale bytes from another file")
    dl.download("cifar10", tmp_path, base_url=server.url)  # 200 instead of 206: the .part is rewritten
    assert (tmp_path / "cifar-10-batches-py" / "batches.meta").is_file()


def test_checksum_mismatch_deletes_the_file(tmp_path: Path, server: Server) -> None:
    server.files["cifar-10-python.tar.gz"] = _cifar10_tgz()  # the real source: published md5 c58f3010...
    with pytest.raises(dl.ChecksumError, match="md5 .* does not match the published c58f30108f718f92721af3b95e74349a"):
        dl.download("cifar10", tmp_path, base_url=server.url)
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()
    assert not (tmp_path / ".cifar-10-python.tar.gz.done").exists()
    assert not (tmp_path / "cifar-10-batches-py").exists()


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A .zip in memory holding `members` (name -> bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("text_folder_in_zip", [True, False])
def test_flickr8k_zips_unpack_into_the_published_layout(tmp_path: Path, server: Server,
                                                        text_folder_in_zip: bool) -> None:
    jpg = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (4, 4)).save(jpg, "JPEG")
    server.files["Flickr8k_Dataset.zip"] = zip_bytes({"Flicker8k_Dataset/1.jpg": jpg.getvalue(),
                                                 "__MACOSX/Flicker8k_Dataset/._1.jpg": b"junk"})
    prefix = "Flickr8k_text/" if text_folder_in_zip else ""
    server.files["Flickr8k_text.zip"] = zip_bytes({
        f"{prefix}Flickr8k.token.txt": "".join(f"1.jpg#{k}\tcap {k}\n" for k in range(5)).encode(),
        f"{prefix}Flickr_8k.trainImages.txt": b"1.jpg\n", f"{prefix}Flickr_8k.devImages.txt": b"",
        f"{prefix}Flickr_8k.testImages.txt": b""})
    dest = dl.download("flickr8k", tmp_path, base_url=server.url)
    assert (dest / "Flickr8k_text" / "Flickr8k.token.txt").is_file() and not (dest / "__MACOSX").exists()
    train = create_dataset("flickr8k", root=dest).load_split("train")
    assert len(train.images) == 1 and len(train.texts) == 5


def test_http_error_and_request_only_datasets(tmp_path: Path, server: Server) -> None:
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download("stsb", tmp_path, base_url=server.url)
    with pytest.raises(dl.NoDownloadError, match="mcrlab.net") as err:
        dl.download("mvsa-single", tmp_path / "mvsa")
    assert f"{tmp_path / 'mvsa'}/labelResultAll.txt" in str(err.value)
    with pytest.raises(dl.NoDownloadError, match="headacheboy"):
        dl.download("mmsd", tmp_path)


def test_default_destination_is_the_adapters_raw_dir(tmp_path: Path) -> None:
    assert dl.default_dest("coco-2017", tmp_path) == tmp_path / "raw" / "coco"
    assert dl.default_dest("cifar10", tmp_path) == tmp_path / "raw" / "cifar10"


def test_extract_strips_a_folder_named_like_the_target_and_refuses_non_archives(tmp_path: Path) -> None:
    archive = tmp_path / "text.tar.gz"
    with tarfile.open(archive, mode="w:gz") as tf:
        info = tarfile.TarInfo("Flickr8k_text/Flickr8k.token.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"a\tb"))
    target = tmp_path / "out" / "Flickr8k_text"
    assert dl.extract(archive, target, strip_same_name=True) == target
    assert (target / "Flickr8k.token.txt").read_bytes() == b"a\tb" and not (target / "Flickr8k_text").exists()
    dl.extract(archive, tmp_path / "kept")  # without strip_same_name the archive's folder stays
    assert (tmp_path / "kept" / "Flickr8k_text" / "Flickr8k.token.txt").is_file()
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive at all")
    with pytest.raises(dl.DownloadError, match="not a zip or tar archive"):
        dl.extract(junk, tmp_path / "nowhere")
