"""Two processes on CPU (gloo) through torchrun: the Trainer's DDP, no code of ours."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from vistune.training import TrainConfig

pytestmark = pytest.mark.slow


def test_torchrun_two_processes(make_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    config = make_config(method="lora", max_steps=3, per_device_batch_size=2, save_steps=3)
    recipe = config.save(tmp_path / "recipe.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",  # free rendezvous port on localhost
            "--nproc_per_node",
            "2",
            "-m",
            "vistune.cli",
            "train",
            "--config",
            str(recipe),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path(config.output)
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()
    assert "2 process(es)" in proc.stderr + proc.stdout
    import json

    state = json.loads((run_dir / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
