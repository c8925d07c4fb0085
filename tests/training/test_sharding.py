"""Sharding settings as configuration, refusal instead of fallback, the atomic final save.

Fast, single-process checks; the 2-process runs are in test_distributed.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from vistune.errors import ConfigError
from vistune.models.families import load_vlm
from vistune.training import TrainConfig, run_training
from vistune.training.distributed import (
    _write_final,
    check_strategy,
    describe_strategy,
    layer_classes,
    requested_strategy,
    sharding_arguments,
)
from vistune.training.run import training_arguments
from vistune.training.trainer import shard_rows

REQUIRED = {"data": "d", "model": "tiny", "output": "o"}
ACCELERATE_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


def test_sharding_is_off_by_default() -> None:
    config = TrainConfig.load(None, None, **REQUIRED)
    assert not config.fsdp.enabled and config.deepspeed is None
    assert sharding_arguments(config, ["Phi3DecoderLayer"]) == {}


def test_fsdp_settings_round_trip_through_config_yaml(tmp_path: Path) -> None:
    config = TrainConfig.load(
        None,
        ["fsdp.enabled=true", "fsdp.offload=true", "fsdp.state_dict_type=FULL_STATE_DICT"],
        **REQUIRED,
    )
    saved = config.save(tmp_path / "config.yaml")
    assert yaml.safe_load(saved.read_text())["fsdp"]["state_dict_type"] == "FULL_STATE_DICT"
    assert TrainConfig.load(saved) == config
    inline = TrainConfig.load(None, ['deepspeed={"zero_optimization": {"stage": 3}}'], **REQUIRED)
    assert TrainConfig.load(inline.save(tmp_path / "ds.yaml")).deepspeed == {
        "zero_optimization": {"stage": 3}
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["fsdp.version=1"], "fsdp.version"),
        (["fsdp.state_dict_type=LOCAL"], "fsdp.state_dict_type"),
        (["fsdp.enabled=true", "deepspeed=ds.json"], "choose one"),
    ],
)
def test_bad_sharding_settings_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.load(None, overrides, **REQUIRED)


def test_fsdp_settings_reach_the_training_arguments(tmp_path: Path) -> None:
    config = TrainConfig.load(
        None, ["fsdp.enabled=true", "fsdp.offload=true", "gradient_checkpointing=true"], **REQUIRED
    )
    sharding = sharding_arguments(config, ["Phi3DecoderLayer", "CLIPEncoderLayer"])
    args = training_arguments(config, tmp_path, "fp32", has_eval=False, sharding=sharding)
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2
    assert plugin["transformer_cls_names_to_wrap"] == "Phi3DecoderLayer,CLIPEncoderLayer"
    assert plugin["state_dict_type"] == "SHARDED_STATE_DICT"
    assert plugin["cpu_offload"] is True and plugin["reshard_after_forward"] is True
    # checkpointing moves to FSDP's own (the Trainer's would re-gather every layer)
    assert plugin["activation_checkpointing"] is True and not args.activation_checkpointing
    named = TrainConfig.load(
        None, ["fsdp.enabled=true", "fsdp.wrap_classes=[Phi3DecoderLayer]"], **REQUIRED
    )
    wrap = sharding_arguments(named, ["ignored"])["fsdp_config"]["transformer_layer_cls_to_wrap"]
    assert wrap == ["Phi3DecoderLayer"]


def test_deepspeed_path_must_exist(tmp_path: Path) -> None:
    missing = TrainConfig.load(None, [f"deepspeed={tmp_path / 'nope.json'}"], **REQUIRED)
    with pytest.raises(ConfigError, match=r"nope\.json is not a file"):
        sharding_arguments(missing, None)
    (tmp_path / "ds.json").write_text("{}")
    given = TrainConfig.load(None, [f"deepspeed={tmp_path / 'ds.json'}"], **REQUIRED)
    assert sharding_arguments(given, None) == {"deepspeed": str(tmp_path / "ds.json")}


def test_default_wrap_classes_are_the_decoder_and_vision_encoder_layers(
    tiny_phi3v_dir: Path,
) -> None:
    model = load_vlm(str(tiny_phi3v_dir)).model
    # the official Phi-3-vision layout: Phi3DecoderLayer in model.layers, CLIPEncoderLayer in
    # the CLIP tower's encoder.layers; the one-off image embedding is not a layer class
    decoder = {type(m).__name__ for m in model.model.layers}
    encoder = {type(m).__name__ for m in model.model.vision_embed_tokens.img_processor.modules()}
    assert decoder == {"Phi3DecoderLayer"} and "CLIPEncoderLayer" in encoder
    vision = ("model.vision_embed_tokens.img_processor.",)
    assert layer_classes(model, vision, trained_vision=True) == [
        "Phi3DecoderLayer",
        "CLIPEncoderLayer",
    ]
    # nothing on the vision side trained: image-free batches skip the tower, so it stays in
    # the root shard that every rank gathers
    assert layer_classes(model, vision, trained_vision=False) == ["Phi3DecoderLayer"]


def test_knobs_show_the_sharding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    plain = TrainConfig.load(None, None, **REQUIRED)
    assert describe_strategy(plain, None).startswith("none")
    fsdp = TrainConfig.load(None, ["fsdp.enabled=true"], **REQUIRED)
    line = describe_strategy(fsdp, ["Phi3DecoderLayer", "CLIPEncoderLayer"])
    assert line.startswith("FSDP2 (wrap Phi3DecoderLayer, CLIPEncoderLayer;")
    assert "SHARDED_STATE_DICT" in line and "offload off" in line
    # a launcher config counts as a request too
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert requested_strategy(plain) == "fsdp"
    assert "accelerate launch config" in describe_strategy(plain, None)


def test_fsdp_without_a_distributed_launch_is_refused(
    make_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    config = make_config(fsdp={"enabled": True})
    with pytest.raises(ConfigError, match="needs a distributed launch"):
        run_training(config)
    assert not (Path(config.output) / "final").exists()


def test_shard_rows_covers_every_row_with_equal_counts() -> None:
    for total in (1, 2, 3, 7, 16):
        for world in (1, 2, 3, 4):
            shards = [shard_rows(total, world, rank) for rank in range(world)]
            assert len({len(s) for s in shards}) == 1  # same number of generate calls
            assert set().union(*shards) == set(range(total))
            assert all(0 <= i < total for s in shards for i in s)


def test_a_failed_save_leaves_no_final_that_looks_complete(
    tiny_phi3v_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vlm = load_vlm(str(tiny_phi3v_dir))
    final = tmp_path / "run" / "final"
    _write_final(vlm.model, vlm.model.state_dict(), vlm, str(tiny_phi3v_dir), final)
    first = load_vlm(str(final)).model.state_dict()
    with torch.no_grad():
        for param in vlm.model.parameters():
            param.add_(1.0)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(vlm.family, "save_processor", broken)
    with pytest.raises(OSError, match="disk full"):
        _write_final(vlm.model, vlm.model.state_dict(), vlm, str(tiny_phi3v_dir), final)
    # the previous final/ is intact and no half-written folder is left beside it
    assert sorted(p.name for p in final.parent.iterdir()) == ["final"]
    again = load_vlm(str(final)).model.state_dict()
    assert all(torch.equal(again[k], first[k]) for k in first)
    monkeypatch.undo()
    _write_final(vlm.model, vlm.model.state_dict(), vlm, str(tiny_phi3v_dir), final)
    updated = load_vlm(str(final)).model.state_dict()
    assert any(not torch.equal(updated[k], first[k]) for k in first)


def test_a_strategy_accelerate_did_not_set_up_is_refused() -> None:
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    def accelerator(kind: DistributedType) -> SimpleNamespace:
        return SimpleNamespace(distributed_type=kind, device="cpu", num_processes=2)

    with pytest.raises(ConfigError, match="fsdp was requested but accelerate set up MULTI_CPU"):
        check_strategy("fsdp", accelerator(DistributedType.MULTI_CPU))
    with pytest.raises(ConfigError, match="deepspeed was requested but accelerate set up FSDP"):
        check_strategy("deepspeed", accelerator(DistributedType.FSDP))
    check_strategy("fsdp", accelerator(DistributedType.FSDP))
    check_strategy("none", accelerator(DistributedType.MULTI_CPU))
