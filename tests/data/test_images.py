"""Image validation and normalisation: decode fully, refuse bombs, upright, RGB, capped."""

from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageFile

from vistune.data.images import (
    check_image_header,
    normalise_image,
    open_checked_image,
    store_image,
)
from vistune.errors import ImageError

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None, None]
    pixels = np.concatenate(np.broadcast_arrays(x, y, np.full_like(x, 90)), axis=2)
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def test_clean_jpeg_keeps_its_bytes_and_hash() -> None:
    data = encode(gradient(40, 30), "JPEG", quality=90)
    result = normalise_image(data)
    assert result.data == data and result.suffix == ".jpg"
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (result.width, result.height) == (40, 30)


def test_exif_orientation_is_applied() -> None:
    image = gradient(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    result = normalise_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert (result.width, result.height) == (20, 40)
    shown = Image.open(io.BytesIO(result.data))
    assert shown.getexif().get(0x0112, 1) == 1
    # The top-left of the displayed image is the source's bottom-left (dark x, bright y).
    top_left = np.asarray(shown)[1, 1]
    assert top_left[0] < 60 and top_left[1] > 190


def test_transparency_flattened_on_white_and_lossless_kept_png() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 5, 10))
    result = normalise_image(encode(rgba, "PNG"))
    assert result.suffix == ".png"
    pixels = np.asarray(Image.open(io.BytesIO(result.data)))
    assert pixels.shape == (10, 10, 3)
    assert tuple(pixels[5, 2]) == (0, 0, 255) and tuple(pixels[5, 8]) == (255, 255, 255)


def test_longest_side_is_capped() -> None:
    result = normalise_image(encode(gradient(300, 120), "PNG"), max_side=100)
    assert (result.width, result.height) == (100, 40)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"<html><body>Not found</body></html>", "not an image"),
        (encode(gradient(64, 64), "JPEG")[:300], "cannot decode"),
        (encode(gradient(64, 64), "JPEG")[:-200], "cannot decode"),
        (encode(gradient(64, 64), "PNG")[:120], "cannot decode"),
    ],
)
def test_bad_bytes_raise_image_error(data, message) -> None:
    with pytest.raises(ImageError, match=message):
        normalise_image(data)


def test_decompression_bomb_is_an_error_not_a_warning() -> None:
    bomb = encode(Image.new("1", (10_000, 9_000)), "PNG")  # 90 M pixels in ~12 kB
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match="decompression bomb"):
        normalise_image(bomb)
    with pytest.raises(ImageError, match="decompression bomb"):
        normalise_image(encode(gradient(100, 100), "PNG"), max_pixels=5_000)


def test_identical_images_are_stored_once(tmp_path) -> None:
    data = encode(gradient(16, 16), "PNG")
    first = store_image(normalise_image(data), tmp_path)
    second = store_image(normalise_image(data), tmp_path)
    assert first == second
    assert [p.name for p in tmp_path.iterdir()] == [first]


def broken_exif_png() -> bytes:
    """A valid PNG whose eXIf chunk has a bad TIFF header: Pillow raises SyntaxError."""
    bad_exif = b"Exif\x00\x00M\x80\x00*\x00\x00\x00\x08\x00\x00"
    return encode(gradient(8, 8), "PNG", exif=bad_exif)


def test_broken_exif_is_an_image_error_not_a_syntax_error() -> None:
    with pytest.raises(ImageError, match="SyntaxError") as caught:
        normalise_image(broken_exif_png())
    assert caught.value.kind == "corrupt"


@pytest.mark.parametrize(
    "raised", [TypeError("bad tile"), IndexError("x"), struct.error("y"), EOFError(), KeyError(1)]
)
def test_any_decoder_exception_type_becomes_image_error(monkeypatch, raised) -> None:
    """Pillow's decoders raise many types; the gate turns every one into ImageError."""

    def failing_load(self):
        raise raised

    monkeypatch.setattr(ImageFile.ImageFile, "load", failing_load)
    data = encode(gradient(8, 8), "TIFF")
    for gate in (normalise_image, open_checked_image):
        with pytest.raises(ImageError, match=type(raised).__name__):
            gate(data)


def test_header_check_and_kinds() -> None:
    assert check_image_header(encode(gradient(30, 20), "BMP")) == (30, 20)
    with pytest.raises(ImageError) as caught:
        check_image_header(encode(Image.new("L", (400, 400)), "PNG"), max_pixels=10_000)
    assert caught.value.kind == "too_large"
    with pytest.raises(ImageError) as caught:
        check_image_header(b"<html>sold out</html>")
    assert caught.value.kind == "not_image"
    with pytest.raises(ImageError) as caught:
        check_image_header(encode(gradient(8, 8), "PPM"))
    assert caught.value.kind == "format"
