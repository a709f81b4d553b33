"""Robust loading of one image or caption: every source becomes an RGB PIL image or a clean string, or a
BadItemError whose reason says what is wrong with that one item.

Plain module-level functions only, so they pickle into DataLoader worker processes. Truncated files
must raise: PIL's `ImageFile.LOAD_TRUNCATED_IMAGES` stays False (nothing here sets it), otherwise a cut
JPEG silently decodes into a grey lower half and gets embedded as if it were real.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from embedcache.datasets.base import BadItemError, ImageSource

WHITE = (255, 255, 255)
MAX_PIXELS = 50_000_000  # load_image's default decompression-bomb limit
UTF8_BOM = b"\xef\xbb\xbf"


# ---------------------------------------------------------------- mode conversion (PIL image -> RGB)


def _composite_on_white(im: Image.Image) -> Image.Image:
    """Any mode with alpha -> RGB over white: transparent pixels are background, not black."""
    rgba = im.convert("RGBA")
    out = Image.new("RGB", rgba.size, WHITE)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _from_gray_array(a: np.ndarray) -> Image.Image:
    """(H, W) uint8 -> RGB."""
    return Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8)).convert("RGB")


def _scale_uint16(a: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 by the 16-bit depth (65535 -> 255, 32768 -> 128), never by clipping."""
    return np.rint(a.astype(np.float32) / 257.0).astype(np.uint8)


def _scale_float(a: np.ndarray, item_id: str) -> np.ndarray:
    """Float pixels: [0, 1] is scaled to 0..255; anything else is taken on the 0..255 scale and clipped."""
    if not np.isfinite(a).all():
        raise BadItemError(item_id, "float image contains NaN or infinite values")
    if a.size and a.min() >= 0.0 and a.max() <= 1.0:
        a = a * 255.0
    return np.rint(np.clip(a, 0.0, 255.0)).astype(np.uint8)


def _convert_i16(im: Image.Image, item_id: str) -> Image.Image:
    """16-bit grayscale (I;16, I;16B, ...): scale by the 16-bit depth."""
    return _from_gray_array(_scale_uint16(np.asarray(im)))


def _convert_i32(im: Image.Image, item_id: str) -> Image.Image:
    """32-bit integer grayscale: 0..255 is 8-bit data, 0..65535 is 16-bit data (how old Pillow opened
    16-bit PNGs); anything wider is min-max scaled, since its depth is not recorded anywhere."""
    a = np.asarray(im).astype(np.int64)
    lo, hi = int(a.min()), int(a.max())
    if lo >= 0 and hi <= 255:
        return _from_gray_array(a)
    if lo >= 0 and hi <= 65535:
        return _from_gray_array(_scale_uint16(a))
    return _from_gray_array(np.rint((a - lo) * (255.0 / (hi - lo))))


def _convert_float(im: Image.Image, item_id: str) -> Image.Image:
    return _from_gray_array(_scale_float(np.asarray(im, dtype=np.float32), item_id))


def _undo_false_adobe_inversion(im: Image.Image) -> Image.Image:
    """PIL reads every CMYK JPEG with Adobe's inverted polarity; a JPEG without the Adobe APP14 marker stores
    plain CMYK, so PIL's reading of it is inverted and is flipped back here (needs `format`: before any copy)."""
    if im.mode == "CMYK" and im.format == "JPEG" and "adobe" not in im.info:
        return im.point(lambda v: 255 - v)
    return im


def _convert_plain(im: Image.Image, item_id: str) -> Image.Image:
    """Modes without alpha that PIL converts exactly (L, 1, YCbCr, ...); a tRNS colour key means alpha."""
    if "transparency" in im.info:
        return _composite_on_white(im)
    return im.convert("RGB")


def _convert_alpha(im: Image.Image, item_id: str) -> Image.Image:
    return _composite_on_white(im)


def _convert_la_premultiplied(im: Image.Image, item_id: str) -> Image.Image:
    """La (premultiplied) has no direct PIL conversion: un-premultiply through RGBa -> RGBA."""
    la = np.asarray(im).astype(np.float32)  # (H, W, 2): premultiplied L, alpha
    alpha = la[..., 1:2]
    gray = np.where(alpha > 0, la[..., :1] * 255.0 / np.maximum(alpha, 1.0), 0.0)
    rgba = np.concatenate([np.repeat(gray, 3, axis=2), alpha], axis=2)
    return _composite_on_white(Image.fromarray(np.rint(np.clip(rgba, 0, 255)).astype(np.uint8)))


# Registry of mode -> converter: a mode missing here is an unsupported mode (e.g. LAB, whose conversion
# needs a colour profile), reported by name instead of guessed.
CONVERTERS: dict[str, Callable[[Image.Image, str], Image.Image]] = {
    "RGB": _convert_plain,
    "L": _convert_plain,
    "1": _convert_plain,
    "P": _convert_plain,
    "RGBX": _convert_plain,
    "YCbCr": _convert_plain,
    "HSV": _convert_plain,
    "RGBA": _convert_alpha,
    "RGBa": _convert_alpha,
    "LA": _convert_alpha,
    "PA": _convert_alpha,
    "La": _convert_la_premultiplied,
    "CMYK": _convert_plain,
    "I;16": _convert_i16,
    "I;16L": _convert_i16,
    "I;16B": _convert_i16,
    "I;16N": _convert_i16,
    "I": _convert_i32,
    "F": _convert_float,
}


def to_rgb(im: Image.Image, item_id: str) -> Image.Image:
    """Convert a decoded PIL image of any supported mode to RGB (see CONVERTERS)."""
    converter = CONVERTERS.get(im.mode)
    if converter is None:
        raise BadItemError(item_id, f"unsupported image mode {im.mode!r}; supported: {', '.join(CONVERTERS)}")
    if im.mode == "RGB" and "transparency" not in im.info:
        return im
    return converter(im, item_id)


# ---------------------------------------------------------------- numpy arrays


def _array_to_uint8(a: np.ndarray, item_id: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return _scale_uint16(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        return _scale_float(a.astype(np.float32), item_id)
    raise BadItemError(
        item_id, f"unsupported array dtype {a.dtype}; expected uint8, uint16, bool or float (cast with .astype)"
    )


def _from_array(a: np.ndarray, item_id: str, max_pixels: int) -> Image.Image:
    """(H, W) / (H, W, 1|2|3|4) arrays -> RGB; 2 and 4 channels carry alpha and composite on white."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)):
        raise BadItemError(
            item_id, f"unsupported array shape {a.shape}; expected (H, W) or (H, W, C) with C in 1..4 (channels last)"
        )
    height, width = a.shape[:2]
    if height == 0 or width == 0:
        raise BadItemError(item_id, f"empty image array of shape {a.shape}")
    _check_pixels(width, height, max_pixels, item_id)
    im = Image.fromarray(np.ascontiguousarray(_array_to_uint8(a, item_id)))  # L, LA, RGB or RGBA
    return to_rgb(im, item_id)


# ---------------------------------------------------------------- files and bytes


def _check_pixels(width: int, height: int, max_pixels: int, item_id: str) -> None:
    if width * height > max_pixels:
        raise BadItemError(
            item_id,
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(possible decompression bomb; raise max_pixels if the image is genuine)",
        )


def _open_source(source: ImageSource | os.PathLike, item_id: str) -> io.BytesIO | Path:
    """Bytes -> a buffer, paths -> a checked Path; everything else is refused."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise BadItemError(item_id, "empty image bytes (0 bytes)")
        return io.BytesIO(bytes(source))
    if not isinstance(source, (str, os.PathLike)):
        raise BadItemError(
            item_id, f"unsupported image source {type(source).__name__}; expected a path, bytes or a numpy array"
        )
    path = Path(source)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadItemError(item_id, f"image file not found: {path}") from None
    except OSError as err:
        raise BadItemError(item_id, f"cannot read image file {path}: {err.strerror or err}") from None
    if not path.is_file():
        raise BadItemError(item_id, f"image path is not a regular file: {path}")
    if size == 0:
        raise BadItemError(item_id, f"zero-byte image file: {path}")
    return path


def _exif_transpose(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation. A malformed EXIF block leaves the pixels as stored: they are still valid."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - PIL raises many types for bad EXIF; orientation is then unknown
        return im


def _head(fp: io.BytesIO | Path, n: int = 12) -> bytes:
    if isinstance(fp, io.BytesIO):
        return fp.getvalue()[:n]
    with open(fp, "rb") as f:
        return f.read(n)


# File signatures, to tell "a PNG whose header is cut or broken" from "not an image at all".
MAGIC = {
    b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"
}


def _unidentified_reason(head: bytes) -> str:
    for magic, fmt in MAGIC.items():
        if head.startswith(magic):
            return f"unreadable {fmt} header (truncated or corrupt file)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "unreadable WEBP header (truncated or corrupt file)"
    return f"not a recognised image format ({len(head)}-byte header matches no image signature)"


def _os_error_reason(err: OSError, fp: io.BytesIO | Path) -> str:
    """OSError from opening or decoding: an unreadable file, or truncated / corrupt data."""
    if isinstance(err, (PermissionError, FileNotFoundError, IsADirectoryError)):
        return f"cannot read image file {fp}: {err.strerror or err}"
    kind = "truncated" if "truncated" in str(err).lower() else "corrupt"
    return f"{kind} image data: {err}"


def _decode(fp: io.BytesIO | Path, item_id: str, max_pixels: int) -> Image.Image:
    # PIL's own bomb guard warns (and errors at 2x) inside Image.open: the warning is made an error so
    # that it too becomes a BadItemError. Safe in worker processes; catch_warnings is not thread-safe.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(fp) as im:
            _check_pixels(im.width, im.height, max_pixels, item_id)  # header only: nothing decoded yet
            im.load()  # inside the try of the caller: truncated and corrupt data raise here
            out = to_rgb(_exif_transpose(_undo_false_adobe_inversion(im)), item_id)
            return out.copy() if out is im else out  # closing `im` invalidates its pixels


def load_image(source: ImageSource, item_id: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Return `source` (a path, encoded bytes, or a uint8/uint16/float/bool array (H, W) or (H, W, 1..4)) as an
    RGB PIL image with its EXIF orientation applied; alpha composites on white, 16-bit data is scaled by its
    depth. Raise BadItemError(item_id, reason) for a missing, unreadable, zero-byte, corrupt or truncated file,
    an image over `max_pixels` (checked from the header before decoding) and unsupported modes or arrays."""
    if isinstance(source, np.ndarray):
        return _from_array(source, item_id, max_pixels)
    fp = _open_source(source, item_id)
    try:
        return _decode(fp, item_id, max_pixels)
    except BadItemError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadItemError(item_id, f"decompression bomb refused by PIL: {err}") from None
    except UnidentifiedImageError:
        raise BadItemError(item_id, _unidentified_reason(_head(fp))) from None
    except OSError as err:
        raise BadItemError(item_id, _os_error_reason(err, fp)) from None
    except Exception as err:  # noqa: BLE001 - decoders of untrusted data raise SyntaxError, ValueError, ...
        raise BadItemError(item_id, f"corrupt image data: {type(err).__name__}: {err}") from None


# ---------------------------------------------------------------- text


def check_text(text: str | None, item_id: str) -> str:
    """Return the caption stripped of surrounding whitespace; raise BadItemError for None, a non-string,
    an empty or whitespace-only caption, or one holding U+FFFD (it was decoded from invalid bytes) or NUL."""
    if text is None:
        raise BadItemError(item_id, "caption is missing (None)")
    if not isinstance(text, str):
        raise BadItemError(item_id, f"caption is a {type(text).__name__}, expected str")
    stripped = text.strip()
    if not stripped:
        raise BadItemError(item_id, "caption is empty or whitespace only")
    if "\ufffd" in stripped:
        pos = stripped.index("\ufffd")
        raise BadItemError(item_id, f"caption contains U+FFFD replacement characters (first at char {pos})")
    if "\x00" in stripped:
        raise BadItemError(item_id, f"caption contains NUL characters (first at char {stripped.index(chr(0))})")
    try:  # a lone surrogate (valid JSON "\\udcff") has no UTF-8 form: tokenizers raise on it mid-batch
        stripped.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadItemError(item_id, f"caption contains a lone surrogate U+{ord(stripped[err.start]):04X} at char "
                                    f"{err.start} (not encodable text)") from None
    return stripped


def decode_text(raw: bytes, item_id: str) -> str:
    """Decode a caption's bytes as strict UTF-8, dropping a leading UTF-8 byte-order mark; raise
    BadItemError("caption is not valid UTF-8 at byte N") with N counted in `raw`."""
    offset = len(UTF8_BOM) if raw.startswith(UTF8_BOM) else 0
    try:
        return bytes(raw[offset:]).decode("utf-8")
    except UnicodeDecodeError as err:
        hint = " (it starts with a UTF-16 byte-order mark)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise BadItemError(item_id, f"caption is not valid UTF-8 at byte {offset + err.start}{hint}") from None
