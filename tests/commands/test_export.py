"""`vistune export`: adapter folder, merged weights with the same logits, full copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vistune.cli import app
from vistune.training import TrainConfig, run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lora_run(
    prepared_dir: Path, tiny_phi3v_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    tmp_path = tmp_path_factory.mktemp("export")
    config = TrainConfig.from_dict(
        {
            "data": str(prepared_dir),
            "model": str(tiny_phi3v_dir),
            "output": str(tmp_path / "run"),
            "method": "lora",
            "max_steps": 3,
            "learning_rate": 2e-2,
            "eval_steps": None,
            "report_to": ["none"],
            "dataloader_workers": 0,
        }
    )
    return run_training(config).run_dir


def logits(folder: Path, prepared_dir: Path) -> torch.Tensor:
    """Logits on 3 validation rows; an adapter folder is applied unmerged (base + adapter)."""
    from vistune.models.families import load_vlm
    from vistune.training.data import CatalogDataset, VlmCollator

    vlm = load_vlm(str(folder), merge_adapter=False)
    items = CatalogDataset(
        prepared_dir,
        "validation",
        question="What is shown in this image?",
        template="Product: {title}, Category: {category3_code}, Full Price: {full_price:.2f}",
    )
    batch = VlmCollator(vlm.family, vlm.processor)([items[i] for i in range(3)])
    batch.pop("labels")
    vlm.model.eval()
    with torch.no_grad():
        return vlm.model(**batch).logits


def test_merge_gives_base_plus_adapter_logits(
    lora_run: Path, tmp_path: Path, prepared_dir: Path
) -> None:
    out = tmp_path / "merged"
    result = CliRunner().invoke(app, ["export", str(lora_run), "--out", str(out), "--merge"])
    assert result.exit_code == 0, result.output
    assert list(out.glob("*.safetensors"))
    assert not (out / "adapter_config.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config
    assert config["model_type"] == "phi3_v"
    assert torch.allclose(
        logits(out, prepared_dir), logits(lora_run / "final", prepared_dir), atol=1e-4
    )

    from transformers import AutoModelForCausalLM

    import vistune  # noqa: F401  (registers phi3_v with the Auto classes)

    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "Phi3VForCausalLM"


def test_adapter_export_is_peft_standard(lora_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    result = CliRunner().invoke(app, ["export", str(lora_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(out)).peft_type == "LORA"
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "tokenizer_config.json").is_file()


def test_export_refuses_non_empty_out_and_missing_run(lora_run: Path, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    result = CliRunner().invoke(app, ["export", str(lora_run), "--out", str(busy)])
    assert result.exit_code == 1
    result = CliRunner().invoke(
        app, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
