"""Upload decoding: the same normalisation as training images, and the right 4xx codes."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from vistune.serve.uploads import UploadRejectedError, decode_image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_transparency_is_flattened_on_white_as_in_prepare() -> None:
    data = encode(Image.new("RGBA", (20, 10), (255, 0, 0, 0)), "PNG")
    image = decode_image(data, max_pixels=10_000)
    assert image.mode == "RGB" and image.size == (20, 10)
    assert image.getpixel((3, 3)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    data = encode(Image.new("RGB", (40, 20), (0, 90, 200)), "JPEG", exif=exif)
    assert decode_image(data, max_pixels=10_000).size == (20, 40)


def test_readable_but_unaccepted_format_is_415() -> None:
    with pytest.raises(UploadRejectedError) as caught:
        decode_image(encode(Image.new("RGB", (8, 8)), "PPM"), max_pixels=10_000)
    assert caught.value.status_code == 415


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = encode(Image.new("L", (4000, 4000)), "PNG")  # compresses to a few kB
    with pytest.raises(UploadRejectedError) as caught:
        decode_image(data, max_pixels=1_000_000)
    assert caught.value.status_code == 413
    assert "4000x4000" in caught.value.detail
