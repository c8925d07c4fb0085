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

from pathlib import Path

import pytest
import torch

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
