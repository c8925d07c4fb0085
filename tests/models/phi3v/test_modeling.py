"""Phi3VForCausalLM: official checkpoint layout, image embedding, batching, generation, training.

Everything runs on a tiny random model built here (crop 16 px, patch 4 -> 4 tokens per crop),
with hand-built input_ids and random pixel_values, so these tests do not depend on the
processor.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

import vistune  # noqa: F401  (registers phi3_v)
from vistune.errors import ModelError
from vistune.models.phi3v import Phi3VConfig, Phi3VForCausalLM

IMAGE = 100  # image token id of the tiny vocabulary
PAD = 0
CROP = 16
TOKENS_PER_CROP = 4  # (16 / 4 / 2) ** 2
MAX_CROPS = 4


def tiny_config(**overrides) -> Phi3VConfig:
    kwargs = dict(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        original_max_position_embeddings=256,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
        image_token_id=IMAGE,
        img_processor={"image_dim_out": 16, "num_img_tokens": TOKENS_PER_CROP, "model_name": "t"},
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "image_size": CROP,
            "patch_size": 4,
        },
    )
    kwargs.update(overrides)
    return Phi3VConfig(**kwargs)


def tiny_model(seed: int = 0, **overrides) -> Phi3VForCausalLM:
    torch.manual_seed(seed)
    model = Phi3VForCausalLM(tiny_config(**overrides)).eval()
    with torch.no_grad():  # separators start at zero; make them visible to the tests
        model.model.vision_embed_tokens.glb_GN.normal_()
        model.model.vision_embed_tokens.sub_GN.normal_()
    return model


def n_image_tokens(rows: int, cols: int) -> int:
    """Hand formula: sub grid + separators, glb_GN, global view + separators."""
    side = int(math.sqrt(TOKENS_PER_CROP))
    return (rows * cols + 1) * TOKENS_PER_CROP + 1 + (rows + 1) * side


def image(rows: int, cols: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops zero-padded to MAX_CROPS + 1, and the HD (h, w)."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.zeros(MAX_CROPS + 1, 3, CROP, CROP)
    pixels[: 1 + rows * cols] = torch.randn(1 + rows * cols, 3, CROP, CROP, generator=g)
    return pixels, torch.tensor([rows * CROP, cols * CROP])


def row(prompt: list[int], grid: tuple[int, int] | None, answer: list[int]) -> list[int]:
    """bos + prompt + image placeholders (if any) + answer."""
    placeholders = [IMAGE] * n_image_tokens(*grid) if grid else []
    return [1, *prompt, *placeholders, *answer]


def pad_batch(rows: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, span] = torch.tensor(r)
        mask[i, span] = 1
    return ids, mask


# Three rows: a 2x1-crop image, no image, a 1x2-crop image (mixed sizes, one text-only row).
GRIDS = [(2, 1), None, (1, 2)]
ROWS = [
    row([5, 6], GRIDS[0], [7, 8, 9]),
    row([5, 6, 10, 11], None, [12, 13]),
    row([5], GRIDS[2], [14, 15, 16, 17]),
]


def batch_images(grids, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [image(*g, seed=seed + i) for i, g in enumerate(grids) if g]
    return torch.stack([p for p, _ in pairs]), torch.stack([s for _, s in pairs])


@pytest.fixture(scope="module")
def model() -> Phi3VForCausalLM:
    return tiny_model()


def reference_image_features(model: Phi3VForCausalLM, pixels, size) -> torch.Tensor:
    """Independent, loop-based image embedding following the released remote code."""
    emb = model.model.vision_embed_tokens
    clip = emb.img_processor.vision_model
    rows, cols = int(size[0]) // CROP, int(size[1]) // CROP
    crops = pixels[: 1 + rows * cols]
    hidden = clip(crops, output_hidden_states=True).hidden_states[-2][:, 1:]  # layer_idx -2
    side = int(math.sqrt(hidden.shape[1]))
    grid = hidden.reshape(-1, side, side, hidden.shape[-1])

    def merged(crop: torch.Tensor) -> list[list[torch.Tensor]]:
        half = side // 2
        return [
            [
                torch.cat(
                    [
                        crop[2 * i, 2 * j],
                        crop[2 * i, 2 * j + 1],
                        crop[2 * i + 1, 2 * j],
                        crop[2 * i + 1, 2 * j + 1],
                    ]
                )
                for j in range(half)
            ]
            for i in range(half)
        ]

    tokens = []
    sub = [[merged(grid[1 + r * cols + c]) for c in range(cols)] for r in range(rows)]
    for r in range(rows):
        for i in range(side // 2):
            for c in range(cols):
                tokens += sub[r][c][i]
            tokens.append(emb.sub_GN.reshape(-1))
    tokens.append(emb.glb_GN.reshape(-1))
    for line in merged(grid[0]):
        tokens += line
        tokens.append(emb.sub_GN.reshape(-1))
    return emb.img_projection(torch.stack(tokens))


@torch.no_grad()
def test_image_embedding_matches_reference(model: Phi3VForCausalLM) -> None:
    pixels, sizes = batch_images([(2, 1), (1, 2), (1, 1)])
    got = model.model.vision_embed_tokens(pixels, sizes)
    expected = torch.cat(
        [reference_image_features(model, p, s) for p, s in zip(pixels, sizes, strict=True)]
    )
    assert got.shape == (sum(n_image_tokens(*g) for g in [(2, 1), (1, 2), (1, 1)]), 32)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize(("grid", "expected"), [((4, 4), 2509), ((2, 2), 757), ((1, 3), 601)])
def test_released_crop_geometry_gives_the_released_token_counts(grid, expected) -> None:
    """336-px crops, 14-px patches (a narrow tower, the released geometry): 144 tokens/crop."""
    config = tiny_config(
        img_processor={"image_dim_out": 8, "model_name": "t"},
        vision_config={
            "hidden_size": 8,
            "intermediate_size": 8,
            "num_hidden_layers": 2,
            "num_attention_heads": 1,
            "image_size": 336,
            "patch_size": 14,
        },
    )
    assert config.tokens_per_crop == 144
    embed = Phi3VForCausalLM(config).model.vision_embed_tokens.eval()
    rows, cols = grid
    pixels = torch.randn(1, 17, 3, 336, 336)
    features = embed(pixels, torch.tensor([[rows * 336, cols * 336]]))
    assert features.shape == (expected, 32)


def official_key_names(config: Phi3VConfig) -> set[str]:
    """Key names of the released checkpoint layout, written out independently of the model."""
    keys = {"lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"}
    for i in range(config.num_hidden_layers):
        for name in (
            "input_layernorm",
            "post_attention_layernorm",
            "self_attn.qkv_proj",
            "self_attn.o_proj",
            "mlp.gate_up_proj",
            "mlp.down_proj",
        ):
            keys.add(f"model.layers.{i}.{name}.weight")
    v = "model.vision_embed_tokens."
    keys |= {v + "glb_GN", v + "sub_GN"}
    keys |= {f"{v}img_projection.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    clip = v + "img_processor.vision_model."
    keys |= {
        clip + "embeddings.class_embedding",
        clip + "embeddings.patch_embedding.weight",
        clip + "embeddings.position_embedding.weight",
    }
    keys |= {
        f"{clip}{n}.{p}" for n in ("pre_layrnorm", "post_layernorm") for p in ("weight", "bias")
    }
    for i in range(config.vision_config.num_hidden_layers):
        for n in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
            "layer_norm1",
            "layer_norm2",
            "mlp.fc1",
            "mlp.fc2",
        ):
            keys |= {f"{clip}encoder.layers.{i}.{n}.weight", f"{clip}encoder.layers.{i}.{n}.bias"}
    return keys


def raw_keys(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, "pt") as f:
            tensors.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    return tensors


@torch.no_grad()
def test_official_key_names_round_trip(model: Phi3VForCausalLM, tmp_path: Path) -> None:
    ids = torch.tensor([ROWS[0]])
    pixels, sizes = batch_images(GRIDS[:1])
    before = model(input_ids=ids, pixel_values=pixels, image_sizes=sizes).logits

    model.save_pretrained(tmp_path / "saved")
    saved = raw_keys(tmp_path / "saved")
    assert set(saved) == official_key_names(model.config)
    assert "auto_map" not in json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["model.vision_embed_tokens.glb_GN"].shape == (1, 1, 64)
    assert saved["model.vision_embed_tokens.sub_GN"].shape == (1, 1, 1, 64)

    loaded, info = Phi3VForCausalLM.from_pretrained(tmp_path / "saved", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    after = loaded.eval()(input_ids=ids, pixel_values=pixels, image_sizes=sizes).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    # saving a loaded model writes the same layout again (no double prefixes)
    loaded.save_pretrained(tmp_path / "again", max_shard_size="40KB")
    assert len(list((tmp_path / "again").glob("*.safetensors"))) > 1
    index = json.loads((tmp_path / "again" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(saved)
    assert set(raw_keys(tmp_path / "again")) == set(saved)


def official_style_folder(model: Phi3VForCausalLM, folder: Path) -> Path:
    """A folder laid out like the released download: remote-code config, two shards + index,
    the duplicated `vision_embed_tokens.wte`, bf16-style config extras."""
    folder.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["model.vision_embed_tokens.wte.weight"] = state["model.embed_tokens.weight"].clone()
    names = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, folder / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, file))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
    )
    config = model.config.to_dict()
    for key in ("vision_config", "rope_parameters", "transformers_version", "dtype"):
        config.pop(key, None)
    config.update(
        {
            "auto_map": {
                "AutoConfig": "configuration_phi3_v.Phi3VConfig",
                "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM",
            },
            "_attn_implementation": "flash_attention_2",
            "rope_scaling": {"type": "su", "long_factor": [1.0] * 4, "short_factor": [1.0] * 4},
            "rope_theta": 10000.0,
            "torch_dtype": "float32",
            "transformers_version": "4.38.1",
            # the tiny tower is not ViT-L, so it is spelled out (the released file names it)
            "vision_config": model.config.vision_config.to_dict(),
        }
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@torch.no_grad()
def test_official_style_folder_loads_without_remote_code(
    model: Phi3VForCausalLM, tmp_path: Path
) -> None:
    folder = official_style_folder(model, tmp_path / "download")
    # no trust_remote_code; the duplicated `wte` is accepted, nothing is missing
    loaded, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert type(loaded) is Phi3VForCausalLM
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert loaded.config._attn_implementation == "sdpa"  # flash-attn is not installed here
    assert loaded.config.rope_parameters["rope_type"] == "longrope"

    ids = torch.tensor([ROWS[2]])
    pixels, sizes = batch_images(GRIDS[2:])
    expected = model(input_ids=ids, pixel_values=pixels, image_sizes=sizes).logits
    got = loaded.eval()(input_ids=ids, pixel_values=pixels, image_sizes=sizes).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    eager = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"
    assert eager.config.vision_config._attn_implementation == "eager"

    loaded.save_pretrained(tmp_path / "export")
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert "auto_map" not in config
    assert set(raw_keys(tmp_path / "export")) == official_key_names(model.config)


@torch.no_grad()
@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_forward_equals_one_by_one(model: Phi3VForCausalLM, side: str) -> None:
    ids, mask = pad_batch(ROWS, side)
    pixels, sizes = batch_images(GRIDS)
    batched = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_sizes=sizes)

    image_index = 0
    for i, (r, grid) in enumerate(zip(ROWS, GRIDS, strict=True)):
        extra = {}
        if grid:
            extra = {
                "pixel_values": pixels[image_index : image_index + 1],
                "image_sizes": sizes[image_index : image_index + 1],
            }
            image_index += 1
        single = model(input_ids=torch.tensor([r]), **extra).logits[0]
        got = batched.logits[i][mask[i].bool()]
        torch.testing.assert_close(got, single, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_official_negative_ids_give_same_logits_and_are_not_mutated(
    model: Phi3VForCausalLM,
) -> None:
    ids = torch.tensor([ROWS[0]])
    negative = ids.masked_fill(ids == IMAGE, -1)
    kept = negative.clone()
    pixels, sizes = batch_images(GRIDS[:1])
    a = model(input_ids=ids, pixel_values=pixels, image_sizes=sizes).logits
    b = model(input_ids=negative, pixel_values=pixels, image_sizes=sizes).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(negative, kept)


@torch.no_grad()
def test_inconsistent_inputs_give_clear_errors(model: Phi3VForCausalLM) -> None:
    pixels, sizes = batch_images(GRIDS[:1])
    short = torch.tensor([[1, 5, *[IMAGE] * (n_image_tokens(2, 1) - 1), 7]])
    with pytest.raises(ModelError, match=r"placeholder tokens but the 1 image"):
        model(input_ids=short, pixel_values=pixels, image_sizes=sizes)
    negative = torch.tensor([ROWS[0]]).masked_fill(torch.tensor([ROWS[0]]) == IMAGE, -1)
    with pytest.raises(ModelError, match="labels hold negative ids"):
        model(input_ids=negative, pixel_values=pixels, image_sizes=sizes, labels=negative)
    with pytest.raises(ModelError, match="no pixel_values"):
        model(input_ids=torch.tensor([ROWS[0]]))  # placeholders but no image
    with pytest.raises(ModelError, match="multiples of the crop size"):
        model(
            input_ids=torch.tensor([ROWS[0]]),
            pixel_values=pixels,
            image_sizes=torch.tensor([[20, 16]]),
        )


@torch.no_grad()
def test_text_only_batch_with_empty_image_tensor(model: Phi3VForCausalLM) -> None:
    ids = torch.tensor([ROWS[1]])
    empty = torch.zeros(0, MAX_CROPS + 1, 3, CROP, CROP)
    a = model(input_ids=ids).logits
    b = model(input_ids=ids, pixel_values=empty, image_sizes=torch.zeros(0, 2)).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@torch.no_grad()
def test_released_sliding_window_does_not_change_logits(model: Phi3VForCausalLM) -> None:
    windowed = tiny_model(sliding_window=131072)  # the released config sets it
    windowed.load_state_dict(model.state_dict())
    ids, mask = pad_batch(ROWS, "left")
    pixels, sizes = batch_images(GRIDS)
    kwargs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_sizes=sizes)
    a, b = model(**kwargs).logits, windowed(**kwargs).logits
    torch.testing.assert_close(a[mask.bool()], b[mask.bool()], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_the_image_reaches_the_answer_positions(model: Phi3VForCausalLM) -> None:
    ids = torch.tensor([ROWS[0]])
    pixels, sizes = batch_images(GRIDS[:1], seed=0)
    other, _ = batch_images(GRIDS[:1], seed=7)
    a = model(input_ids=ids, pixel_values=pixels, image_sizes=sizes).logits[0]
    b = model(input_ids=ids, pixel_values=other, image_sizes=sizes).logits[0]
    first_image = ROWS[0].index(IMAGE)
    torch.testing.assert_close(a[:first_image], b[:first_image])  # causal: text before the image
    answer = slice(len(ROWS[0]) - 3, None)
    assert (a[answer] - b[answer]).abs().max() > 1e-3


def greedy(model, ids, mask, pixels, sizes, use_cache: bool, new: int = 6) -> torch.Tensor:
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=pixels,
        image_sizes=sizes,
        max_new_tokens=new,
        do_sample=False,
        use_cache=use_cache,
        pad_token_id=PAD,
        eos_token_id=None,
    )
    return out[:, ids.shape[1] :]


@torch.no_grad()
def test_cached_greedy_equals_uncached_and_batched_equals_single(
    model: Phi3VForCausalLM,
) -> None:
    prompts = [r[:-2] for r in ROWS]
    ids, mask = pad_batch(prompts, "left")
    pixels, sizes = batch_images(GRIDS)
    cached = greedy(model, ids, mask, pixels, sizes, use_cache=True)
    uncached = greedy(model, ids, mask, pixels, sizes, use_cache=False)
    assert torch.equal(cached, uncached)

    image_index = 0
    for i, (p, grid) in enumerate(zip(prompts, GRIDS, strict=True)):
        one_px = one_sz = None
        if grid:
            one_px, one_sz = (
                pixels[image_index : image_index + 1],
                sizes[image_index : image_index + 1],
            )
            image_index += 1
        single = greedy(
            model,
            torch.tensor([p]),
            torch.ones(1, len(p), dtype=torch.long),
            one_px,
            one_sz,
            use_cache=True,
        )
        assert torch.equal(single[0], cached[i]), f"row {i}"


@torch.no_grad()
def test_cached_generation_across_the_longrope_switch_matches_uncached() -> None:
    """Past `original_max_position_embeddings` longrope switches factors; the cache built with
    the short ones must be recomputed, as in transformers' Phi3ForCausalLM."""
    head_half = 32 // 4 // 2
    model = tiny_model(
        seed=5,
        original_max_position_embeddings=26,
        rope_scaling={
            "type": "su",
            "short_factor": [1.0] * head_half,
            "long_factor": [3.0] * head_half,
        },
    )
    prompt = ROWS[0][:-2]  # 23 tokens: generation crosses position 26
    ids = torch.tensor([prompt])
    pixels, sizes = batch_images(GRIDS[:1])
    runs = [
        model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=pixels,
            image_sizes=sizes,
            max_new_tokens=8,
            do_sample=False,
            use_cache=use_cache,
            pad_token_id=PAD,
            eos_token_id=None,
            output_logits=True,
            return_dict_in_generate=True,
        )
        for use_cache in (True, False)
    ]
    assert torch.equal(runs[0].sequences, runs[1].sequences)
    for cached, full in zip(runs[0].logits, runs[1].logits, strict=True):
        torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)


def loss_and_grads(model: Phi3VForCausalLM) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ids, mask = pad_batch(ROWS, "right")
    labels = ids.masked_fill((mask == 0) | (ids == IMAGE), -100)
    pixels, sizes = batch_images(GRIDS)
    model.zero_grad()
    loss = model(
        input_ids=ids, attention_mask=mask, pixel_values=pixels, image_sizes=sizes, labels=labels
    ).loss
    loss.backward()
    return loss.detach(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    model = tiny_model(seed=1).train()
    loss, grads = loss_and_grads(model)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
    assert any("CLIP" in type(m).__name__ for m in checkpointed)
    assert any("Phi3DecoderLayer" in type(m).__name__ for m in checkpointed)
    loss_gc, grads_gc = loss_and_grads(model)
    torch.testing.assert_close(loss_gc, loss)
    assert grads_gc.keys() == grads.keys()
    assert any(".img_processor." in n for n in grads)  # the CLIP tower got gradients
    for name in grads:
        torch.testing.assert_close(grads_gc[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("num_items_in_batch", [None, 23])
def test_training_loss_skips_unlabelled_logits_with_the_same_loss_and_gradients(
    num_items_in_batch: int | None,
) -> None:
    """In training the loss is computed from the labelled positions only (no logits are
    returned); loss and every gradient equal a cross-entropy computed here by hand from the
    full logits of the same weights."""
    model = tiny_model(seed=4).train()
    ids, mask = pad_batch(ROWS, "right")
    labels = ids.masked_fill((mask == 0) | (ids == IMAGE), -100)
    labels[:, :3] = -100  # the prompt carries no loss, as in vistune's batches
    pixels, sizes = batch_images(GRIDS)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_sizes=sizes)
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}

    out = model(**inputs, labels=labels, **extra)
    assert out.logits is None
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    logits = model(**inputs).logits  # no labels: every position's logits
    assert logits.shape[:2] == ids.shape
    targets = labels[:, 1:].reshape(-1)
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    total = torch.nn.functional.cross_entropy(flat, targets, ignore_index=-100, reduction="sum")
    count = (targets != -100).sum() if num_items_in_batch is None else num_items_in_batch
    expected = total / count
    expected.backward()

    torch.testing.assert_close(out.loss, expected.detach(), rtol=1e-5, atol=1e-6)
    assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, grad in grads.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, rtol=1e-4, atol=1e-6)


def test_evaluation_with_labels_still_returns_every_logit(model: Phi3VForCausalLM) -> None:
    ids, mask = pad_batch(ROWS, "right")
    pixels, sizes = batch_images(GRIDS)
    with torch.no_grad():
        out = model(
            input_ids=ids, attention_mask=mask, pixel_values=pixels, image_sizes=sizes, labels=ids
        )
    assert out.logits.shape == (*ids.shape, model.config.vocab_size)
    assert torch.isfinite(out.loss)


@torch.no_grad()
def test_sdpa_and_eager_agree() -> None:
    eager = tiny_model(seed=2, attn_implementation="eager")
    sdpa = tiny_model(seed=2, attn_implementation="sdpa")
    assert eager.config._attn_implementation == "eager"
    assert (
        sdpa.model.vision_embed_tokens.img_processor.vision_model.config._attn_implementation
        == "sdpa"
    )
    ids, mask = pad_batch(ROWS, "left")
    pixels, sizes = batch_images(GRIDS)
    kwargs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_sizes=sizes)
    a, b = eager(**kwargs).logits, sdpa(**kwargs).logits
    torch.testing.assert_close(a[mask.bool()], b[mask.bool()], rtol=1e-4, atol=1e-4)


def test_text_only_training_batch_still_reaches_the_vision_tower() -> None:
    model = tiny_model(seed=3).train()
    ids = torch.tensor([ROWS[1]])
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    vision = model.model.vision_embed_tokens
    used = [
        p
        for n, p in vision.named_parameters()
        if "encoder.layers.2" not in n and "post_layernorm" not in n
    ]
    assert all(p.grad is not None for p in used)
    assert all(torch.count_nonzero(p.grad) == 0 for p in used)
    with torch.no_grad():  # the vision tower's zero contribution leaves the loss unchanged
        reference = tiny_model(seed=3).eval()(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(out.loss.detach(), reference)


def test_lora_trains_a_step() -> None:
    peft = pytest.importorskip("peft")
    model = tiny_model(seed=4)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    from vistune.models.compat import peft_wrapping

    with peft_wrapping():
        lora = peft.get_peft_model(
            model,
            peft.LoraConfig(
                r=4,
                lora_alpha=8,
                lora_dropout=0.0,
                target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
            ),
        )
    lora.train()
    names = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert {
        t for t in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj") if any(t in n for n in names)
    } == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    ids, mask = pad_batch(ROWS, "right")
    labels = ids.masked_fill((mask == 0) | (ids == IMAGE), -100)
    pixels, sizes = batch_images(GRIDS)
    losses = []
    for _ in range(5):
        loss = lora(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=pixels,
            image_sizes=sizes,
            labels=labels,
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    # the frozen base weights did not move; only the adapters did
    for name, param in lora.named_parameters():
        if "lora_" not in name:
            original = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(param, base[original]), name
    merged = lora.merge_and_unload()
    changed = [n for n, p in merged.named_parameters() if not torch.equal(p, base[n])]
    assert changed and all(
        any(t in n for t in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")) for n in changed
    )


def test_official_config_has_4_15b_parameters() -> None:
    released = json.loads((Path(__file__).parent / "official_config.json").read_text())
    config = Phi3VConfig.from_dict(released)
    with torch.device("meta"):
        model = Phi3VForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    assert abs(total - 4.15e9) / 4.15e9 < 0.01, total
