"""kill -9 mid-run, then --resume: same final step, same data order, same losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vistune.cli import app
from vistune.training import TrainConfig, run_training

pytestmark = pytest.mark.slow

STEPS = 20


def losses_by_step(run_dir: Path) -> dict[int, float]:
    state = json.loads((run_dir / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def test_killed_run_resumes_to_the_same_end(
    make_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    config = make_config(output=str(tmp_path / "killed"), max_steps=STEPS, save_steps=4)
    config_file = config.save(tmp_path / "recipe.yaml")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "vistune.cli", "train", "--config", str(config_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    run_dir = Path(config.output)
    deadline = time.monotonic() + 120
    try:
        while not (run_dir / "checkpoint-4" / "trainer_state.json").is_file():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not (run_dir / "final").exists(), "the run finished before it was killed"
    assert not (run_dir / f"checkpoint-{STEPS}").exists()

    # the CLI resumes from RUN_DIR/config.yaml when no --config is given
    result = CliRunner().invoke(app, ["train", "--output", str(run_dir), "--resume"])
    assert result.exit_code == 0, result.output
    assert f"trained {STEPS} steps" in result.output
    assert (run_dir / "final" / "config.json").is_file()

    reference = run_training(
        make_config(output=str(tmp_path / "ref"), max_steps=STEPS, save_steps=4)
    )
    assert reference.global_step == STEPS
    got, want = losses_by_step(run_dir), losses_by_step(reference.run_dir)
    assert set(got) == set(want)
    # steps after the last checkpoint were replayed with the same data, optimizer and RNG
    assert [got[s] for s in sorted(got)] == pytest.approx([want[s] for s in sorted(want)], abs=1e-5)
