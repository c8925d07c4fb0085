"""Live uvicorn servers on 127.0.0.1 (random free port) around the tiny Phi-3-vision."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_predictor(tiny_phi3v_dir: Path) -> Any:
    """The tiny random Phi-3-vision behind a Predictor (short answers keep the tests fast)."""
    from vistune.models.families import load_vlm
    from vistune.serve.predictor import Predictor

    return Predictor(load_vlm(str(tiny_phi3v_dir)), max_new_tokens=12)


@pytest.fixture
def serve_app(tiny_predictor: Any) -> Callable[..., Any]:
    """Factory: the FastAPI app around the tiny model with ServeConfig settings."""
    from vistune.serve.app import create_app
    from vistune.serve.config import ServeConfig

    def make(**settings: Any) -> Any:
        return create_app(tiny_predictor, ServeConfig(model="tiny-test", **settings))

    return make
