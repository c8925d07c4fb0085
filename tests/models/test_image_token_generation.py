"""No generation path can crash on, or emit, an image placeholder id.

The models here are rigged to prefer the image placeholder at every step: attention and MLP
outputs are zeroed (the residual stream is the token embedding), every embedding row is
ones and the LM head row of the placeholder is the only non-zero one. An untrained model
can land there by chance; these land there always.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vistune.cli import app
from vistune.models.families import load_vlm, placeholder_token_ids


def rig_to_prefer(model: torch.nn.Module, token_id: int) -> None:
    """Make `token_id` the argmax at every position after the first forward."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(("o_proj", "down_proj")) and isinstance(module, torch.nn.Linear):
                module.weight.zero_()
        model.get_input_embeddings().weight.fill_(1.0)
        head = model.get_output_embeddings().weight
        head.zero_()
        head[token_id] = 10.0


def rigged_copy(source: Path, out: Path) -> Path:
    vlm = load_vlm(str(source))
    token_id = placeholder_token_ids(vlm.model, vlm.processor)[0]
    rig_to_prefer(vlm.model, token_id)
    vlm.save(out)
    for extra in source.glob("*.json"):  # generation config etc. as the source had them
        if not (out / extra.name).exists():
            shutil.copy(extra, out / extra.name)
    return out


@pytest.fixture(scope="module")
def rigged_phi3v(tiny_phi3v_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rigged_copy(tiny_phi3v_dir, tmp_path_factory.mktemp("rigged-phi3v"))


@pytest.fixture(scope="module")
def rigged_native(tiny_native_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rigged_copy(tiny_native_dir, tmp_path_factory.mktemp("rigged-native"))


def _spy_generate(vlm: Any) -> list[torch.Tensor]:
    """Record every sequence `model.generate` returns."""
    outputs: list[torch.Tensor] = []
    original = vlm.model.generate

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        result = original(*args, **kwargs)
        outputs.append(result)
        return result

    vlm.model.generate = spy
    return outputs


IMAGE = Image.new("RGB", (40, 30), (200, 30, 30))


@pytest.mark.parametrize("which", ["rigged_phi3v", "rigged_native"])
def test_family_generation_never_emits_a_placeholder(which: str, request) -> None:
    vlm = load_vlm(str(request.getfixturevalue(which)))
    placeholders = placeholder_token_ids(vlm.model, vlm.processor)
    assert placeholders  # the rig targets one of them
    # Without suppression the rigged model does pick the placeholder first.
    batch = vlm.collate([IMAGE], ["What is it?"])
    with torch.no_grad():
        logits = vlm.model(**batch).logits[0, -1]
    assert int(logits.argmax()) in placeholders

    outputs = _spy_generate(vlm)
    answers = vlm.generate([IMAGE, None], ["What is it?", "And this?"], max_new_tokens=5)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    new_tokens = outputs[0][:, batch["input_ids"].shape[1] :]
    assert new_tokens.numel() and not torch.isin(new_tokens, torch.tensor(placeholders)).any()


def test_a_decode_step_never_reads_a_generated_image_id_as_a_slot(rigged_phi3v: Path) -> None:
    """Second line of defence: even unsuppressed, a generated `<|image|>` is plain text."""
    vlm = load_vlm(str(rigged_phi3v))
    batch = vlm.collate([IMAGE], ["What is it?"])
    with torch.no_grad():
        out = vlm.model.generate(**batch, max_new_tokens=3, do_sample=False, use_cache=True)
    generated = out[0, batch["input_ids"].shape[1] :]
    assert (generated == vlm.model.config.image_token_id).all()


def test_evaluate_predict_and_serve_run_on_the_rigged_model(
    rigged_phi3v: Path, prepared_dir: Path, tmp_path: Path
) -> None:
    evaluate = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(rigged_phi3v),
            "--data",
            str(prepared_dir),
            "--out",
            str(tmp_path / "eval"),
            "--limit",
            "4",
            "--no-ablation",
            "--set",
            "max_new_tokens=4",
        ],
    )
    assert evaluate.exit_code == 0, evaluate.output
    assert (tmp_path / "eval" / "metrics.json").is_file()

    photo = tmp_path / "photo.png"
    IMAGE.save(photo)
    predict = CliRunner().invoke(
        app, ["predict", str(rigged_phi3v), str(photo), "--json", "--max-new-tokens", "4"]
    )
    assert predict.exit_code == 0, predict.output

    from vistune.serve.app import create_app
    from vistune.serve.config import ServeConfig
    from vistune.serve.predictor import Predictor
    from vistune.serve.server import serving_in_thread

    predictor = Predictor(load_vlm(str(rigged_phi3v)), max_new_tokens=4)
    buffer = io.BytesIO()
    IMAGE.save(buffer, format="PNG")
    with serving_in_thread(create_app(predictor, ServeConfig(model="rigged"))) as url:
        response = httpx.post(
            f"{url}/v1/predict",
            files={"image": ("p.png", buffer.getvalue(), "image/png")},
            timeout=60,
        )
    assert response.status_code == 200, response.text


def test_training_time_generation_eval_runs_on_the_rigged_model(
    rigged_phi3v: Path, make_config: Any, tmp_path: Path
) -> None:
    from vistune.training import run_training

    config = make_config(
        model=str(rigged_phi3v),
        max_steps=1,
        learning_rate=1e-9,
        eval_steps=1,
        eval_generate_samples=4,
    )
    run_training(config)
    assert (Path(config.output) / "final" / "config.json").is_file()


@pytest.mark.slow
def test_six_step_tiny_train_with_its_generation_eval_completes(
    prepared_dir: Path, tmp_path: Path
) -> None:
    """`vistune train --data D --model tiny --output R --max-steps 6` on the 160-row sample."""
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(prepared_dir),
            "--model",
            "tiny",
            "--output",
            str(tmp_path / "run"),
            "--max-steps",
            "6",
            "--report-to",
            "none",
            "--set",
            "eval_steps=6",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "final" / "adapter_config.json").is_file()  # LoRA by default
