"""The shared device/precision choice (used by training, evaluation, predict and serve)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import vistune
from vistune.device import model_load_args, resolve_precision
from vistune.errors import ConfigError


def test_precision_auto_is_fp32_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto") == "fp16"


def test_load_args_on_cpu_and_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert model_load_args("auto", "auto") == {"dtype": torch.float32, "device_map": None}
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        model_load_args("cuda", "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert model_load_args("auto", "auto") == {"dtype": torch.bfloat16, "device_map": "cuda"}
    assert model_load_args("cpu", "auto") == {"dtype": torch.float32, "device_map": None}


def _imported_packages(folder: Path) -> set[str]:
    """vistune subpackages imported anywhere (also inside functions) by the files in folder."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vistune."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found.update(
                    a.name.split(".")[1] for a in node.names if a.name.startswith("vistune.")
                )
    return found


def test_evaluation_does_not_import_training() -> None:
    """The training <-> evaluation cycle stays closed: the shared choice lives in device.py."""
    package = Path(vistune.__file__).parent
    assert "training" not in _imported_packages(package / "evaluation")
    assert "evaluation" in _imported_packages(package / "training")  # the allowed direction
