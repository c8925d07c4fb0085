"""Phi3VProcessor: batching, placeholder expansion, padding, official folder round trip."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vistune.models.phi3v.image_processing_phi3v import Phi3VImageProcessor, num_image_tokens
from vistune.models.phi3v.processing_phi3v import CHAT_TEMPLATE, Phi3VProcessor
from vistune.models.tiny import train_tokenizer

CROP, TOKENS = 16, 4  # 16-px crops, 4 features per crop (a 2x2 merged 4x4 grid)


@pytest.fixture(scope="module")
def processor() -> Phi3VProcessor:
    tokenizer = train_tokenizer(["Product: Wool scarf, Category: SCARVES, Full Price: 450.00"])
    image_processor = Phi3VImageProcessor(num_crops=4, num_img_tokens=TOKENS, crop_size=CROP)
    return Phi3VProcessor(image_processor, tokenizer)


def _unpadded(batch, i):
    mask = batch["attention_mask"][i].bool()
    return batch["input_ids"][i][mask].tolist()


def test_prompt_follows_the_phi3_chat_template(processor):
    prompt = processor.format_prompt("What is it?")
    assert prompt == "<|user|>\n<|image_1|>\nWhat is it?<|end|>\n<|assistant|>\n"
    assert processor.format_prompt("Q", num_images=0) == "<|user|>\nQ<|end|>\n<|assistant|>\n"


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_expands_placeholders_and_pads(processor, side):
    images = [Image.new("RGB", (50, 20)), Image.new("RGB", (20, 20)), Image.new("RGB", (30, 90))]
    texts = [
        processor.format_prompt("first"),
        processor.format_prompt("no image here", num_images=0),
        "<|user|>\n<|image_1|>\n<|image_2|>\ntwo images<|end|>\n<|assistant|>\n",
    ]
    batch = processor(texts, images, padding_side=side)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 3
    assert (ids >= 0).all(), "no negative (official-style) ids may leave the processor"
    assert batch["pixel_values"].shape == (3, 5, 3, CROP, CROP)

    expected = [num_image_tokens(h, w, CROP, TOKENS) for h, w in batch["image_sizes"].tolist()]
    image_mask = processor.image_token_mask(ids)
    assert image_mask.sum(dim=1).tolist() == [expected[0], 0, expected[1] + expected[2]]
    assert not (image_mask & ~mask.bool()).any()

    pad = processor.pad_token_id
    for i, images_in_row in enumerate([1, 0, 2]):
        row = _unpadded(batch, i)
        # Official layout: one BOS per text chunk, i.e. at the start and after each image run.
        assert row[0] == processor.bos_token_id
        assert row.count(processor.bos_token_id) == 1 + images_in_row
        image = [t == processor.image_token_id for t in row]
        run_ends = [k for k in range(len(row) - 1) if image[k] and not image[k + 1]]
        assert all(row[k + 1] == processor.bos_token_id for k in run_ends)
        padding = ids[i][~mask[i].bool()]
        assert (padding == pad).all()
        n = len(row)
        if side == "left":
            assert mask[i, -n:].all() and not mask[i, : ids.shape[1] - n].any()
        else:
            assert mask[i, :n].all() and not mask[i, n:].any()

    # Text between placeholders is tokenized as the tokenizer does it on its own.
    tail = processor.tokenizer("\nfirst<|end|>\n<|assistant|>\n", add_special_tokens=False)
    row0 = _unpadded(batch, 0)
    assert row0[-len(tail["input_ids"]) :] == tail["input_ids"]
    # The image run of row 0 is one contiguous block right after "<|user|>\n", then a BOS.
    head = processor.tokenizer("<|user|>\n", add_special_tokens=False)["input_ids"]
    start = 1 + len(head)
    assert row0[start : start + expected[0]] == [processor.image_token_id] * expected[0]
    assert row0[start + expected[0]] == processor.bos_token_id


def test_left_and_right_padding_hold_the_same_rows(processor):
    images = [Image.new("RGB", (64, 16)), Image.new("RGB", (16, 16))]
    texts = [processor.format_prompt("a longer question"), processor.format_prompt("q")]
    left = processor(texts, images, padding_side="left")
    right = processor(texts, images, padding_side="right")
    for i in range(2):
        assert _unpadded(left, i) == _unpadded(right, i)
    assert torch.equal(left["pixel_values"], right["pixel_values"])


def test_mismatched_images_and_gapped_placeholders_fail(processor):
    with pytest.raises(ValueError, match="1 image"):
        processor([processor.format_prompt("q")], [Image.new("RGB", (8, 8))] * 2)
    with pytest.raises(ValueError, match="without gaps"):
        processor(["<|image_2|> only"], [Image.new("RGB", (8, 8))])


def test_repeated_placeholder_reuses_the_same_image(processor):
    text = "<|image_1|> and again <|image_1|>"
    batch = processor([text], [Image.new("RGB", (16, 16))])
    per_image = num_image_tokens(*batch["image_sizes"][0].tolist(), CROP, TOKENS)
    assert per_image == 27  # 16x16 at 4 crops -> 32x32: (4 + 1) * 4 + 1 + 3 * 2
    assert processor.image_token_mask(batch["input_ids"]).sum() == 2 * per_image
    assert batch["pixel_values"].shape[0] == 1


def _official_folder(processor: Phi3VProcessor, folder):
    """Files laid out like microsoft/Phi-3-vision-128k-instruct (auto_map, LlamaTokenizer)."""
    processor.tokenizer.save_pretrained(folder)
    tokenizer_config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "legacy": False,
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "padding_side": "right",
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    preprocessor = {
        "auto_map": {
            "AutoProcessor": "processing_phi3_v.Phi3VProcessor",
            "AutoImageProcessor": "image_processing_phi3_v.Phi3VImageProcessor",
        },
        "do_convert_rgb": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "Phi3VImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "num_crops": 4,
        "num_img_tokens": TOKENS,
        "crop_size": CROP,
        "processor_class": "Phi3VProcessor",
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))


def test_official_folder_loads_offline_and_round_trips(processor, tmp_path):
    official = tmp_path / "official"
    _official_folder(processor, official)
    loaded = Phi3VProcessor.from_pretrained(official)
    assert loaded.image_processor.num_crops == 4
    assert loaded.image_token_id == processor.image_token_id
    images = [Image.new("RGB", (40, 24), (0, 128, 255))]
    texts = [processor.format_prompt("price?")]
    reference = processor(texts, images)
    got = loaded(texts, images)
    assert torch.equal(got["input_ids"], reference["input_ids"])
    assert torch.equal(got["pixel_values"], reference["pixel_values"])

    saved = tmp_path / "saved"
    loaded.save_pretrained(saved)
    written = json.loads((saved / "preprocessor_config.json").read_text())
    assert "auto_map" not in written and written["num_crops"] == 4
    # the released tokenizer class survives (transformers 5 alone would write TokenizersBackend)
    assert json.loads((saved / "tokenizer_config.json").read_text())["tokenizer_class"] == (
        "LlamaTokenizer"
    )
    assert (saved / "tokenizer.json").is_file() and (saved / "chat_template.jinja").is_file()
    again = Phi3VProcessor.from_pretrained(saved, num_crops=1)
    assert again.image_processor.num_crops == 1
    assert again.format_prompt("q") == processor.format_prompt("q")
    assert (
        again.tokenizer("Full Price: 12.50")["input_ids"]
        == processor.tokenizer("Full Price: 12.50")["input_ids"]
    )


def test_autoprocessor_finds_the_native_processor(processor, tmp_path):
    from transformers import AutoImageProcessor, AutoProcessor

    from vistune.models.phi3v.processing_phi3v import register_auto_classes

    register_auto_classes()  # `import vistune` does this through phi3v.register()

    _official_folder(processor, tmp_path)
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), Phi3VImageProcessor)
    assert isinstance(AutoProcessor.from_pretrained(tmp_path), Phi3VProcessor)
