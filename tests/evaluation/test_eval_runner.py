"""Evaluation settings come from the training run unless given; W&B summary keys are flat."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vistune.answer import DEFAULT_QUESTION, DEFAULT_TEMPLATE
from vistune.errors import ConfigError
from vistune.evaluation import EvaluateConfig
from vistune.evaluation.runner import DEFAULT_MAX_NEW_TOKENS, flat_summary, resolve_config

RUN_TEMPLATE = "{title} | {category3_code} | {full_price:.2f}"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "data": str(tmp_path / "data"),
                "model": "tiny",
                "output": str(run),
                "question": "Describe the product.",
                "answer_template": RUN_TEMPLATE,
                "max_answer_tokens": 33,
                "num_crops": 4,
            }
        )
    )
    return run


@pytest.mark.parametrize("where", ["", "final"])
def test_run_settings_are_used(run_dir: Path, tmp_path: Path, where: str) -> None:
    cfg = resolve_config(EvaluateConfig(model=str(run_dir / where), out=tmp_path / "eval"))
    assert cfg.question == "Describe the product."
    assert cfg.answer_template == RUN_TEMPLATE
    assert cfg.max_new_tokens == 33 and cfg.num_crops == 4
    assert cfg.data == tmp_path / "data"


def test_explicit_values_win(run_dir: Path, tmp_path: Path) -> None:
    cfg = EvaluateConfig.load(
        None, ["max_new_tokens=5", "question=Hi?"], model=str(run_dir), out=str(tmp_path), data="d"
    )
    cfg = resolve_config(cfg)
    assert (cfg.max_new_tokens, cfg.question, cfg.data) == (5, "Hi?", Path("d"))
    assert cfg.answer_template == RUN_TEMPLATE


def test_defaults_without_a_run(tmp_path: Path) -> None:
    cfg = resolve_config(EvaluateConfig(model="tiny", data=tmp_path, out=tmp_path / "e"))
    assert cfg.question == DEFAULT_QUESTION and cfg.answer_template == DEFAULT_TEMPLATE
    assert cfg.max_new_tokens == DEFAULT_MAX_NEW_TOKENS and cfg.num_crops is None


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--data"):
        resolve_config(EvaluateConfig(model="tiny", out=tmp_path))
    with pytest.raises(ConfigError, match="answer_template"):
        resolve_config(
            EvaluateConfig(model="tiny", data=tmp_path, out=tmp_path, answer_template="{a}{b}")
        )
    with pytest.raises(ConfigError, match="unknown key 'batchsize'"):
        EvaluateConfig.load(None, ["batchsize=3"], model="tiny", out=str(tmp_path))


def test_flat_summary_keys() -> None:
    summary = {
        "metrics": {"price_mape": 0.2, "n": 5, "price_median_ape": None},
        "metrics_parsed_only": {"price_mape": 0.1},
        "ablation": {"parse_rate": 0.0},
        "baselines": {"global_median_price": {"price_mape": 0.5, "value": 90.0}},
        "per_category": {"bags": {"n": 2}},
    }
    assert flat_summary(summary) == {
        "eval/price_mape": 0.2,
        "eval/n": 5,
        "eval_parsed/price_mape": 0.1,
        "ablation/parse_rate": 0.0,
        "baseline/global_median_price/price_mape": 0.5,
        "baseline/global_median_price/value": 90.0,
        "category/bags/n": 2,
    }


def test_model_load_args_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from vistune.evaluation.runner import model_load_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert model_load_args("auto", "auto") == {"dtype": torch.float32, "device_map": None}
    assert model_load_args("cpu", "bf16") == {"dtype": torch.bfloat16, "device_map": None}
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        model_load_args("cuda", "auto")
    with pytest.raises(ConfigError, match="fp16"):
        model_load_args("auto", "fp16")


def test_unrelated_config_yaml_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "exported").mkdir()
    (tmp_path / "config.yaml").write_text("question: not a run\n")
    cfg = resolve_config(
        EvaluateConfig(model=str(tmp_path / "exported"), data=tmp_path, out=tmp_path)
    )
    assert cfg.question == DEFAULT_QUESTION


def test_compare_base_needs_a_run(run_dir: Path, tmp_path: Path) -> None:
    from vistune.evaluation.runner import base_model_source

    with pytest.raises(ConfigError, match="no base model recorded"):  # model: tiny, not built
        base_model_source(str(run_dir))
    (run_dir / "base_model").mkdir()
    (run_dir / "base_model" / "config.json").write_text("{}")
    assert base_model_source(str(run_dir / "final")) == str(run_dir / "base_model")
    with pytest.raises(ConfigError, match="not a training run dir"):
        base_model_source(str(tmp_path / "elsewhere"))
