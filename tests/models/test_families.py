"""Families + load_vlm: label contract, batched generation, every kind of source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from vistune.errors import ModelError
from vistune.models.families import (
    IGNORE_INDEX,
    NativeFamily,
    Phi3VFamily,
    family_for,
    load_vlm,
)

ANSWERS = [
    "Product: Check Wool Scarf, Category: SCARVES, Full Price: 450.00",
    "Product: Trench, Category: COATS, Full Price: 2190.00",
    "Product: Tote, Category: BAGS, Full Price: 1350.00",
]
QUESTIONS = ["What is shown in this image?", "And this one?", "Price?"]


def _images():
    return [
        Image.new("RGB", (48, 32), (200, 30, 30)),
        None,
        Image.new("RGB", (20, 70), (20, 160, 60)),
    ]


@pytest.fixture(scope="module")
def phi3v(tiny_phi3v_dir):
    return load_vlm(str(tiny_phi3v_dir))


@pytest.fixture(scope="module")
def native(tiny_native_dir):
    return load_vlm(str(tiny_native_dir))


def test_family_for_picks_by_config():
    assert isinstance(family_for({"model_type": "phi3_v"}), Phi3VFamily)
    assert isinstance(family_for({"model_type": "llava"}), NativeFamily)
    assert isinstance(family_for({"model_type": "qwen2_vl"}), NativeFamily)
    with pytest.raises(ModelError, match="bert"):
        family_for({"model_type": "bert"})


def _image_positions(vlm, input_ids):
    if isinstance(vlm.family, Phi3VFamily):
        return vlm.processor.image_token_mask(input_ids)
    return input_ids == vlm.model.config.image_token_id


@pytest.mark.parametrize("which", ["phi3v", "native"])
def test_training_batch_supervises_only_answer_and_end_token(which, request):
    vlm = request.getfixturevalue(which)
    tokenizer = vlm.processor.tokenizer
    batch = vlm.collate(_images(), QUESTIONS, ANSWERS)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == labels.shape == mask.shape
    end_token = "<|end|>"  # both tiny templates end assistant turns with it
    for i, answer in enumerate(ANSWERS):
        supervised = labels[i][labels[i] != IGNORE_INDEX]
        assert tokenizer.decode(supervised) == answer + end_token
        n = int(mask[i].sum())
        assert mask[i, :n].all() and not mask[i, n:].any(), "training batches pad on the right"
        # the supervised span is the tail of the real tokens and equals the input ids there
        assert torch.equal(labels[i, n - len(supervised) : n], ids[i, n - len(supervised) : n])
        assert (labels[i, n:] == IGNORE_INDEX).all()
        prompt = tokenizer.decode(ids[i, : n - len(supervised)])
        assert prompt.rstrip().endswith("<|assistant|>")
        assert QUESTIONS[i] in prompt
    image_positions = _image_positions(vlm, ids)
    assert (labels[image_positions] == IGNORE_INDEX).all()
    assert image_positions[0].any() and not image_positions[1].any() and image_positions[2].any()
    assert (ids >= 0).all()
    with torch.no_grad():
        loss = vlm.model(**batch).loss
    assert torch.isfinite(loss)


@pytest.mark.parametrize("which", ["phi3v", "native"])
def test_generation_batch_is_left_padded_without_labels(which, request):
    vlm = request.getfixturevalue(which)
    batch = vlm.collate(_images(), QUESTIONS)
    assert "labels" not in batch
    mask = batch["attention_mask"]
    for i in range(mask.shape[0]):
        n = int(mask[i].sum())
        assert mask[i, -n:].all() and not mask[i, : mask.shape[1] - n].any()
    tail = vlm.processor.tokenizer.decode(batch["input_ids"][0, -3:])
    assert tail.endswith("<|assistant|>\n")


@pytest.mark.parametrize("which", ["phi3v", "native"])
def test_batched_generation_equals_one_by_one(which, request):
    vlm = request.getfixturevalue(which)
    images = _images()
    batched = vlm.generate(images, QUESTIONS, max_new_tokens=6)
    single = [
        vlm.generate([im], [q], max_new_tokens=6)[0]
        for im, q in zip(images, QUESTIONS, strict=True)
    ]
    assert batched == single
    assert all(isinstance(t, str) and t == t.strip() for t in batched)
    assert not vlm.model.training


class _ForceToken(torch.nn.Module):
    """Stands in for lm_head: every position predicts `token_id`."""

    def __init__(self, vocab_size: int, token_id: int):
        super().__init__()
        self.vocab_size, self.token_id = vocab_size, token_id

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*hidden.shape[:-1], self.vocab_size, dtype=hidden.dtype)
        logits[..., self.token_id] = 1.0
        return logits


def test_generation_stops_at_the_end_token_and_returns_only_new_text(phi3v):
    model, processor = phi3v.model, phi3v.processor
    vocab, head = model.config.vocab_size, model.lm_head
    x_id = processor.tokenizer.convert_tokens_to_ids("x")
    try:
        model.lm_head = _ForceToken(vocab, processor.end_token_id)
        ended = phi3v.generate([_images()[0], None], ["a", "b"], max_new_tokens=5)
        model.lm_head = _ForceToken(vocab, x_id)
        repeated = phi3v.generate([None], ["a"], max_new_tokens=5)
    finally:
        model.lm_head = head
    assert ended == ["", ""]
    assert repeated == ["xxxxx"]


def test_load_vlm_tiny_is_cached_by_options(tmp_path, monkeypatch):
    monkeypatch.setenv("VISTUNE_CACHE", str(tmp_path))
    first = load_vlm("tiny", tiny_options={"text_hidden": 32, "corpus": ["Trench Coat"]})
    assert isinstance(first.family, Phi3VFamily)
    folders = list((tmp_path / "tiny").iterdir())
    assert len(folders) == 1
    stamp = (folders[0] / "model.safetensors").stat().st_mtime_ns
    again = load_vlm("tiny", tiny_options={"corpus": ["Trench Coat"], "text_hidden": 32})
    assert (folders[0] / "model.safetensors").stat().st_mtime_ns == stamp
    assert torch.equal(first.model.lm_head.weight, again.model.lm_head.weight)
    load_vlm("tiny", tiny_options={"family": "native"})
    assert len(list((tmp_path / "tiny").iterdir())) == 2
    with pytest.raises(ModelError, match="tiny_options"):
        load_vlm("tiny", tiny_options={"no_such_knob": 1})


def test_load_vlm_folder_save_and_run_dir(phi3v, tmp_path):
    images, questions = _images(), QUESTIONS
    expected = phi3v.generate(images, questions, max_new_tokens=5)
    run_dir = tmp_path / "run"
    phi3v.save(run_dir / "final")
    (run_dir / "config.yaml").write_text("model: tiny\n")
    for source in (run_dir / "final", run_dir):
        vlm = load_vlm(str(source))
        assert isinstance(vlm.family, Phi3VFamily)
        assert vlm.generate(images, questions, max_new_tokens=5) == expected
    saved = json.loads((run_dir / "final" / "preprocessor_config.json").read_text())
    assert "auto_map" not in saved


def _make_adapter(tiny_phi3v_dir: Path, out: Path, with_processor: bool) -> torch.Tensor:
    """A LoRA adapter with non-zero B matrices; returns its logits on a probe batch."""
    from peft import LoraConfig, get_peft_model

    from vistune.models.compat import peft_wrapping

    base = load_vlm(str(tiny_phi3v_dir))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=list(Phi3VFamily.default_lora_targets))
    with peft_wrapping():
        peft_model = get_peft_model(base.model, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(out)
    batch = base.collate(_images(), QUESTIONS, ANSWERS)
    with torch.no_grad():
        logits = peft_model(**batch).logits
    if with_processor:
        base.processor.image_processor.num_crops = 2
        base.family.save_processor(base.processor, out)
    return logits


@pytest.mark.parametrize("with_processor", [True, False])
def test_load_vlm_adapter_folder(tiny_phi3v_dir, tmp_path, with_processor):
    adapter = tmp_path / "adapter"
    expected = _make_adapter(tiny_phi3v_dir, adapter, with_processor)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == Path(tiny_phi3v_dir)
    vlm = load_vlm(str(adapter))
    assert isinstance(vlm.family, Phi3VFamily)
    assert vlm.processor.image_processor.num_crops == (2 if with_processor else 1)
    vlm.processor.image_processor.num_crops = 1  # same pixels as the probe batch
    batch = vlm.collate(_images(), QUESTIONS, ANSWERS)
    with torch.no_grad():
        got = vlm.model(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    base = load_vlm(str(tiny_phi3v_dir))
    with torch.no_grad():
        assert not torch.allclose(base.model(**batch).logits, expected, atol=1e-3)


def test_load_vlm_adapter_with_missing_base_is_clear(tiny_phi3v_dir, tmp_path):
    adapter = tmp_path / "adapter"
    _make_adapter(tiny_phi3v_dir, adapter, with_processor=False)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="base model"):
        load_vlm(str(adapter))


def test_load_vlm_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelError, match="offline"):
        load_vlm("microsoft/Phi-3-vision-128k-instruct")
    with pytest.raises(ModelError, match="no such model folder"):
        load_vlm(str(tmp_path / "missing" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"config\.json"):
        load_vlm(str(tmp_path / "empty"))


def test_pickle_only_weights_are_refused(tiny_phi3v_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_phi3v_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelError, match="safetensors"):
        load_vlm(str(folder))


def test_native_folder_copy_loads(tiny_native_dir, tmp_path):
    copy = tmp_path / "native"
    shutil.copytree(tiny_native_dir, copy)
    vlm = load_vlm(str(copy))
    assert isinstance(vlm.family, NativeFamily)
    assert vlm.family.end_of_turn_id(
        vlm.processor
    ) == vlm.processor.tokenizer.convert_tokens_to_ids("<|end|>")


@pytest.fixture(scope="module")
def tiny_idefics3_dir(tmp_path_factory) -> Path:
    """A third architecture (Idefics3/SmolVLM: image splitting, pixel_attention_mask) that
    NativeFamily must drive with no code of its own."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    from vistune.models.tiny import train_tokenizer

    grid = [f"<row_{r}_col_{c}>" for r in range(1, 4) for c in range(1, 4)]
    specials = [
        "<unk>",
        "<s>",
        "</s>",
        "<|endoftext|>",
        "<end_of_utterance>",
        "<image>",
        "<fake_token_around_image>",
        "<global-img>",
        *grid,
    ]
    tokenizer = train_tokenizer(["User: Assistant:", *ANSWERS], special_tokens=specials)
    template = (
        "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}: "
        "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
        "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
        "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
    )
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=template,
        image_seq_len=4,
    )
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Idefics3Config(
        text_config={
            "model_type": "llama",
            "vocab_size": 576,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "pad_token_id": pad,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=pad,
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-idefics3")
    Idefics3ForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def test_native_family_drives_a_third_architecture(tiny_idefics3_dir):
    vlm = load_vlm(str(tiny_idefics3_dir))
    assert isinstance(vlm.family, NativeFamily)
    tokenizer = vlm.processor.tokenizer
    end_id = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    assert vlm.family.end_of_turn_id(vlm.processor) == end_id
    batch = vlm.collate(_images(), QUESTIONS, ANSWERS)
    for i, answer in enumerate(ANSWERS):
        labels = batch["labels"][i]
        assert tokenizer.decode(labels[labels != IGNORE_INDEX]) == answer + "<end_of_utterance>"
    with torch.no_grad():
        assert torch.isfinite(vlm.model(**batch).loss)
    images = _images()
    batched = vlm.generate(images, QUESTIONS, max_new_tokens=4)
    single = [
        vlm.generate([im], [q], max_new_tokens=4)[0]
        for im, q in zip(images, QUESTIONS, strict=True)
    ]
    assert batched == single
