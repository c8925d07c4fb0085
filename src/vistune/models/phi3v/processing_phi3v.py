"""Batched Phi-3-vision processor: texts + images -> padded model inputs.

The official processor takes one string at a time, writes the k-th image's tokens as the
negative id `-k` and cannot pad a batch. This one takes several texts and a flat list of
images, expands each `<|image_k|>` placeholder to that image's number of `<|image|>` tokens
(a real vocabulary id, so nothing negative can reach embeddings or labels), pads left or
right with `<|endoftext|>` and returns attention masks.

The token layout is the official one, because a pretrained Phi-3-vision has only ever seen
that: the text is split at the `<|image_k|>` placeholders and every chunk is tokenized on
its own, as `tokenizer(chunk)` does in Microsoft's processor. So every chunk starts with BOS
(a BOS follows each image run) and the tokenizer's normalizer sees each chunk as the start
of a text (the SentencePiece-style "▁" prefix of the released tokenizer lands at the start
of the chunk after an image run, not where it would fall in the joined string).

Placeholders are numbered per text, from 1: in each text `<|image_1|>` .. `<|image_n|>`
name that text's images, and the flat `images` list holds text 0's images, then text 1's,
and so on (the order in which the model consumes them).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.processing_utils import ProcessorMixin

from vistune.models.phi3v.image_processing_phi3v import Phi3VImageProcessor
from vistune.models.phi3v.modeling_phi3v import image_token_mask

IMAGE_TOKEN = "<|image|>"
#: `<|image|>` in the official Phi-3-vision tokenizer (vLLM and SGLang hard-code it too).
OFFICIAL_IMAGE_TOKEN_ID = 32044
PAD_TOKEN = "<|endoftext|>"
END_TOKEN = "<|end|>"
PLACEHOLDER = re.compile(r"<\|image_(\d+)\|>")

#: Phi-3(-vision) chat format; `content` carries the `<|image_k|>` placeholders.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + '\\n' + message['content'] + '<|end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}"
    "{{ '<|assistant|>' + '\\n' }}"
    "{% endif %}"
)

CHAT_TEMPLATE_FILE = "chat_template.jinja"


class Phi3VProcessor(ProcessorMixin):
    """Phi3VImageProcessor + the Phi-3 tokenizer, batched and padded."""

    def __init__(
        self,
        image_processor: Phi3VImageProcessor,
        tokenizer: PreTrainedTokenizerBase,
        chat_template: str | None = None,
        image_token_id: int | None = None,
    ) -> None:
        chat_template = chat_template or getattr(tokenizer, "chat_template", None) or CHAT_TEMPLATE
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.image_token_id = (
            image_token_id if image_token_id is not None else self._resolve_image_token_id()
        )
        self.pad_token_id = self._token_id(tokenizer.pad_token or PAD_TOKEN, "pad token")
        self.bos_token_id = tokenizer.bos_token_id
        self.end_token_id = self._token_id(END_TOKEN, "end-of-turn token")
        #: `tokenizer_class` written to tokenizer_config.json by `save_pretrained`.
        self.declared_tokenizer_class = "PreTrainedTokenizerFast"

    # -- token ids ---------------------------------------------------------------------------
    def _token_id(self, token: str, what: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or (token_id == self.tokenizer.unk_token_id and token != "<unk>"):
            raise ValueError(
                f"the tokenizer has no {what} {token!r}; Phi-3 tokenizers define it as a special "
                "token (add it with tokenizer.add_special_tokens)"
            )
        return int(token_id)

    def _resolve_image_token_id(self) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            # Official tokenizer files may not name it; the model's embedding row is 32044.
            return OFFICIAL_IMAGE_TOKEN_ID
        return int(token_id)

    @property
    def end_token(self) -> str:
        return END_TOKEN

    def image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Which positions are image tokens (also true for official negative ids)."""
        return image_token_mask(input_ids, self.image_token_id)

    # -- prompts -----------------------------------------------------------------------------
    def format_prompt(self, question: str, num_images: int = 1) -> str:
        """`<|user|>\\n<|image_1|>\\n{question}<|end|>\\n<|assistant|>\\n` via the chat template."""
        content = "".join(f"<|image_{k}|>\n" for k in range(1, num_images + 1)) + question
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}],
            chat_template=self.chat_template,
            tokenize=False,
            add_generation_prompt=True,
        )
        bos = self.tokenizer.bos_token
        if bos and prompt.startswith(bos):  # BOS is added as an id by __call__
            prompt = prompt[len(bos) :]
        return prompt

    # -- batching ----------------------------------------------------------------------------
    def __call__(
        self,
        text: str | Sequence[str],
        images: Image.Image | Sequence[Image.Image] | None = None,
        *,
        padding_side: str = "right",
        num_crops: int | None = None,
        add_bos: bool = True,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenize `text` (one or many), expand placeholders, pad; see the module docstring."""
        if kwargs:
            raise TypeError(f"unexpected arguments for Phi3VProcessor: {sorted(kwargs)}")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if return_tensors not in ("pt", None):
            raise ValueError(f"Phi3VProcessor returns torch tensors only, got {return_tensors!r}")
        texts = [text] if isinstance(text, str) else list(text)
        if images is None:
            images = []
        elif isinstance(images, Image.Image):
            images = [images]
        images = list(images)

        image_ids_per_text = [self._placeholder_ids(i, t) for i, t in enumerate(texts)]
        needed = sum(len(set(ids)) for ids in image_ids_per_text)
        if needed != len(images):
            raise ValueError(
                f"the texts name {needed} image(s) with <|image_k|> placeholders but "
                f"{len(images)} image(s) were given; pass one image per placeholder number"
            )
        image_inputs: dict[str, Any] = {}
        counts: list[int] = []
        if images:
            image_inputs = dict(self.image_processor(images, num_crops=num_crops))
            counts = list(image_inputs.pop("num_img_tokens"))

        # Tokenize every text chunk on its own, in one call (fast tokenizer, batched).
        chunks_per_text = [PLACEHOLDER.split(t)[::2] for t in texts]
        flat_chunks = [c for chunks in chunks_per_text for c in chunks]
        flat_ids = self.tokenizer(flat_chunks, add_special_tokens=False)["input_ids"]
        bos = [self.bos_token_id] if add_bos and self.bos_token_id is not None else []

        rows: list[list[int]] = []
        position = offset = 0
        for chunks, ids in zip(chunks_per_text, image_ids_per_text, strict=True):
            row: list[int] = []
            for j in range(len(chunks)):
                row.extend(bos)  # official: every chunk is `tokenizer(chunk)`, BOS included
                row.extend(flat_ids[position + j])
                if j < len(ids):
                    row.extend([self.image_token_id] * counts[offset + ids[j] - 1])
            position += len(chunks)
            offset += len(set(ids))
            rows.append(row)

        longest = max((len(r) for r in rows), default=0)
        input_ids = torch.full((len(rows), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            span = (
                slice(longest - len(row), longest) if padding_side == "left" else slice(0, len(row))
            )
            input_ids[i, span] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, span] = 1
        data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        data.update(image_inputs)
        return BatchFeature(data=data)

    @staticmethod
    def _placeholder_ids(index: int, text: str) -> list[int]:
        ids = [int(k) for k in PLACEHOLDER.findall(text)]
        if ids and sorted(set(ids)) != list(range(1, len(set(ids)) + 1)):
            raise ValueError(
                f"text {index}: image placeholders must be numbered <|image_1|> .. <|image_n|> "
                f"without gaps, got {sorted(set(ids))}"
            )
        return ids

    # -- files -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> Phi3VProcessor:
        """Load the official `preprocessor_config.json` + tokenizer files (no remote code).

        The tokenizer is read from `tokenizer.json` as it is (the official config names the
        slow `LlamaTokenizer`, which would rebuild the pipeline instead of reading it).
        """
        kwargs.pop("trust_remote_code", None)
        num_crops = kwargs.pop("num_crops", None)
        image_token_id = kwargs.pop("image_token_id", None)
        hub_kwargs = {
            k: kwargs[k]
            for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder")
            if kwargs.get(k) is not None
        }
        image_processor = Phi3VImageProcessor.from_pretrained(
            pretrained_model_name_or_path, **hub_kwargs
        )
        if num_crops is not None:
            image_processor.num_crops = int(num_crops)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(
            pretrained_model_name_or_path, **hub_kwargs
        )
        chat_template = None
        folder = Path(pretrained_model_name_or_path)
        template_file = folder / CHAT_TEMPLATE_FILE
        if template_file.is_file():
            chat_template = template_file.read_text(encoding="utf-8")
        processor = cls(image_processor, tokenizer, chat_template, image_token_id=image_token_id)
        config_file = folder / "tokenizer_config.json"
        if config_file.is_file():
            declared = json.loads(config_file.read_text(encoding="utf-8")).get("tokenizer_class")
            if declared and declared != "TokenizersBackend":
                processor.declared_tokenizer_class = declared
        return processor

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        """Write `preprocessor_config.json`, the tokenizer files and `chat_template.jinja`."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.image_processor.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        # transformers 5 writes "TokenizersBackend", a name older readers (the official
        # remote processor, vLLM on transformers 4.x) do not know: keep the source's class
        # ("LlamaTokenizer" for the released models) or the portable fast-tokenizer name.
        config_file = out / "tokenizer_config.json"
        tokenizer_config = json.loads(config_file.read_text(encoding="utf-8"))
        tokenizer_config["tokenizer_class"] = self.declared_tokenizer_class
        config_file.write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
        (out / CHAT_TEMPLATE_FILE).write_text(self.chat_template, encoding="utf-8")
        return [str(out / "preprocessor_config.json"), str(out / CHAT_TEMPLATE_FILE)]


def register_auto_classes() -> None:
    """Map phi3_v to these classes in AutoImageProcessor/AutoProcessor (idempotent).

    With a local class registered, transformers ignores the official files' `auto_map`
    instead of asking for `trust_remote_code`.
    """
    from transformers import AutoImageProcessor, AutoProcessor

    from vistune.models.phi3v.configuration_phi3v import Phi3VConfig

    AutoImageProcessor.register(
        Phi3VConfig, image_processor_classes={"pil": Phi3VImageProcessor}, exist_ok=True
    )
    AutoProcessor.register(Phi3VConfig, Phi3VProcessor, exist_ok=True)


__all__ = [
    "CHAT_TEMPLATE",
    "IMAGE_TOKEN",
    "Phi3VProcessor",
    "image_token_mask",
    "register_auto_classes",
]
