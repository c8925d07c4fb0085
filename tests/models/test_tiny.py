"""Tiny model builders: official layout, determinism, tokenizer properties."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors import safe_open

from vistune.models.tiny import PHI3_SPECIAL_TOKENS, build_tiny_phi3v, train_tokenizer


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_phi3v_has_the_official_layout(tiny_phi3v_dir: Path):
    names = {p.name for p in tiny_phi3v_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= names
    config = json.loads((tiny_phi3v_dir / "config.json").read_text())
    assert config["model_type"] == "phi3_v" and "auto_map" not in config
    assert (
        config["embd_layer"]["use_hd_transform"]
        and config["embd_layer"]["with_learnable_separator"]
    )
    vision = config["vision_config"]
    assert config["img_processor"]["image_dim_out"] == vision["hidden_size"]
    tokens_per_crop = (vision["image_size"] // vision["patch_size"] // 2) ** 2
    assert config["img_processor"]["num_img_tokens"] == tokens_per_crop

    tokenizer = json.loads((tiny_phi3v_dir / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    assert added["<unk>"] == 0 and added["<s>"] == 1 and added["</s>"] == 2
    assert set(PHI3_SPECIAL_TOKENS) <= set(added) and "<|image_1|>" in added
    assert config["image_token_id"] == added["<|image|>"]
    assert config["vocab_size"] >= len(tokenizer["model"]["vocab"])

    tokenizer_config = json.loads((tiny_phi3v_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"  # readable by 4.x too
    generation = json.loads((tiny_phi3v_dir / "generation_config.json").read_text())
    assert added["<|end|>"] in generation["eos_token_id"]

    pre = json.loads((tiny_phi3v_dir / "preprocessor_config.json").read_text())
    assert pre["crop_size"] == vision["image_size"] and pre["num_img_tokens"] == tokens_per_crop

    with safe_open(str(tiny_phi3v_dir / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        hidden4 = 4 * vision["hidden_size"]
        assert tuple(f.get_slice("model.vision_embed_tokens.glb_GN").get_shape()) == (1, 1, hidden4)
        assert tuple(f.get_slice("model.vision_embed_tokens.sub_GN").get_shape()) == (
            1,
            1,
            1,
            hidden4,
        )
    for key in (
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.qkv_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.vision_embed_tokens.img_projection.0.weight",
        "model.vision_embed_tokens.img_projection.2.weight",
    ):
        assert key in keys, key
    assert any(k.startswith("model.vision_embed_tokens.img_processor.vision_model.") for k in keys)
    info = json.loads((tiny_phi3v_dir / "vistune_tiny.json").read_text())
    assert 50_000 < info["parameters"] < 500_000  # fast-test size


def test_build_is_deterministic_per_seed(tiny_phi3v_dir: Path, tmp_path: Path):
    again = build_tiny_phi3v(tmp_path / "again", seed=0)
    other = build_tiny_phi3v(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "preprocessor_config.json"):
        assert _sha(again / name) == _sha(tiny_phi3v_dir / name), name
    assert _sha(other / "model.safetensors") != _sha(again / "model.safetensors")
    assert _sha(other / "tokenizer.json") == _sha(again / "tokenizer.json")


def test_tokenizer_splits_digits_and_learns_the_corpus():
    plain = train_tokenizer()
    fitted = train_tokenizer(["Burberry Trench Coat, Category: COATS"] * 20)
    for tokenizer in (plain, fitted):
        tokens = tokenizer.convert_ids_to_tokens(tokenizer("Price: 1234.50")["input_ids"])
        assert [t for t in tokens if any(ch.isdigit() for ch in t)] == list("123450")
        assert tokenizer.decode(tokenizer("Price: 1234.50 ünïcode")["input_ids"]) == (
            "Price: 1234.50 ünïcode"
        )
    text = "Burberry Trench Coat"
    assert len(fitted(text)["input_ids"]) < len(plain(text)["input_ids"])
    assert len(fitted(text)["input_ids"]) <= 3


def test_tiny_native_loads_with_auto_classes(tiny_native_dir: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    config = json.loads((tiny_native_dir / "config.json").read_text())
    assert config["model_type"] == "llava"
    processor = AutoProcessor.from_pretrained(tiny_native_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_native_dir)
    assert processor.chat_template and "<|assistant|>" in processor.chat_template
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>")
    assert sum(p.numel() for p in model.parameters()) < 500_000
