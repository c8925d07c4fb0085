"""Shared fixtures: tiny catalogs and tiny models built by the tests themselves, offline."""

from __future__ import annotations

import os

# Offline and quiet before anything imports transformers/datasets/wandb.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import functools
import io
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from vistune.training import TrainConfig

# pytest-xdist runs one worker per core; a second torch thread per worker oversubscribes the
# 2-core CI machine and makes steps up to 20x slower. Numerics do not depend on it.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 160-row synthetic catalog written by `vistune sample` (catalog.parquet + images/)."""
    from vistune.data.sample import generate_catalog

    out = tmp_path_factory.mktemp("sample")
    generate_catalog(out, rows=160, seed=0, image_size=64, preset="simple")
    return out


@pytest.fixture(scope="session")
def prepared_dir(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sample_dir` run through `vistune prepare`: train/validation/test.parquet + manifest."""
    from vistune.data.prepare import PrepareConfig, prepare_dataset

    out = tmp_path_factory.mktemp("prepared")
    prepare_dataset(PrepareConfig(source=str(sample_dir), out=out), show_progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_phi3v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Phi-3-vision checkpoint in the official folder layout."""
    from vistune.models.tiny import build_tiny_phi3v

    return build_tiny_phi3v(tmp_path_factory.mktemp("tiny-phi3v"), seed=0)


@pytest.fixture(scope="session")
def tiny_native_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random transformers-native image-text-to-text model (second family)."""
    from vistune.models.tiny import build_tiny_native

    return build_tiny_native(tmp_path_factory.mktemp("tiny-native"), seed=0)


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
    """`count` mutants of `seed_files()`: byte flips, cuts and insertions, headers first."""
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


@pytest.fixture(scope="session")
def image_mutants() -> Any:
    """`image_mutants(count, seed)` yields (format, bytes) of mutated image files (seeded);
    `image_mutants.seed_files()` are the valid originals. Used by the decoder fuzz tests."""
    mutants.seed_files = seed_files  # type: ignore[attr-defined]
    return mutants


# -- training configs on the tiny fixtures ------------------------------------------------
def tiny_config(**overrides: Any) -> TrainConfig:
    """A small, fast TrainConfig (give data, model, output): no trackers or workers, 4 steps."""
    values: dict[str, Any] = {
        "method": "full",
        "max_steps": 4,
        "per_device_batch_size": 4,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "logging_steps": 1,
        "eval_steps": None,
        "save_steps": 1000,
        "report_to": ["none"],
        "dataloader_workers": 0,
        "seed": 0,
    }
    values.update(overrides)
    return TrainConfig.from_dict(values)


@pytest.fixture(scope="session")
def config_on_fixtures(prepared_dir: Path, tiny_phi3v_dir: Path) -> Callable[..., TrainConfig]:
    """`tiny_config` on the shared tiny catalog and model; call with `output=` + overrides."""
    return functools.partial(tiny_config, data=str(prepared_dir), model=str(tiny_phi3v_dir))


@pytest.fixture
def make_config(
    config_on_fixtures: Callable[..., TrainConfig], tmp_path: Path
) -> Callable[..., TrainConfig]:
    """`make_config(**overrides)`: `tiny_config` on the shared fixtures, output in tmp_path."""

    def build(**overrides: Any) -> TrainConfig:
        return config_on_fixtures(**{"output": str(tmp_path / "run"), **overrides})

    return build
