"""Seeded mutation fuzzing of the one image-decoding gate: only `ImageError` ever escapes.

Small valid JPEG/PNG/WebP/BMP/TIFF/GIF files (with and without EXIF, compressed and raw
TIFF, palette PNG) are mutated by byte flips, truncation and insertion, biased to the
headers where the parsers live (fixture `image_mutants`, tests/conftest.py). Every mutant
goes through `normalise_image` (what `prepare` calls) or `open_checked_image` (dataset
loading, predict), and a slice through serve's upload decoder, which must answer a 4xx
status for every one of them. Deterministic: a fixed seed per run.
"""

from __future__ import annotations

from collections import Counter

import pytest

from vistune.data.images import normalise_image, open_checked_image
from vistune.errors import ImageError

pytestmark = [
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),  # Pillow's "Corrupt EXIF data" etc.
]

CASES = 20_000


def test_seed_files_are_valid_in_every_format(image_mutants) -> None:
    formats = set()
    for fmt, data in image_mutants.seed_files():
        assert normalise_image(data).width in (9, 12)
        formats.add(fmt)
    assert formats == {"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"}


def test_no_decoder_exception_escapes_the_gate(image_mutants) -> None:
    escaped: Counter[tuple[str, str]] = Counter()
    outcomes: Counter[str] = Counter()
    for index, (fmt, data) in enumerate(image_mutants(CASES, seed=13)):
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


def test_serve_answers_4xx_for_every_mutant(image_mutants) -> None:
    from vistune.serve.uploads import UploadRejectedError, decode_image

    statuses: Counter[int] = Counter()
    for _fmt, data in image_mutants(4_000, seed=14):
        try:
            decode_image(data, max_pixels=1_000_000)
            statuses[200] += 1
        except UploadRejectedError as exc:
            statuses[exc.status_code] += 1
    assert set(statuses) <= {200, 400, 413, 415}, statuses
    assert statuses[400] > 0 and statuses[415] > 0
