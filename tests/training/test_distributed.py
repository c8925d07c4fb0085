"""Two processes on CPU (gloo): DDP, FSDP2 full fine-tuning and FSDP2 LoRA, end to end.

Each mode runs `vistune train` the way a user launches it (torchrun, or `accelerate launch`
with a shipped config) for 4 steps at a global batch of 4 and is checked against a
single-process run at the same global batch: per-step losses (1e-5), the generation eval at
`eval_steps` (every rank takes part; answers gathered in row order), `final/` loading and
holding exactly the weights of the Trainer's last checkpoint, and, for FSDP, resuming from a
sharded checkpoint. accelerate runs no FSDP on CPU, so FSDP goes through
`cpu_fsdp_shim.py` (test-only: lifts that one gate); without it vistune refuses.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from vistune.cli import app
from vistune.models.families import load_vlm
from vistune.training import TrainConfig, run_training

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
SHIM = HERE / "cpu_fsdp_shim.py"
FSDP2_CONFIG = HERE.parents[1] / "configs" / "accelerate" / "fsdp2.yaml"
STEPS = 4
#: the two-process runs: 2 rows per process, checkpoint at 2 and 4, generation eval at 4
TWO_PROCESS = {
    "max_steps": STEPS,
    "per_device_batch_size": 2,
    "save_steps": 2,
    "save_total_limit": None,
    "eval_steps": STEPS,
}
#: the single-process reference: the same global batch, no evaluation
SINGLE = {"max_steps": STEPS, "per_device_batch_size": 4, "save_steps": STEPS}
LORA = {"method": "lora", "lora": {"dropout": 0.0}}  # dropout draws differ per process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(command: list[str], args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def torchrun_train(recipe: Path, shim: bool) -> subprocess.CompletedProcess[str]:
    entry = [str(SHIM)] if shim else ["-m", "vistune.cli"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return launch([*command, "--nproc_per_node", "2", *entry], ["train", "--config", str(recipe)])


def accelerate_train(args: list[str]) -> subprocess.CompletedProcess[str]:
    """`accelerate launch --config_file configs/accelerate/fsdp2.yaml` (via the shim)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    command += [str(FSDP2_CONFIG), "--num_processes", "2", "--main_process_port"]
    return launch([*command, str(free_port()), str(SHIM)], ["train", *args])


def succeeded(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def losses(run_dir: Path, step: int = STEPS) -> dict[int, float]:
    state = json.loads((run_dir / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def assert_losses_match(got: dict[int, float], want: dict[int, float]) -> None:
    assert sorted(got) == list(range(1, STEPS + 1)) == sorted(want)
    assert [got[s] for s in sorted(got)] == pytest.approx([want[s] for s in sorted(want)], abs=1e-5)


def sharded_checkpoint(run_dir: Path, step: int, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The model weights of an FSDP `checkpoint-N` (torch.distributed.checkpoint format)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    folder = run_dir / f"checkpoint-{step}" / "pytorch_model_fsdp_0"
    assert (folder / ".metadata").is_file()
    assert len(list(folder.glob("*.distcp"))) == 2  # one shard file per rank
    target = tmp_path / f"{run_dir.name}-{step}.pt"
    dcp_to_torch_save(folder, target)
    return torch.load(target, weights_only=True)["model"]


def assert_generation_eval_ran(run_dir: Path, config: TrainConfig) -> None:
    """Eval at step 4 only, on all `eval_generate_samples` rows, answers in row order."""
    assert sorted(p.name for p in (run_dir / "eval_samples").iterdir()) == [f"step-{STEPS}.jsonl"]
    rows = pd.read_json(run_dir / "eval_samples" / f"step-{STEPS}.jsonl", lines=True)
    validation = pd.read_parquet(Path(config.data) / "validation.parquet")
    expected = validation["source_row"].head(config.eval_generate_samples).tolist()
    assert rows["source_row"].tolist() == expected
    state = json.loads((run_dir / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    generated = [e for e in state["log_history"] if "eval_gen_n" in e]
    assert [(e["step"], e["eval_gen_n"]) for e in generated] == [(STEPS, len(expected))]


def assert_adapter_loads(run_dir: Path) -> None:
    """`load_vlm(RUN)` finds the base, applies the adapter and the trained projector."""
    model = load_vlm(str(run_dir), merge_adapter=False).model
    assert model.peft_config["default"].base_model_name_or_path
    names = [n for n, _ in model.named_parameters()]
    assert any("lora_B" in n for n in names) and any("modules_to_save" in n for n in names)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def single_full(config_on_fixtures: Callable[..., TrainConfig], runs: Path) -> Path:
    return run_training(config_on_fixtures(output=str(runs / "single-full"), **SINGLE)).run_dir


@pytest.fixture(scope="module")
def single_lora(config_on_fixtures: Callable[..., TrainConfig], runs: Path) -> Path:
    config = config_on_fixtures(output=str(runs / "single-lora"), **SINGLE, **LORA)
    return run_training(config).run_dir


@pytest.fixture(scope="module")
def fsdp_full(config_on_fixtures: Callable[..., TrainConfig], runs: Path) -> TrainConfig:
    """Full fine-tuning, FSDP2 from the shipped accelerate config, default generation eval."""
    config = config_on_fixtures(output=str(runs / "fsdp-full"), **TWO_PROCESS)
    proc = succeeded(accelerate_train(["--config", str(config.save(runs / "fsdp-full.yaml"))]))
    assert "2 process(es)" in proc.stdout + proc.stderr
    assert "sharding         FSDP" in proc.stdout + proc.stderr
    return config


def test_ddp_two_processes(
    config_on_fixtures: Callable[..., TrainConfig], runs: Path, single_lora: Path
) -> None:
    config = config_on_fixtures(
        output=str(runs / "ddp-lora"), **TWO_PROCESS, **LORA, eval_generate_samples=3
    )
    proc = succeeded(torchrun_train(config.save(runs / "ddp-lora.yaml"), shim=False))
    assert "2 process(es)" in proc.stdout + proc.stderr
    run_dir = Path(config.output)
    assert_losses_match(losses(run_dir), losses(single_lora))
    assert_generation_eval_ran(run_dir, config)
    final = load_file(run_dir / "final" / "adapter_model.safetensors")
    checkpoint = load_file(run_dir / f"checkpoint-{STEPS}" / "adapter_model.safetensors")
    assert final.keys() == checkpoint.keys()
    assert all(torch.equal(final[k], checkpoint[k]) for k in final)
    assert_adapter_loads(run_dir)


def test_fsdp2_full_matches_one_process(fsdp_full: TrainConfig, single_full: Path) -> None:
    run_dir = Path(fsdp_full.output)
    assert_losses_match(losses(run_dir), losses(single_full))
    assert_generation_eval_ran(run_dir, fsdp_full)


def test_fsdp2_full_final_is_the_checkpoint_and_evaluates(
    fsdp_full: TrainConfig, tmp_path: Path
) -> None:
    run_dir = Path(fsdp_full.output)
    checkpoint = sharded_checkpoint(run_dir, STEPS, tmp_path)
    final = load_vlm(str(run_dir)).model.state_dict()
    assert set(checkpoint) <= set(final)
    for name, tensor in checkpoint.items():
        assert torch.equal(final[name], tensor), name
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app, ["evaluate", str(run_dir), "--limit", "4", "--no-ablation", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())


def test_fsdp2_resumes_from_a_sharded_checkpoint(
    fsdp_full: TrainConfig, runs: Path, tmp_path: Path
) -> None:
    source = Path(fsdp_full.output)
    resumed = runs / "fsdp-resumed"
    resumed.mkdir()
    shutil.copy(source / "config.yaml", resumed / "config.yaml")
    shutil.copytree(source / "checkpoint-2", resumed / "checkpoint-2")
    succeeded(accelerate_train(["--output", str(resumed), "--resume"]))
    assert_losses_match(losses(resumed), losses(source))
    want = sharded_checkpoint(source, STEPS, tmp_path)
    got = load_vlm(str(resumed)).model.state_dict()
    assert max((got[k] - want[k]).abs().max().item() for k in want) <= 1e-6


def test_fsdp2_lora_from_the_vistune_config(
    config_on_fixtures: Callable[..., TrainConfig], runs: Path, single_lora: Path, tmp_path: Path
) -> None:
    config = config_on_fixtures(
        output=str(runs / "fsdp-lora"),
        **TWO_PROCESS,
        **LORA,
        eval_generate_samples=3,
        fsdp={"enabled": True},
    )
    proc = succeeded(torchrun_train(config.save(runs / "fsdp-lora.yaml"), shim=True))
    knobs = proc.stdout + proc.stderr
    assert "sharding         FSDP2 (wrap Phi3DecoderLayer, CLIPEncoderLayer" in knobs
    run_dir = Path(config.output)
    assert_losses_match(losses(run_dir), losses(single_lora))
    assert_generation_eval_ran(run_dir, config)
    # adapter + the trained projector (modules_to_save), equal to the sharded checkpoint
    final = load_file(run_dir / "final" / "adapter_model.safetensors")
    assert any("img_projection" in k for k in final)
    checkpoint = sharded_checkpoint(run_dir, STEPS, tmp_path)
    assert final.keys() == checkpoint.keys()
    assert all(torch.equal(final[k], checkpoint[k]) for k in final)
    assert_adapter_loads(run_dir)


def test_fsdp_on_cpu_is_refused_not_run_as_ddp(
    config_on_fixtures: Callable[..., TrainConfig], runs: Path
) -> None:
    config = config_on_fixtures(output=str(runs / "refused"), fsdp={"enabled": True})
    proc = torchrun_train(config.save(runs / "refused.yaml"), shim=False)
    assert proc.returncode != 0
    assert "fsdp was requested but accelerate set up MULTI_CPU" in proc.stdout + proc.stderr
    # one line from vistune, no worker traceback (torchrun's own report of the exit follows)
    assert "]: Traceback" not in proc.stdout + proc.stderr
    assert not list(Path(config.output).glob("checkpoint-*"))
    assert not (Path(config.output) / "final").exists()


def test_fsdp2_image_free_batch_runs_the_dummy_vision_pass(
    prepared_dir: Path, tiny_phi3v_dir: Path, tmp_path: Path
) -> None:
    """Rank 1's batch has no image: its gradients still average with rank 0's exactly."""
    sys.path.insert(0, str(HERE))
    try:
        from fsdp_image_free_step import batch_for
    finally:
        sys.path.remove(str(HERE))
    from vistune.training.model import prepare_model

    out = tmp_path / "grads.pt"
    script = [str(HERE / "fsdp_image_free_step.py"), str(tiny_phi3v_dir), str(prepared_dir)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    succeeded(launch([*command, "--nproc_per_node", "2", *script], [str(out)]))
    result = torch.load(out, weights_only=False)
    assert result["type"] == "DistributedType.FSDP"

    vlm = load_vlm(str(tiny_phi3v_dir))
    config = TrainConfig.from_dict(
        {"data": str(prepared_dir), "model": str(tiny_phi3v_dir), "output": "x", "method": "full"}
    )
    model = prepare_model(vlm, config)
    model.train()
    assert "pixel_values" not in batch_for(vlm, config, 1)
    loss = (model(**batch_for(vlm, config, 0)).loss + model(**batch_for(vlm, config, 1)).loss) / 2
    loss.backward()
    want = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    got = result["grads"]
    assert got.keys() == want.keys()
    assert any("img_projection" in name for name in want)
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, rtol=0, atol=1e-5, msg=name)
