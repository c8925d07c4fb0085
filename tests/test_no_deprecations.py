"""vistune's own calls raise no deprecation warning on the installed transformers.

transformers 5.24 deprecates `past_key_values` in favour of `cache` (removal announced for
5.40) through both `warnings.warn(FutureWarning)` and a `logger.warning_once` message; it
printed on every generation step. This test runs generation for both families and a
training step with its generation eval while recording every warning and every
"deprecated" log record together with the call stack, and fails on those whose nearest
caller outside the warning library (and torch's module plumbing) is vistune. Warnings a
library raises about its own or another library's calls are not vistune's to fix.
"""

from __future__ import annotations

import logging
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

import vistune

VISTUNE_DIR = Path(vistune.__file__).resolve().parent
HERE = Path(__file__).resolve()


def _package(filename: str) -> str:
    """'vistune', a site-packages top-level name, 'stdlib' or 'test'."""
    path = Path(filename).resolve()
    if path == HERE:
        return "test"
    if path.is_relative_to(VISTUNE_DIR):
        return "vistune"
    parts = path.parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return parts[parts.index(marker) + 1].removesuffix(".py")
    return "stdlib"


def caused_by_vistune(stack: list[traceback.FrameSummary]) -> bool:
    """Walk out from the warning site to the first frame outside the issuing library."""
    frames = [f for f in stack if _package(f.filename) not in ("stdlib", "test")]
    if not frames:
        return False
    issuer = _package(frames[-1].filename)
    for frame in reversed(frames):
        package = _package(frame.filename)
        if package not in (issuer, "torch"):
            return package == "vistune"
    return False


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "deprecat" in message.lower() and caused_by_vistune(traceback.extract_stack()):
            self.found.append(f"log {record.name}: {message}")


@pytest.fixture
def vistune_deprecations() -> Iterator[list[str]]:
    """Deprecations caused by vistune's calls inside the block (warnings and log records)."""
    from transformers.utils import logging as hf_logging

    found: list[str] = []
    recorder = _Recorder()
    hf_logging.get_logger().addHandler(recorder)
    logging.Logger.warning_once.cache_clear()  # emit messages seen earlier in this process
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, FutureWarning | DeprecationWarning) and caused_by_vistune(
            traceback.extract_stack()
        ):
            found.append(f"{category.__name__} at {filename}:{lineno}: {message}")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        try:
            yield found
        finally:
            warnings.showwarning = original
            hf_logging.get_logger().removeHandler(recorder)
            found.extend(recorder.found)


def test_the_attribution_rule_sees_a_vistune_call() -> None:
    """Guard: a deprecated transformers kwarg passed by vistune code is attributed to it."""
    here_is_vistune = traceback.FrameSummary(str(VISTUNE_DIR / "x.py"), 1, "f")
    torch_frame = traceback.FrameSummary("/v/site-packages/torch/nn/modules/module.py", 1, "call")
    issuer = traceback.FrameSummary("/v/site-packages/transformers/utils/deprecation.py", 1, "w")
    peft_frame = traceback.FrameSummary("/v/site-packages/peft/peft_model.py", 1, "init")
    assert caused_by_vistune([here_is_vistune, torch_frame, issuer])
    assert not caused_by_vistune([here_is_vistune, peft_frame, issuer])


@pytest.mark.parametrize("family_dir", ["tiny_phi3v_dir", "tiny_native_dir"])
def test_generation_raises_no_deprecation(family_dir: str, request, vistune_deprecations) -> None:
    from vistune.models.families import load_vlm

    vlm = load_vlm(str(request.getfixturevalue(family_dir)))
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    vlm.generate([image, None], ["What is it?", "And this?"], max_new_tokens=4)
    assert vistune_deprecations == []


def test_training_step_and_its_eval_raise_no_deprecation(
    make_config, tmp_path: Path, vistune_deprecations
) -> None:
    from vistune.training import run_training

    for method in ("full", "lora"):
        run_training(
            make_config(
                output=str(tmp_path / method),
                method=method,
                max_steps=1,
                per_device_batch_size=2,
                eval_steps=1,
                eval_generate_samples=2,
            )
        )
    assert vistune_deprecations == []


def test_loading_a_lora_run_shows_no_future_warning(make_config, tmp_path: Path) -> None:
    """What a user sees: peft's read of a deprecated transformers property is not shown."""
    from vistune.models.families import load_vlm
    from vistune.training import run_training

    config = make_config(output=str(tmp_path / "lora"), method="lora", max_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_training(config)
        load_vlm(str(tmp_path / "lora"))
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []
