"""Tiny random models, built offline and deterministically, for tests and the demo.

`build_tiny_phi3v` writes a Phi-3-vision folder in the official layout (config.json with
`embd_layer`/`img_processor`, official safetensors key names, Phi-3 special tokens,
`preprocessor_config.json`), so every code path that loads a real checkpoint runs on it.
`build_tiny_native` writes a transformers-native LLaVA (CLIP vision + Llama text): the second
family. Both use a byte-level BPE tokenizer trained on a small built-in corpus plus the
caller's `corpus` (the demo passes the catalog answers so the vocabulary fits them), with
digits split one by one so prices are learned digit by digit.

Same arguments and seed give byte-identical weights and tokenizer files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from vistune.answer import DEFAULT_QUESTION

PHI3_SPECIAL_TOKENS = (
    "<unk>",
    "<s>",
    "</s>",
    "<|endoftext|>",
    "<|assistant|>",
    "<|system|>",
    "<|end|>",
    "<|user|>",
    "<|image|>",
)
#: `<|image_k|>` placeholders known to the tokenizer (the processor splits on any k).
IMAGE_PLACEHOLDERS = tuple(f"<|image_{k}|>" for k in range(1, 5))
NATIVE_IMAGE_TOKEN = "<image>"

#: Always in the tokenizer's training text: chat words, the answer labels, digits, letters.
BASE_CORPUS = (
    DEFAULT_QUESTION,
    "Product: , Category: , Full Price: ",
    "0123456789 .,:;!?-_/()%&'\"+#*",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "the a an of in on with and for this image photo shows product category price",
    "What is the product, its category and its price?",
)

NATIVE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def train_tokenizer(
    corpus: Iterable[str] = (),
    *,
    special_tokens: Iterable[str] = PHI3_SPECIAL_TOKENS + IMAGE_PLACEHOLDERS,
    vocab_size: int = 512,
) -> PreTrainedTokenizerFast:
    """Byte-level BPE over the built-in corpus + `corpus`, digits split individually.

    Special tokens get the first ids in the given order (`<unk>` 0, `<s>` 1, `</s>` 2 as in
    Phi-3). Any text stays encodable: the 256 byte symbols are always in the vocabulary.
    """
    texts = list(BASE_CORPUS) + [str(t) for t in corpus]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        model_max_length=4096,
    )


def _padded_vocab(tokenizer: PreTrainedTokenizerFast, multiple: int = 64) -> int:
    return -(-len(tokenizer) // multiple) * multiple


def _vision_config(
    image_size: int, patch_size: int, hidden: int, layers: int, heads: int
) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        hidden_act="quick_gelu",
        projection_dim=hidden,
    )


def build_tiny_phi3v(
    out_dir: str | Path,
    *,
    seed: int = 0,
    corpus: Iterable[str] = (),
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    text_hidden: int = 64,
    text_layers: int = 2,
    heads: int = 4,
    num_crops: int = 1,
    vocab_size: int = 512,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 4096,
) -> Path:
    """Write a tiny random Phi-3-vision checkpoint in the official folder layout.

    `image_size` is the crop size in pixels (336 in the real model) and must be an even
    multiple of `patch_size`; tokens per crop are `(image_size / patch_size / 2) ** 2`.
    The defaults give ~0.2 M parameters for fast tests; the demo passes larger knobs.
    """
    from vistune.models.phi3v import Phi3VConfig, Phi3VForCausalLM
    from vistune.models.phi3v.image_processing_phi3v import Phi3VImageProcessor
    from vistune.models.phi3v.processing_phi3v import CHAT_TEMPLATE, Phi3VProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(corpus, vocab_size=vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in PHI3_SPECIAL_TOKENS}
    tokens_per_crop = (image_size // patch_size // 2) ** 2
    vision = _vision_config(image_size, patch_size, vision_hidden, vision_layers, heads)
    config = Phi3VConfig(
        vocab_size=_padded_vocab(tokenizer),
        hidden_size=text_hidden,
        intermediate_size=intermediate_size or 2 * text_hidden,
        num_hidden_layers=text_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_position_embeddings,
        original_max_position_embeddings=max_position_embeddings,
        bos_token_id=ids["<s>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
        embd_layer={
            "embedding_cls": "image",
            "hd_transform_order": "sub_glb",
            "projection_cls": "mlp",
            "use_hd_transform": True,
            "with_learnable_separator": True,
        },
        img_processor={
            "image_dim_out": vision_hidden,
            "model_name": "vistune/tiny-clip",
            "name": "clip_vision_model",
            "num_img_tokens": tokens_per_crop,
        },
        vision_config=vision.to_dict(),
        image_token_id=ids["<|image|>"],
    )
    torch.manual_seed(seed)
    model = Phi3VForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<s>"],
        eos_token_id=[ids["</s>"], ids["<|endoftext|>"], ids["<|end|>"]],
        pad_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(out)

    image_processor = Phi3VImageProcessor(
        num_crops=num_crops, num_img_tokens=tokens_per_crop, crop_size=image_size
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    Phi3VProcessor(image_processor, tokenizer, CHAT_TEMPLATE).save_pretrained(out)
    _write_build_info(out, "phi3v", seed, model)
    return out


def build_tiny_native(
    out_dir: str | Path,
    *,
    seed: int = 0,
    corpus: Iterable[str] = (),
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    text_hidden: int = 64,
    text_layers: int = 2,
    heads: int = 4,
    vocab_size: int = 512,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 2048,
) -> Path:
    """Write a tiny random LLaVA (CLIP vision + Llama text) with processor and chat template.

    It loads with `AutoModelForImageTextToText`/`AutoProcessor` like any native model and
    uses the Pillow CLIP image processor (no torchvision needed).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(
        corpus, special_tokens=(*PHI3_SPECIAL_TOKENS, NATIVE_IMAGE_TOKEN), vocab_size=vocab_size
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (*PHI3_SPECIAL_TOKENS, "<image>")}
    num_patches = (image_size // patch_size) ** 2
    config = LlavaConfig(
        vision_config=_vision_config(image_size, patch_size, vision_hidden, vision_layers, heads),
        text_config=LlamaConfig(
            vocab_size=_padded_vocab(tokenizer),
            hidden_size=text_hidden,
            intermediate_size=intermediate_size or 2 * text_hidden,
            num_hidden_layers=text_layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=max_position_embeddings,
            bos_token_id=ids["<s>"],
            eos_token_id=ids["<|endoftext|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=False,
        ),
        image_token_id=ids[NATIVE_IMAGE_TOKEN],
        image_seq_length=num_patches,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<s>"],
        eos_token_id=[ids["<|endoftext|>"], ids["<|end|>"]],
        pad_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(out)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    tokenizer.chat_template = NATIVE_CHAT_TEMPLATE
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        chat_template=NATIVE_CHAT_TEMPLATE,
        image_token=NATIVE_IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(out)
    _write_build_info(out, "native", seed, model)
    return out


def _write_build_info(out: Path, kind: str, seed: int, model: torch.nn.Module) -> None:
    """A small record of what was built (read by people, not by loaders)."""
    info = {
        "builder": f"vistune.models.tiny.build_tiny_{kind}",
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / "vistune_tiny.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


__all__ = ["build_tiny_native", "build_tiny_phi3v", "train_tokenizer"]
