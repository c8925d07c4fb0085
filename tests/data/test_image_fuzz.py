"""Seeded mutation fuzzing of the one image-decoding gate: only `ImageError` ever escapes.

Small valid JPEG/PNG/WebP/BMP/TIFF/GIF files (with and without EXIF, compressed and raw
TIFF, palette PNG) are mutated by byte flips, truncation and insertion, biased to the
headers where the parsers live. Every mutant goes through `normalise_image` (what `prepare`
calls) and `open_checked_image` (dataset loading, predict), and through serve's upload decoder,
which must answer a 4xx status for every one of them. Deterministic: a fixed seed per run.
"""

from __future__ import annotations

import io
import random
from collections import Counter
from collections.abc import Iterator

import pytest
from PIL import Image

from vistune.data.images import normalise_image, open_checked_image
from vistune.errors import ImageError

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

CASES = 20_000
SAVE_OPTIONS = [
    ("JPEG", {}),
    ("PNG", {}),
    ("PNG", {"palette": True}),
    ("WEBP", {}),
    ("BMP", {}),
    ("GIF", {}),
    ("TIFF", {}),
    ("TIFF", {"compression": "tiff_lzw"}),
    ("TIFF", {"compression": "packbits"}),
]


def seed_files() -> list[tuple[str, bytes]]:
    """Valid small files of every accepted format; EXIF (orientation 6) where it can go."""
    image = Image.new("RGB", (12, 9))
    image.putdata([(x * 20, y * 28, (x * y) % 256) for y in range(9) for x in range(12)])
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "camera"
    files = []
    for fmt, options in SAVE_OPTIONS:
        options = dict(options)
        source = image.convert("P") if options.pop("palette", False) else image
        for with_exif in (False, True):
            if with_exif and fmt in ("BMP", "GIF"):
                continue
            buffer = io.BytesIO()
            source.save(buffer, format=fmt, **options, **({"exif": exif} if with_exif else {}))
            files.append((fmt, buffer.getvalue()))
    return files


def mutants(count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(seed)
    seeds = seed_files()
    for _ in range(count):
        fmt, original = rng.choice(seeds)
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            reach = len(data) if rng.random() < 0.5 else min(len(data), 256)  # headers
            op = rng.random()
            if op < 0.6:
                value = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
                data[rng.randrange(reach)] = value
            elif op < 0.8 and len(data) > 2:
                del data[rng.randrange(1, len(data)) :]
            else:
                at = rng.randrange(reach)
                data[at:at] = rng.randbytes(rng.randint(1, 8))
        yield fmt, bytes(data)


def test_seed_files_are_valid_in_every_format() -> None:
    formats = set()
    for fmt, data in seed_files():
        assert normalise_image(data).width in (9, 12)
        formats.add(fmt)
    assert formats == {"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"}


def test_no_decoder_exception_escapes_the_gate() -> None:
    escaped: Counter[tuple[str, str]] = Counter()
    outcomes: Counter[str] = Counter()
    for index, (fmt, data) in enumerate(mutants(CASES, seed=13)):
        gate = normalise_image if index % 2 else open_checked_image
        try:
            gate(data)
            outcomes["decoded"] += 1
        except ImageError as exc:
            outcomes[exc.kind] += 1
        except Exception as exc:  # the point: nothing else may come out
            escaped[(fmt, type(exc).__name__)] += 1
    assert not escaped, f"exceptions escaped the image gate: {dict(escaped)}"
    assert sum(outcomes.values()) == CASES
    # The mutations are hostile enough to matter: most fail, some still decode.
    assert outcomes["decoded"] > 100 and outcomes["corrupt"] > 1000, outcomes


def test_serve_answers_4xx_for_every_mutant() -> None:
    from vistune.serve.uploads import UploadRejectedError, decode_image

    statuses: Counter[int] = Counter()
    for _fmt, data in mutants(4_000, seed=14):
        try:
            decode_image(data, max_pixels=1_000_000)
            statuses[200] += 1
        except UploadRejectedError as exc:
            statuses[exc.status_code] += 1
    assert set(statuses) <= {200, 400, 413, 415}, statuses
    assert statuses[400] > 0 and statuses[415] > 0
