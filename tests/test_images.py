"""load_image / check_text / decode_text on real encoded files of every mode, and on broken ones."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from embedcache.datasets.base import BadItemError
from embedcache.datasets.images import check_text, decode_text, load_image, to_rgb


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def px(im: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    assert im.mode == "RGB"
    return im.getpixel(xy)


def reason(source, **kw) -> str:
    with pytest.raises(BadItemError) as info:
        load_image(source, "item-7", **kw)
    assert info.value.item_id == "item-7"
    return info.value.reason


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------- conversions


def test_rgb_png_from_path_is_exact(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    out = load_image(str(path), "x")
    assert out.mode == "RGB" and out.size == (7, 9)
    np.testing.assert_array_equal(np.asarray(out), arr)


def test_grayscale_and_one_bit() -> None:
    assert px(load_image(encode(Image.new("L", (3, 3), 77)), "x")) == (77, 77, 77)
    one = Image.new("1", (2, 1), 0)
    one.putpixel((1, 0), 1)
    out = load_image(encode(one), "x")
    assert px(out, (0, 0)) == (0, 0, 0) and px(out, (1, 0)) == (255, 255, 255)


@pytest.mark.parametrize(("alpha", "expected"), [(0, (255, 255, 255)), (255, (255, 0, 0)), (128, (255, 127, 127))])
def test_rgba_composites_on_white(alpha: int, expected: tuple[int, int, int]) -> None:
    assert px(load_image(encode(Image.new("RGBA", (2, 2), (255, 0, 0, alpha))), "x")) == expected


def test_la_composites_on_white() -> None:
    assert px(load_image(encode(Image.new("LA", (2, 2), (0, 0))), "x")) == (255, 255, 255)
    assert px(load_image(encode(Image.new("LA", (2, 2), (10, 255))), "x")) == (10, 10, 10)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency(fmt: str) -> None:
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red, 1 blue
    pal.putpixel((1, 0), 1)
    out = load_image(encode(pal, fmt, transparency=0), "x")
    assert px(out, (0, 0)) == (255, 255, 255)  # the transparent index is background, not its palette red
    assert px(out, (1, 0)) == (0, 0, 255)
    assert px(load_image(encode(pal, fmt), "x"), (0, 0)) == (255, 0, 0)  # without transparency: red


def test_gray_and_rgb_colour_key_transparency() -> None:
    assert px(load_image(encode(Image.new("L", (2, 2), 7), transparency=7), "x")) == (255, 255, 255)
    rgb = Image.new("RGB", (2, 2), (7, 8, 9))
    assert px(load_image(encode(rgb, transparency=(7, 8, 9)), "x")) == (255, 255, 255)


def test_cmyk_adobe_jpeg_pure_cyan() -> None:
    data = encode(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).info.get("adobe") is not None  # PIL writes Adobe's inverted CMYK
    assert close(px(load_image(data, "x"), (8, 8)), (0, 255, 255), tol=6)


def _strip_app14(jpeg: bytes) -> bytes:
    """Remove the Adobe APP14 segment (FF EE): what a non-Adobe CMYK encoder writes."""
    start = jpeg.index(b"\xff\xee")
    length = struct.unpack(">H", jpeg[start + 2:start + 4])[0]
    return jpeg[:start] + jpeg[start + 2 + length:]


def test_cmyk_jpeg_without_adobe_marker_is_not_inverted() -> None:
    # PIL stores 255 - v; writing the inverse of cyan stores plain cyan, which without the marker means cyan.
    data = _strip_app14(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 255)), "JPEG", quality=95))
    assert "adobe" not in Image.open(io.BytesIO(data)).info
    assert close(px(load_image(data, "x"), (8, 8)), (0, 255, 255), tol=6)


def test_cmyk_tiff_is_exact() -> None:
    assert px(load_image(encode(Image.new("CMYK", (2, 2), (255, 0, 0, 0)), "TIFF"), "x")) == (0, 255, 255)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_gray_is_scaled_by_depth_not_clipped(fmt: str) -> None:
    data = encode(Image.fromarray(np.array([[65535, 32768, 0, 257]], dtype=np.uint16)), fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    np.testing.assert_array_equal(np.asarray(load_image(data, "x"))[0, :, 0], [255, 128, 0, 1])


def test_32_bit_int_gray() -> None:
    sixteen = encode(Image.fromarray(np.array([[65535, 32768]], dtype=np.int32)), "TIFF")
    assert Image.open(io.BytesIO(sixteen)).mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(sixteen, "x"))[0, :, 0], [255, 128])
    eight = encode(Image.fromarray(np.array([[200, 3]], dtype=np.int32)), "TIFF")
    np.testing.assert_array_equal(np.asarray(load_image(eight, "x"))[0, :, 0], [200, 3])


def test_float_gray() -> None:
    unit = encode(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)), "TIFF")
    assert Image.open(io.BytesIO(unit)).mode == "F"
    np.testing.assert_array_equal(np.asarray(load_image(unit, "x"))[0, :, 0], [0, 128, 255])
    wide = encode(Image.fromarray(np.array([[-5.0, 100.0, 300.0]], dtype=np.float32)), "TIFF")
    np.testing.assert_array_equal(np.asarray(load_image(wide, "x"))[0, :, 0], [0, 100, 255])
    nan = encode(Image.fromarray(np.array([[np.nan, 1.0]], dtype=np.float32)), "TIFF")
    assert "NaN" in reason(nan)


def test_exif_orientation_is_applied() -> None:
    im = Image.new("RGB", (20, 10), (255, 0, 0))
    im.paste((0, 0, 255), (10, 0, 20, 10))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 degrees clockwise
    out = load_image(encode(im, "JPEG", quality=95, exif=exif.tobytes()), "x")
    assert out.size == (10, 20)
    assert close(px(out, (5, 3)), (255, 0, 0), tol=10) and close(px(out, (5, 16)), (0, 0, 255), tol=10)


def test_unsupported_mode() -> None:
    with pytest.raises(BadItemError, match="unsupported image mode 'LAB'"):
        to_rgb(Image.new("LAB", (2, 2)), "x")


# ---------------------------------------------------------------- numpy arrays


def test_uint8_arrays() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(load_image(rgb, "x")), rgb)
    gray = np.full((4, 5), 33, dtype=np.uint8)
    assert px(load_image(gray, "x")) == (33, 33, 33)
    assert px(load_image(gray[:, :, None], "x")) == (33, 33, 33)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red at alpha 0
    assert px(load_image(rgba, "x")) == (255, 255, 255)
    rgba[..., 3] = 255
    assert px(load_image(rgba, "x")) == (255, 0, 0)


def test_uint16_bool_and_float_arrays() -> None:
    np.testing.assert_array_equal(
        np.asarray(load_image(np.array([[65535, 32768]], dtype=np.uint16), "x"))[0, :, 0], [255, 128])
    rgb16 = np.zeros((1, 1, 3), dtype=np.uint16)
    rgb16[..., 2] = 65535
    assert px(load_image(rgb16, "x")) == (0, 0, 255)
    assert px(load_image(np.ones((2, 2), dtype=bool), "x")) == (255, 255, 255)
    assert px(load_image(np.full((2, 2, 3), 0.5, dtype=np.float64), "x")) == (128, 128, 128)


def test_non_contiguous_array() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(load_image(rgb[:, ::2], "x")), rgb[:, ::2])


@pytest.mark.parametrize(("array", "expected"), [
    (np.zeros((3, 8, 8), dtype=np.uint8), "channels last"),
    (np.zeros((8, 8), dtype=np.int64), "unsupported array dtype int64"),
    (np.zeros((0, 8, 3), dtype=np.uint8), "empty image array"),
    (np.zeros((8,), dtype=np.uint8), "unsupported array shape"),
])
def test_bad_arrays(array: np.ndarray, expected: str) -> None:
    assert expected in reason(array)


def test_encoded_bytes_jpeg() -> None:
    data = encode(Image.new("RGB", (16, 16), (10, 200, 30)), "JPEG", quality=95)
    assert close(px(load_image(data, "x"), (8, 8)), (10, 200, 30), tol=4)
    assert close(px(load_image(bytearray(data), "x"), (8, 8)), (10, 200, 30), tol=4)


# ---------------------------------------------------------------- broken sources


def _photo_like(fmt: str) -> bytes:
    arr = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return encode(Image.fromarray(arr), fmt)


def test_missing_zero_byte_and_directory(tmp_path: Path) -> None:
    assert reason(str(tmp_path / "nope.jpg")).startswith("image file not found:")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert reason(str(tmp_path / "empty.jpg")).startswith("zero-byte image file:")
    assert reason(str(tmp_path)).startswith("image path is not a regular file:")
    assert reason(b"") == "empty image bytes (0 bytes)"
    assert "unsupported image source int" in reason(42)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_truncated_file_raises_instead_of_decoding_grey(tmp_path: Path, fmt: str) -> None:
    data = _photo_like(fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    assert reason(str(path)).startswith("truncated image data:")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_data() -> None:
    png = bytearray(_photo_like("PNG"))
    png[len(png) // 3: len(png) // 3 + 30] = bytes(30)  # zeroes inside the compressed IDAT stream
    assert reason(bytes(png)).startswith("corrupt image data:")
    assert reason(b"this is not an image at all").startswith("not a recognised image format")
    assert reason(_photo_like("PNG")[:30]).startswith("unreadable PNG header")


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR claims width x height (CRC fixed): a bomb's header, no pixel data decoded."""
    data = bytearray(encode(Image.new("1", (8, 8))))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


def test_over_max_pixels_is_refused_from_the_header() -> None:
    assert "8000x8000 = 64,000,000 pixels, over the limit of 50,000,000" in reason(_png_claiming(8000, 8000))
    assert "over the limit of 100" in reason(encode(Image.new("RGB", (20, 20))), max_pixels=100)


@pytest.mark.parametrize("size", [(10_000, 9_000), (20_000, 10_000)])  # PIL's warning and its error
def test_pil_decompression_bomb_guard_becomes_bad_item(size: tuple[int, int]) -> None:
    assert reason(_png_claiming(*size), max_pixels=10**12).startswith("decompression bomb refused by PIL")


def test_load_image_pickles_for_worker_processes() -> None:
    assert pickle.loads(pickle.dumps(load_image)) is load_image


def test_importing_the_package_keeps_truncated_loading_off() -> None:
    import embedcache.datasets  # noqa: F401  (every adapter module imports on package import)

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ---------------------------------------------------------------- text


def test_check_text() -> None:
    assert check_text("  a red circle \n", "c") == "a red circle"
    for bad, expected in [(None, "missing"), ("", "empty"), (" \t\n", "empty"), ("a \ufffd b", r"U\+FFFD"),
                          ("a\x00b", "NUL"), (b"bytes", "bytes, expected str")]:
        with pytest.raises(BadItemError, match=expected):
            check_text(bad, "c")  # type: ignore[arg-type]


def test_decode_text() -> None:
    assert decode_text("café".encode(), "c") == "café"
    assert decode_text(b"\xef\xbb\xbfhello", "c") == "hello"
    with pytest.raises(BadItemError, match="not valid UTF-8 at byte 2$"):
        decode_text(b"ab\xffcd", "c")
    with pytest.raises(BadItemError, match="not valid UTF-8 at byte 5$"):
        decode_text(b"\xef\xbb\xbfab\xff", "c")
    with pytest.raises(BadItemError, match="UTF-16 byte-order mark"):
        decode_text("hi".encode("utf-16"), "c")
