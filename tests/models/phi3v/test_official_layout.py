"""Token-for-token parity with Microsoft's Phi-3-vision processor.

The reference below is re-derived from the official algorithm's description
(`processing_phi3_v.py`, `_convert_images_texts_to_inputs`), not from vistune's processor:
split the prompt at every `<|image_k|>`, run `tokenizer(chunk)` on each piece (special
tokens on, so each piece gets its BOS), and put image k's run of `-k` ids between the
pieces. vistune writes `<|image|>` where the official processor writes `-k`.

The tokenizers here are SentencePiece-style like the released one (a "▁" prepended to each
encoded text, spaces as "▁", byte fallback, `<s>` added by the post-processor), so the
prefix-space behaviour at the start of a chunk that follows an image run is exercised.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from vistune.models.phi3v.image_processing_phi3v import Phi3VImageProcessor
from vistune.models.phi3v.processing_phi3v import Phi3VProcessor
from vistune.models.tiny import IMAGE_PLACEHOLDERS, PHI3_SPECIAL_TOKENS

CROP, TOKENS = 16, 4
#: The chat template of microsoft/Phi-3-vision-128k-instruct's tokenizer_config.json.
OFFICIAL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + message['content']"
    " + '<|end|>\\n' }}{% endfor %}{% if add_generation_prompt and messages[-1]['role'] !="
    " 'assistant' %}{{- '<|assistant|>\\n' -}}{% endif %}"
)
CORPUS = [
    "What is the product, its category and its price?",
    "Product: Wool scarf in Archive Beige, Category: SCARVES, Full Price: 450.00",
    "Describe the two images. Which one is more expensive?",
    "hello world\nnew line",
]


def sentencepiece_tokenizer(style: str) -> PreTrainedTokenizerFast:
    """A tiny Llama/SentencePiece-style BPE, built offline.

    `legacy`: the released Phi-3 `tokenizer.json` layout (normalizer Prepend("▁") + Replace).
    `metaspace`: the newer conversion (Metaspace pre-tokenizer, prefix on the first piece).
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if style == "legacy":
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
        )
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="first", split=False
        )
    special = list(PHI3_SPECIAL_TOKENS + IMAGE_PLACEHOLDERS)
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=special + byte_tokens, show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
    )


def official_input_ids(
    tokenizer: PreTrainedTokenizerFast, prompt: str, tokens_per_image: list[int], image_id: int
) -> list[int]:
    """The official processor's input_ids for one prompt, with -k mapped to `image_id`."""
    pattern = r"<\|image_\d+\|>"
    chunks = [tokenizer(chunk).input_ids for chunk in re.split(pattern, prompt)]
    tags = [int(tag.split("|")[1].split("_")[-1]) for tag in re.findall(pattern, prompt)]
    runs = [[-k] * tokens_per_image[k - 1] for k in tags]
    ids: list[int] = []
    for index, chunk in enumerate(chunks):
        ids.extend(chunk)
        if index < len(runs):
            ids.extend(runs[index])
    return [image_id if t < 0 else t for t in ids]


def _processor(style: str) -> Phi3VProcessor:
    image_processor = Phi3VImageProcessor(num_crops=4, num_img_tokens=TOKENS, crop_size=CROP)
    return Phi3VProcessor(image_processor, sentencepiece_tokenizer(style))


def _tokens_per_image(images: list[Image.Image]) -> list[int]:
    reference = Phi3VImageProcessor(num_crops=4, num_img_tokens=TOKENS, crop_size=CROP)
    return [int(n) for n in reference(images)["num_img_tokens"]]


PROMPTS = [
    # (prompt, number of images)
    ("<|user|>\nWhat is the product, its category and its price?<|end|>\n<|assistant|>\n", 0),
    ("<|user|>\n<|image_1|>\nWhat is the product?<|end|>\n<|assistant|>\n", 1),
    (
        "<|user|>\n<|image_1|>\n<|image_2|>\nDescribe the two images. Which one is more"
        " expensive?<|end|>\n<|assistant|>\n",
        2,
    ),
]


@pytest.mark.parametrize("style", ["legacy", "metaspace"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_prompts_match_the_official_layout_token_for_token(style, side):
    processor = _processor(style)
    sizes = [(50, 20), (20, 36), (31, 90)]
    images = [Image.new("RGB", size, (40 * i, 90, 200)) for i, size in enumerate(sizes)]
    per_prompt = [[], images[:1], images[1:]]
    texts = [prompt for prompt, _ in PROMPTS]
    batch = processor(texts, images, padding_side=side)

    for i, (prompt, _) in enumerate(PROMPTS):
        expected = official_input_ids(
            processor.tokenizer,
            prompt,
            _tokens_per_image(per_prompt[i]) if per_prompt[i] else [],
            processor.image_token_id,
        )
        mask = batch["attention_mask"][i].bool()
        assert batch["input_ids"][i][mask].tolist() == expected
        padding = batch["input_ids"][i][~mask]
        assert (padding == processor.pad_token_id).all()
        if side == "left":
            assert mask[-len(expected) :].all()
        else:
            assert mask[: len(expected)].all()


@pytest.mark.parametrize("style", ["legacy", "metaspace"])
def test_single_prompts_match_the_official_layout(style):
    processor = _processor(style)
    for prompt, n_images in PROMPTS:
        images = [Image.new("RGB", (24 + 8 * k, 40)) for k in range(n_images)]
        got = processor(prompt, images)["input_ids"][0].tolist()
        counts = _tokens_per_image(images) if images else []
        assert got == official_input_ids(
            processor.tokenizer, prompt, counts, processor.image_token_id
        )


@pytest.mark.parametrize("style", ["legacy", "metaspace"])
def test_the_prefix_space_of_a_chunk_after_an_image_is_exercised(style):
    """Guard: a chunk tokenized on its own starts with "▁"; with the Metaspace layout that
    differs from slicing the joined text, so a processor that tokenized the whole prompt at
    once (or dropped the prefix) would fail the parity tests above."""
    tokenizer = sentencepiece_tokenizer(style)
    alone = tokenizer("\nWhat is the product?", add_special_tokens=False).input_ids
    joined = tokenizer("<|image_1|>\nWhat is the product?", add_special_tokens=False).input_ids
    assert alone[0] == tokenizer.convert_tokens_to_ids("▁")
    assert (alone != joined[1:]) == (style == "metaspace")


def test_zero_shot_prompt_is_the_model_card_prompt(tmp_path):
    """`vistune evaluate <official folder>` asks what Microsoft's model card asks, laid out
    the official way: BOS, user turn, image run, BOS, question, assistant header."""
    from vistune.answer import DEFAULT_QUESTION
    from vistune.models.families import Phi3VFamily

    folder = tmp_path / "official"
    sentencepiece_tokenizer("legacy").save_pretrained(folder)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config.update(
        add_bos_token=True,
        add_eos_token=False,
        chat_template=OFFICIAL_CHAT_TEMPLATE,
        tokenizer_class="LlamaTokenizer",
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    Phi3VImageProcessor(num_crops=4, num_img_tokens=TOKENS, crop_size=CROP).save_pretrained(folder)

    family = Phi3VFamily()
    processor = family.load_processor(folder)
    prompt = family.format_prompt(processor, DEFAULT_QUESTION)
    assert prompt == f"<|user|>\n<|image_1|>\n{DEFAULT_QUESTION}<|end|>\n<|assistant|>\n"

    image = Image.new("RGB", (64, 48), (200, 30, 30))
    batch = family.collate(processor, [image], [DEFAULT_QUESTION])
    model_card_prompt = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": f"<|image_1|>\n{DEFAULT_QUESTION}"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    expected = official_input_ids(
        processor.tokenizer, model_card_prompt, _tokens_per_image([image]), processor.image_token_id
    )
    assert batch["input_ids"][0].tolist() == expected
    assert torch.equal(batch["attention_mask"][0], torch.ones(len(expected), dtype=torch.long))
