"""The GPU decode path of stage one: JPEG bytes read in the workers, decoded in batches on the device, preprocessed
there with the backbone's own recipe (backbones/tensor_preprocess.py).

The DataLoader workers only read a file's bytes and check its header with PIL (no pixels decoded): a baseline or
progressive JPEG in RGB or grayscale, whole (ends with EOI), upright (EXIF orientation 1 or none) and under the
pixel limit goes to the device as bytes. Everything else (CMYK, PNG, arrays, truncated or broken files, rotated
photos) takes the PIL path item by item in the same worker, so bad items fail or are skipped exactly as on the CPU
path. On the main thread, `finish_batch` decodes the batch's JPEGs with `torchvision.io.decode_jpeg(list,
device=...)` (nvJPEG on CUDA); a JPEG the device decoder refuses goes through PIL there, alone. The decode path
enters the store's attributes (`decode_attrs`) only when it is not the PIL path, so CPU-built stores keep their
fingerprints.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from embedcache.backbones.base import Encoder
from embedcache.backbones.tensor_preprocess import TensorPreprocess, preprocess_batch
from embedcache.datasets import BadItemError, Item
from embedcache.datasets.images import MAX_PIXELS, load_image
from embedcache.errors import BadInputError, UserError

DECODE_CHOICES = ("auto", "cpu", "gpu")
JPEG_SOI, JPEG_EOI = b"\xff\xd8\xff", b"\xff\xd9"
EXIF_ORIENTATION = 0x0112

# what one worker hands over per item: ("jpeg", (N,) uint8 file bytes) | ("pil", (3, h, w) float) | ("bad", reason)
Prepared = tuple[int, str, Any]


# --------------------------------------------------------------------------------- choosing the path


def check_decode(decode: str) -> None:
    """Fail early (before any model or dataset loads) for a `--decode` value that cannot run on this machine."""
    if decode not in DECODE_CHOICES:
        raise BadInputError(f"--decode {decode!r} is not a decode path; use one of {', '.join(DECODE_CHOICES)}")
    if decode == "gpu" and not torch.cuda.is_available():
        raise BadInputError("--decode gpu decodes JPEGs with nvJPEG on a CUDA GPU, but torch sees no GPU on this "
                            "machine; rerun with `--decode cpu` (or leave --decode out)", fix="--decode cpu")


def resolve_decode(decode: str, device: torch.device, encoder: Encoder, sample: Sequence[Item],
                   built_on_pil: bool = False) -> str:
    """'gpu' or 'cpu' for `--decode auto|cpu|gpu`. auto: gpu on CUDA for an image backbone with tensor
    preprocessing whose first items include JPEG files, unless a store at the path was begun on the PIL path
    (`built_on_pil`: it stays fresh). gpu where it cannot run is a BadInputError naming the fix."""
    check_decode(decode)
    if decode == "cpu" or encoder.spec.modality != "image":  # text: nothing to decode, the flag does not apply
        return "cpu"
    if decode == "gpu":
        if device.type != "cuda":
            raise BadInputError(f"--decode gpu decodes on the model's device, but the model runs on {device}; add "
                                "`--device cuda`, or use `--decode cpu`", fix="--device cuda")
        if encoder.tensor_preprocess() is None:
            raise BadInputError(f"backbone {encoder.spec.name!r} has no tensor preprocessing (only its PIL "
                                "transform); rerun with `--decode cpu`", fix="--decode cpu")
        return "gpu"
    usable = device.type == "cuda" and encoder.tensor_preprocess() is not None
    return "gpu" if usable and not built_on_pil and any(_is_jpeg(it) for it in sample) else "cpu"


def _is_jpeg(item: Item) -> bool:
    """Whether an item's source starts with the JPEG signature (a cheap look at the first bytes)."""
    src = item.image
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src[:3]) == JPEG_SOI
    if not isinstance(src, (str, os.PathLike)):
        return False
    try:
        with open(src, "rb") as f:
            return f.read(3) == JPEG_SOI
    except OSError:
        return False


def decode_attrs(device: torch.device) -> dict[str, Any]:
    """The store attribute `decode` of the tensor path (absent on the PIL path): the decoder and torchvision's
    version, whose JPEG decoding and antialiased resizing differ slightly from PIL's."""
    import torchvision

    decoder = "nvjpeg" if device.type == "cuda" else "libjpeg-turbo"
    return {"path": "tensor", "decoder": decoder, "device": device.type, "torchvision": torchvision.__version__}


def begun_on_pil(path: Path) -> bool:
    """Whether a store (final file or shards in progress) at `path` was begun on the PIL path: `--decode auto`
    then keeps that path, so stores built before the GPU path existed stay fresh."""
    from embedcache.store import open_store, parts_dir

    attrs = None
    if path.exists():
        try:
            with open_store(path) as store:
                attrs = store.attrs
        except (UserError, OSError):  # damaged: the writer deals with it
            attrs = None
    manifest = parts_dir(path) / "manifest.json"
    if attrs is None and manifest.is_file():
        try:
            attrs = json.loads(manifest.read_text()).get("attrs")
        except (OSError, ValueError, AttributeError):
            attrs = None
    return isinstance(attrs, dict) and "decode" not in attrs


# --------------------------------------------------------------------------------- in the workers


def jpeg_bytes(source: Any, max_pixels: int = MAX_PIXELS) -> torch.Tensor | None:
    """A source's file bytes as a (N,) uint8 tensor when the tensor path decodes it exactly as PIL would, else None
    (PIL then takes it). Reads the header only: mode, size, EXIF orientation; never raises."""
    try:
        raw = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()
    except (OSError, TypeError):
        return None
    if not raw.startswith(JPEG_SOI) or not raw.endswith(JPEG_EOI):  # no EOI: truncated, or trailing data
        return None
    try:
        with warnings.catch_warnings():  # a worker process: catch_warnings is safe here
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as im:
                ok = (im.format == "JPEG" and im.mode in ("RGB", "L") and im.width * im.height <= max_pixels
                      and im.getexif().get(EXIF_ORIENTATION, 1) == 1)
    except Exception:  # noqa: BLE001 - any header PIL cannot read goes to PIL's path, which names the problem
        return None
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8) if ok else None


class TensorDecodeItems(torch.utils.data.Dataset):
    """Item -> (position, "jpeg" | "pil" | "bad", bytes | tensor | reason). Runs in worker processes."""

    def __init__(self, items: list[Item], transform: Callable[[Any], torch.Tensor]) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, pos: int) -> Prepared:
        item = self.items[pos]
        if item.error:
            return pos, "bad", item.error
        data = None if item.image is None else jpeg_bytes(item.image)
        if data is not None:
            return pos, "jpeg", data
        try:
            return pos, "pil", self.transform(load_image(item.image, item.id))
        except BadItemError as exc:
            return pos, "bad", exc.reason


def collate_prepared(batch: list[Prepared]) -> list[Prepared]:
    """The batch as it came (bytes of varied lengths do not stack); pin_memory pins each tensor in it."""
    return batch


# --------------------------------------------------------------------------------- on the main thread


def decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Decode file bytes on `device` ((C, H, W) uint8, C in {1, 3}); one batched call, and where the batch fails,
    one call per image, with None for each image the decoder refuses."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not data:
        return []
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image io for TorchCodec; it still works
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out: list[torch.Tensor | None] = []
            for one in data:
                try:
                    out.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    out.append(None)
            return out


def finish_batch(
    prepared: list[Prepared], items: list[Item], prep: TensorPreprocess, device: torch.device,
    transform: Callable[[Any], torch.Tensor],
) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    """A worker's batch -> (positions, (B, 3, h, w) inputs on `device` in position order, [(position, reason)]),
    the triple the PIL path's collate gives. JPEGs the device refuses are decoded by PIL here, one by one."""
    jpegs = [(pos, data) for pos, kind, data in prepared if kind == "jpeg"]
    decoded = decode_jpegs([data for _, data in jpegs], device)
    ready: dict[int, torch.Tensor] = {}
    bad = [(pos, reason) for pos, kind, reason in prepared if kind == "bad"]
    took = [(pos, image) for (pos, _), image in zip(jpegs, decoded, strict=True) if image is not None]
    if took:  # (n, 3, h, w) float, normalised in one op
        ready.update(zip([pos for pos, _ in took], preprocess_batch([image for _, image in took], prep), strict=True))
    for pos in sorted({pos for pos, _ in jpegs} - set(ready)):  # refused by the device decoder: PIL, alone
        try:
            ready[pos] = transform(load_image(items[pos].image, items[pos].id)).to(device)
        except BadItemError as exc:
            bad.append((pos, exc.reason))
    for pos, kind, x in prepared:
        if kind == "pil":
            ready[pos] = x.to(device, non_blocking=True)
    positions = sorted(ready)
    return positions, torch.stack([ready[p] for p in positions]) if positions else None, sorted(bad)


# --------------------------------------------------------------------------------- agreement with PIL


@dataclass(frozen=True)
class DecodeCheck:
    """Per-item agreement of the tensor decode path with the PIL path for one encoder."""

    cosines: tuple[float, ...]  # cosine(pooled via tensor path, pooled via PIL path), one per source, in order
    fallback: tuple[int, ...]  # indices the tensor path handed to PIL (both sides then decode with PIL)

    @property
    def worst(self) -> float:
        return min(self.cosines) if self.cosines else 1.0

    def ok(self, threshold: float = 0.999) -> bool:
        """Whether every item agrees to at least `threshold` cosine (the issue's bar: 0.999)."""
        return self.worst >= threshold


def compare_decode_paths(
    encoder: Encoder, sources: Sequence[Any], *, device: torch.device | str | None = None, batch_size: int = 32,
) -> DecodeCheck:
    """Embed each image source (a path or bytes) through the PIL path and through the tensor decode path on `device`
    (default: the encoder's), in the same batches, and return the per-item cosine of the pooled vectors. Sources
    PIL cannot read raise BadItemError. The GPU benchmark calls this with a CUDA encoder; the tests on CPU."""
    prep = encoder.tensor_preprocess()
    if prep is None:
        raise BadInputError(f"backbone {encoder.spec.name!r} has no tensor preprocessing to compare")
    dev = torch.device(device) if device is not None else getattr(encoder, "device", torch.device("cpu"))
    transform = encoder.image_transform()
    items = [Item(id=f"item-{i}", image=src) for i, src in enumerate(sources)]
    cosines: list[float] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        pil = torch.stack([transform(load_image(it.image, it.id)) for it in chunk])
        prepared = [(i, "jpeg", data) if (data := jpeg_bytes(it.image)) is not None else
                    (i, "pil", pil[i]) for i, it in enumerate(chunk)]
        _, tensor, bad = finish_batch(prepared, chunk, prep, dev, transform)
        if bad:
            raise BadItemError(chunk[bad[0][0]].id, bad[0][1])
        a, b = encoder.encode(pil.to(encoder.device)).pooled, encoder.encode(tensor.to(encoder.device)).pooled
        cosines += torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).tolist()
    fallback = tuple(i for i, src in enumerate(sources) if jpeg_bytes(src) is None)
    return DecodeCheck(tuple(cosines), fallback)
