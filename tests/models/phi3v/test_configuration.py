"""Phi3VConfig reads the released config.json as is and never writes remote-code pointers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from transformers import AutoConfig, CLIPVisionConfig

import vistune  # noqa: F401  (registers phi3_v)
from vistune.models.phi3v import Phi3VConfig

# The released microsoft/Phi-3-vision-128k-instruct config.json; only the rope factor lists are
# replaced by constants of the right length (their values do not matter here).
OFFICIAL_CONFIG: dict = json.loads((Path(__file__).parent / "official_config.json").read_text())


def write_config(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_official_config_reads_without_remote_code(tmp_path: Path) -> None:
    folder = write_config(tmp_path / "official", OFFICIAL_CONFIG)
    config = AutoConfig.from_pretrained(folder)  # no trust_remote_code

    assert isinstance(config, Phi3VConfig)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (3072, 32, 32064)
    assert config.image_token_id == 32044
    assert config.img_processor["layer_idx"] == -2
    assert config.img_processor["type_feature"] == "patch"
    assert config.embd_layer["hd_transform_order"] == "sub_glb"
    # legacy "su" rope becomes Phi3's longrope with the pretraining length carried along
    rope = config.rope_parameters
    assert rope["rope_type"] == "longrope"
    assert rope["original_max_position_embeddings"] == 4096
    assert rope["long_factor"] == [1.5] * 48 and rope["short_factor"] == [1.0] * 48
    # flash-attn is not installed here: the file's flash_attention_2 must not be kept
    assert config._attn_implementation != "flash_attention_2"


def test_vision_tower_derived_from_model_name() -> None:
    config = Phi3VConfig.from_dict(copy.deepcopy(OFFICIAL_CONFIG))
    vision = config.vision_config
    assert isinstance(vision, CLIPVisionConfig)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (
        1024,
        24,
        16,
    )
    assert (vision.intermediate_size, vision.image_size, vision.patch_size) == (4096, 336, 14)
    assert vision.hidden_act == "quick_gelu"
    assert config.crop_size == 336
    assert config.tokens_per_crop == 144
    assert config.vision_feature_layers == 23  # hidden state -2 of 24 layers


def test_save_drops_auto_map_and_round_trips(tmp_path: Path) -> None:
    config = Phi3VConfig.from_dict(copy.deepcopy(OFFICIAL_CONFIG))
    config.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())

    assert "auto_map" not in saved
    assert saved["model_type"] == "phi3_v"
    assert saved.get("_attn_implementation") != "flash_attention_2"
    # the legacy keys the released remote code reads are written too, in its spelling
    assert saved["rope_scaling"] == OFFICIAL_CONFIG["rope_scaling"]
    assert saved["rope_theta"] == 10000.0
    again = AutoConfig.from_pretrained(tmp_path / "saved")
    assert isinstance(again, Phi3VConfig)
    assert again.vision_config.to_dict() == config.vision_config.to_dict()
    assert again.rope_parameters == config.rope_parameters
    assert again.img_processor == config.img_processor
    assert again.embd_layer == config.embd_layer


def test_explicit_tiny_vision_config() -> None:
    config = Phi3VConfig(
        hidden_size=32,
        num_attention_heads=4,
        img_processor={"image_dim_out": 16, "num_img_tokens": 4, "model_name": "tiny"},
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 4,
        },
    )
    assert config.crop_size == 16
    assert config.tokens_per_crop == 4  # (16 / 4 / 2) ** 2
    assert config.vision_feature_layers == 2


def test_image_sizes_default_to_the_vision_tower() -> None:
    config = Phi3VConfig(
        hidden_size=32,
        num_attention_heads=4,
        vision_config={
            "hidden_size": 16,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 4,
        },
    )
    assert config.img_processor["image_dim_out"] == 16
    assert config.img_processor["num_img_tokens"] == 16  # (32 / 4 / 2) ** 2
    assert config.img_processor["layer_idx"] == -2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"img_processor": {**OFFICIAL_CONFIG["img_processor"], "num_img_tokens": 100}}, "num_img"),
        (
            {"img_processor": {**OFFICIAL_CONFIG["img_processor"], "image_dim_out": 768}},
            "image_dim",
        ),
        (
            {"img_processor": {**OFFICIAL_CONFIG["img_processor"], "model_name": "x/y"}},
            "model_name",
        ),
        ({"embd_layer": {"hd_transform_order": "glb_sub"}}, "hd_transform_order"),
    ],
)
def test_inconsistent_image_settings_name_the_field(change: dict, field: str) -> None:
    raw = {**copy.deepcopy(OFFICIAL_CONFIG), **change}
    with pytest.raises(ValueError, match=field):
        Phi3VConfig.from_dict(raw)


def test_longrope_spelling_of_phi35_also_reads() -> None:
    raw = copy.deepcopy(OFFICIAL_CONFIG)
    raw["rope_scaling"] = {**raw["rope_scaling"], "type": "longrope"}
    config = Phi3VConfig.from_dict(raw)
    assert config.rope_parameters["rope_type"] == "longrope"
    assert config.rope_parameters["original_max_position_embeddings"] == 4096


def test_register_is_idempotent_and_covers_the_auto_classes() -> None:
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

    from vistune.models.phi3v import Phi3VForCausalLM, Phi3VModel, register

    register()
    register()  # a second call (e.g. importing vistune twice via plugins) must not fail
    assert AutoConfig.for_model("phi3_v").__class__ is Phi3VConfig
    assert AutoModelForCausalLM._model_mapping[Phi3VConfig] is Phi3VForCausalLM
    assert AutoModelForImageTextToText._model_mapping[Phi3VConfig] is Phi3VForCausalLM
    assert AutoModel._model_mapping[Phi3VConfig] is Phi3VModel


@pytest.mark.parametrize("rope_type", ["su", "longrope"])
def test_released_configs_load_without_a_rope_warning_and_keep_the_attention_scale(
    rope_type: str, tmp_path: Path
) -> None:
    """transformers warns on every load of a longrope config without `factor`; vistune spells
    out the value transformers would derive, so the load is quiet and the rotary attention
    scale is still sqrt(1 + ln(131072 / 4096) / ln(4096)), the Phi-3 formula."""
    import logging
    import math

    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.utils import logging as hf_logging

    records: list[str] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    raw = copy.deepcopy(OFFICIAL_CONFIG)
    raw["rope_scaling"] = {**raw["rope_scaling"], "type": rope_type}
    recorder = Recorder(logging.WARNING)
    hf_logging.get_logger().addHandler(recorder)
    logging.Logger.warning_once.cache_clear()  # a message seen earlier must show again
    try:
        config = Phi3VConfig.from_dict(raw)
        config.save_pretrained(tmp_path)
        reloaded = Phi3VConfig.from_pretrained(tmp_path)
    finally:
        hf_logging.get_logger().removeHandler(recorder)
    assert not [r for r in records if "rope" in r.lower()], records

    expected = math.sqrt(1 + math.log(131072 / 4096) / math.log(4096))
    for cfg in (config, reloaded):
        inv_freq, scale = ROPE_INIT_FUNCTIONS["longrope"](cfg, torch.device("cpu"))
        assert scale == pytest.approx(expected, rel=1e-12)
        assert inv_freq.shape == (48,)
    legacy = json.loads((tmp_path / "config.json").read_text())["rope_scaling"]
    assert "factor" not in legacy  # the remote code's reader gets the released keys only
