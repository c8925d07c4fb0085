"""The two model families and `load_vlm`, the one way the rest of vistune gets a model.

- `Phi3VFamily`: Phi-3-vision / Phi-3.5-vision through vistune's native implementation
  (`Phi3VForCausalLM` + `Phi3VProcessor`), reading the official folder layout.
- `NativeFamily`: any transformers-native image-text-to-text model
  (`AutoModelForImageTextToText` + `AutoProcessor` with a chat template).

Both build batches the same way (see `vistune.models.base` for the label contract): the
prompt is run through the family's processor (which expands image placeholders), the answer
is tokenized on its own and appended with the end-of-turn token, and only the answer and that
end token carry labels. Tokenizing the answer separately keeps training identical to
generation, where the model continues the prompt's token ids.

`load_vlm(source)` accepts "tiny", a model folder, a PEFT adapter folder, a training run dir
or a hub id; no path ever enables remote code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from transformers import BatchFeature

from vistune.errors import ModelError
from vistune.models.base import ModelFamily, VisionLanguageModel
from vistune.models.compat import peft_wrapping

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
#: Files fetched for a hub id: configs, safetensors weights, tokenizer and processor files.
HUB_ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer.model")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer.json")
#: Bump when the tiny builders change what they write, so cached folders are rebuilt.
TINY_BUILD_VERSION = 1


# -- shared batching and generation --------------------------------------------------------
def _append_answers(
    prompts: BatchFeature,
    answer_ids: Sequence[Sequence[int]],
    *,
    end_token_id: int,
    pad_token_id: int,
) -> BatchFeature:
    """Right-padded training batch: prompt + answer + end token, labels on answer + end only.

    `prompts` is a padded processor output (either side); its rows are recovered from the
    attention mask. Other per-token tensors (shape [B, L], e.g. token type ids) are extended
    with zeros for the answer tokens; image tensors pass through unchanged.
    """
    input_ids, mask = prompts["input_ids"], prompts["attention_mask"].bool()
    batch_size, prompt_len = input_ids.shape
    per_token = [
        key
        for key, value in prompts.items()
        if key not in ("input_ids", "attention_mask")
        and isinstance(value, torch.Tensor)
        and value.shape[:2] == (batch_size, prompt_len)
    ]
    rows, labels, extra = [], [], {key: [] for key in per_token}
    for i in range(batch_size):
        prompt = input_ids[i][mask[i]].tolist()
        answer = [*answer_ids[i], end_token_id]
        rows.append(prompt + answer)
        labels.append([IGNORE_INDEX] * len(prompt) + answer)
        for key in per_token:
            values = prompts[key][i][mask[i]]
            extra[key].append(torch.cat([values, values.new_zeros(len(answer))]))
    longest = max(len(r) for r in rows)
    out_ids = torch.full((batch_size, longest), pad_token_id, dtype=torch.long)
    out_labels = torch.full((batch_size, longest), IGNORE_INDEX, dtype=torch.long)
    out_mask = torch.zeros((batch_size, longest), dtype=torch.long)
    data: dict[str, Any] = {}
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        out_ids[i, : len(row)] = torch.tensor(row)
        out_labels[i, : len(row)] = torch.tensor(label)
        out_mask[i, : len(row)] = 1
    for key in per_token:
        padded = extra[key][0].new_zeros((batch_size, longest))
        for i, values in enumerate(extra[key]):
            padded[i, : len(values)] = values
        data[key] = padded
    for key, value in prompts.items():
        if key not in data and key not in ("input_ids", "attention_mask"):
            data[key] = value
    data.update(input_ids=out_ids, attention_mask=out_mask, labels=out_labels)
    return BatchFeature(data=data)


#: Config attributes that name a multimodal placeholder id (transformers' native models).
PLACEHOLDER_ID_ATTRIBUTES = (
    "image_token_id",
    "image_token_index",
    "video_token_id",
    "video_token_index",
)


def placeholder_token_ids(model: Any, processor: Any) -> list[int]:
    """Every id that marks an image (or video) slot for this model and processor.

    Generation must never emit one: the model would read a generated placeholder as a slot to
    fill with image features that do not exist (native models raise, Phi-3-vision did too).
    """
    ids: set[int] = set()
    configs = [getattr(model, "config", None)]
    configs.append(getattr(configs[0], "text_config", None))
    for source in (*configs, processor):
        for attribute in PLACEHOLDER_ID_ATTRIBUTES:
            value = getattr(source, attribute, None) if source is not None else None
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                ids.add(value)
    return sorted(ids)


def _greedy_generate(
    vlm: VisionLanguageModel,
    batch: BatchFeature,
    *,
    stop_ids: Sequence[int],
    pad_token_id: int,
    max_new_tokens: int,
) -> list[str]:
    """Greedy KV-cached generation on a left-padded batch; returns the new text, stripped.

    Image placeholder ids are suppressed (their logit is -inf at every step), so a model that
    prefers one, such as an untrained model, answers with its next-best token instead.
    """
    model = vlm.model
    device = next(model.parameters()).device
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    inputs = {
        key: (value.to(device, dtype) if value.is_floating_point() else value.to(device))
        if isinstance(value, torch.Tensor)
        else value
        for key, value in batch.items()
    }
    was_training = model.training
    model.eval()
    try:
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            eos_token_id=list(dict.fromkeys(stop_ids)),
            pad_token_id=pad_token_id,
            suppress_tokens=placeholder_token_ids(model, vlm.processor) or None,
        )
    finally:
        model.train(was_training)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    tokenizer = getattr(vlm.processor, "tokenizer", vlm.processor)
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        if eos is not None:
            ids.extend(eos if isinstance(eos, list | tuple) else [eos])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids


def _check_lengths(images: Sequence[Any], questions: Sequence[str], answers: Any) -> None:
    if len(images) != len(questions) or (answers is not None and len(answers) != len(questions)):
        answered = f", {len(answers)} answers" if answers is not None else ""
        raise ValueError(
            "collate needs one image (or None), one question and, when training, one answer per"
            f" row: got {len(images)} images, {len(questions)} questions{answered}"
        )


# -- Phi-3-vision ----------------------------------------------------------------------------
class Phi3VFamily(ModelFamily):
    """Phi-3-vision / Phi-3.5-vision through vistune's native implementation."""

    name: ClassVar[str] = "phi3v"
    default_lora_targets: ClassVar[tuple[str, ...]] = (
        "qkv_proj",
        "o_proj",
        "gate_up_proj",
        "down_proj",
    )
    vision_tower_prefixes: ClassVar[tuple[str, ...]] = ("model.vision_embed_tokens.img_processor.",)
    projector_prefixes: ClassVar[tuple[str, ...]] = (
        "model.vision_embed_tokens.img_projection.",
        "model.vision_embed_tokens.glb_GN",
        "model.vision_embed_tokens.sub_GN",
    )

    @classmethod
    def matches(cls, config: dict[str, Any]) -> bool:
        return config.get("model_type") == "phi3_v"

    def model_class(self) -> type[Any]:
        from vistune.models.phi3v import Phi3VForCausalLM

        return Phi3VForCausalLM

    def load_processor(
        self, folder: str | Path, *, num_crops: int | None = None, model: Any = None
    ) -> Any:
        from vistune.models.phi3v import Phi3VProcessor

        try:
            processor = Phi3VProcessor.from_pretrained(folder, num_crops=num_crops)
        except (OSError, ValueError) as err:
            raise ModelError(
                f"{folder}: cannot load the Phi-3-vision processor files"
                f" (preprocessor_config.json, tokenizer.json): {err}"
            ) from err
        if model is not None:
            config = model.config
            # The model decides which id marks image positions and how big a crop is.
            processor.image_token_id = int(config.image_token_id)
            image_processor = processor.image_processor
            if (image_processor.crop_size, image_processor.num_img_tokens) != (
                config.crop_size,
                config.tokens_per_crop,
            ):
                raise ModelError(
                    f"{folder}: preprocessor_config.json has crop_size={image_processor.crop_size},"
                    f" num_img_tokens={image_processor.num_img_tokens} but the model's vision tower"
                    f" uses {config.crop_size}-px crops with {config.tokens_per_crop} tokens each;"
                    " fix preprocessor_config.json"
                )
        return processor

    def format_prompt(self, processor: Any, question: str, has_image: bool = True) -> str:
        return processor.format_prompt(question, num_images=int(has_image))

    def collate(
        self,
        processor: Any,
        images: Sequence[Image.Image | None],
        questions: Sequence[str],
        answers: Sequence[str] | None = None,
    ) -> BatchFeature:
        _check_lengths(images, questions, answers)
        prompts = [
            self.format_prompt(processor, q, image is not None)
            for image, q in zip(images, questions, strict=True)
        ]
        present = [image for image in images if image is not None]
        side = "left" if answers is None else "right"
        batch = processor(prompts, present, padding_side=side)
        if answers is None:
            return batch
        answer_ids = processor.tokenizer(list(answers), add_special_tokens=False)["input_ids"]
        return _append_answers(
            batch,
            answer_ids,
            end_token_id=processor.end_token_id,
            pad_token_id=processor.pad_token_id,
        )

    def generate(
        self,
        vlm: VisionLanguageModel,
        images: Sequence[Image.Image | None],
        questions: Sequence[str],
        max_new_tokens: int = 64,
    ) -> list[str]:
        processor = vlm.processor
        batch = self.collate(processor, images, questions)
        stop_ids = [processor.end_token_id, *_eos_ids(vlm.model, processor.tokenizer)]
        return _greedy_generate(
            vlm,
            batch,
            stop_ids=stop_ids,
            pad_token_id=processor.pad_token_id,
            max_new_tokens=max_new_tokens,
        )

    def save_processor(self, processor: Any, out_dir: str | Path) -> None:
        processor.save_pretrained(out_dir)


# -- transformers-native image-text-to-text models -----------------------------------------
class NativeFamily(ModelFamily):
    """Any `AutoModelForImageTextToText` model whose `AutoProcessor` has a chat template."""

    name: ClassVar[str] = "native"
    default_lora_targets: ClassVar[tuple[str, ...]] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    #: LLaVA-style (`vision_tower`), Idefics3/SmolVLM (`vision_model`), Qwen2-VL (`visual`).
    vision_tower_prefixes: ClassVar[tuple[str, ...]] = (
        "model.vision_tower.",
        "model.vision_model.",
        "model.visual.",
    )
    projector_prefixes: ClassVar[tuple[str, ...]] = (
        "model.multi_modal_projector.",
        "model.connector.",
        "model.visual.merger.",
    )

    _SENTINEL = "VISTUNE_ANSWER_SENTINEL"

    @classmethod
    def matches(cls, config: dict[str, Any]) -> bool:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        return config.get("model_type") in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    def model_class(self) -> type[Any]:
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText

    def load_processor(
        self, folder: str | Path, *, num_crops: int | None = None, model: Any = None
    ) -> Any:
        from transformers import AutoProcessor

        if num_crops is not None:
            logger.info(
                "num_crops=%s applies to Phi-3-vision only; %s ignores it", num_crops, folder
            )
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False)
        if getattr(processor, "chat_template", None) is None:
            raise ModelError(
                f"{folder}: the processor has no chat template (chat_template.jinja); vistune needs"
                " one to phrase questions for this model"
            )
        return processor

    def format_prompt(self, processor: Any, question: str, has_image: bool = True) -> str:
        content: list[dict[str, str]] = [{"type": "image"}] if has_image else []
        content.append({"type": "text", "text": question})
        return processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def end_of_turn_id(self, processor: Any) -> int:
        """The special token the chat template puts after an assistant answer (else EOS)."""
        tokenizer = processor.tokenizer
        conversation = [
            {"role": "user", "content": [{"type": "text", "text": "q"}]},
            {"role": "assistant", "content": [{"type": "text", "text": self._SENTINEL}]},
        ]
        rendered = processor.apply_chat_template(conversation, tokenize=False)
        if self._SENTINEL in rendered:
            suffix = rendered.split(self._SENTINEL, 1)[1]
            special = set(tokenizer.all_special_ids) | {
                i for i, t in tokenizer.added_tokens_decoder.items() if t.special
            }
            for token_id in tokenizer(suffix, add_special_tokens=False)["input_ids"]:
                if token_id in special:
                    return int(token_id)
        if tokenizer.eos_token_id is None:
            raise ModelError(
                "the chat template ends assistant turns with no special token and the tokenizer"
                " has no eos_token; vistune cannot tell where an answer ends"
            )
        return int(tokenizer.eos_token_id)

    def _pad_id(self, processor: Any) -> int:
        tokenizer = processor.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else None
        return int(pad if pad is not None else tokenizer.eos_token_id)

    def collate(
        self,
        processor: Any,
        images: Sequence[Image.Image | None],
        questions: Sequence[str],
        answers: Sequence[str] | None = None,
    ) -> BatchFeature:
        _check_lengths(images, questions, answers)
        prompts = [
            self.format_prompt(processor, q, image is not None)
            for image, q in zip(images, questions, strict=True)
        ]
        present = [image for image in images if image is not None]
        tokenizer = processor.tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        side = "left" if answers is None else "right"
        batch = processor(
            text=prompts,
            images=present or None,
            padding=True,
            padding_side=side,
            return_tensors="pt",
        )
        if answers is None:
            return batch
        answer_ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
        return _append_answers(
            batch,
            answer_ids,
            end_token_id=self.end_of_turn_id(processor),
            pad_token_id=self._pad_id(processor),
        )

    def generate(
        self,
        vlm: VisionLanguageModel,
        images: Sequence[Image.Image | None],
        questions: Sequence[str],
        max_new_tokens: int = 64,
    ) -> list[str]:
        processor = vlm.processor
        batch = self.collate(processor, images, questions)
        stop_ids = [self.end_of_turn_id(processor), *_eos_ids(vlm.model, processor.tokenizer)]
        return _greedy_generate(
            vlm,
            batch,
            stop_ids=stop_ids,
            pad_token_id=self._pad_id(processor),
            max_new_tokens=max_new_tokens,
        )

    def save_processor(self, processor: Any, out_dir: str | Path) -> None:
        processor.save_pretrained(out_dir)


FAMILIES: tuple[type[ModelFamily], ...] = (Phi3VFamily, NativeFamily)


def family_for(config: dict[str, Any]) -> ModelFamily:
    """The family that handles a raw `config.json` dict."""
    for family in FAMILIES:
        if family.matches(config):
            return family()
    raise ModelError(
        f"model_type {config.get('model_type')!r} is neither Phi-3-vision (phi3_v) nor a "
        "transformers-native image-text-to-text model; vistune cannot train it"
    )


# -- loading -----------------------------------------------------------------------------------
def cache_root() -> Path:
    """`$VISTUNE_CACHE`, else `~/.cache/vistune`."""
    return Path(os.environ.get("VISTUNE_CACHE") or Path.home() / ".cache" / "vistune")


def tiny_model_dir(tiny_options: dict[str, Any] | None = None) -> Path:
    """Build (once) and return the cached tiny model for these options.

    `tiny_options` are the size knobs of `build_tiny_phi3v` (plus `seed` and `corpus`);
    `family: "native"` builds the tiny LLaVA instead. The folder name hashes the options.
    """
    from vistune.models.tiny import build_tiny_native, build_tiny_phi3v

    options = dict(tiny_options or {})
    kind = options.pop("family", "phi3v")
    builders = {"phi3v": build_tiny_phi3v, "native": build_tiny_native}
    if kind not in builders:
        raise ModelError(f"tiny_options.family must be 'phi3v' or 'native', got {kind!r}")
    if "corpus" in options:
        options["corpus"] = [str(t) for t in options["corpus"]]
    key = json.dumps(
        {"version": TINY_BUILD_VERSION, "family": kind, **options}, sort_keys=True, default=str
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = cache_root() / "tiny" / f"{kind}-{digest}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        builders[kind](staging, **options)
        (staging / "tiny_options.json").write_text(key + "\n", encoding="utf-8")
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / "config.json").is_file():  # not a concurrent builder's win
                raise
    except TypeError as err:
        raise ModelError(f"tiny_options: {err}") from err
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: cannot read JSON ({err})") from err


def _snapshot(repo_id: str) -> Path:
    """Local folder for a hub id (safetensors + configs only; the cache when offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=list(HUB_ALLOW_PATTERNS)))
    except (LocalEntryNotFoundError, HFValidationError, OSError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        hint = (
            "the hub is offline (HF_HUB_OFFLINE=1) and it is not in the local Hugging Face cache;"
            f" download it on a connected machine (`hf download {repo_id}`) or pass a local folder"
            if offline
            else "check the id, your network and `hf auth login` for gated models, or pass a"
            " local folder"
        )
        raise ModelError(
            f"model {repo_id!r} is not a local folder and could not be fetched as a hub id: {hint}"
            f" ({err})"
        ) from err
    if not any(folder.glob("*.safetensors")):
        raise ModelError(
            f"model {repo_id!r} has no .safetensors weights; vistune never loads pickled weights"
            " (convert the checkpoint to safetensors first)"
        )
    return folder


def _resolve_folder(source: str, tiny_options: dict[str, Any] | None) -> Path:
    if source == "tiny":
        return tiny_model_dir(tiny_options)
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{path}: a model source must be a folder, 'tiny' or a hub id")
        return path
    if not HUB_ID.fullmatch(source):
        raise ModelError(f"{path}: no such model folder (and not a hub id like 'owner/name')")
    return _snapshot(source)


def load_vlm(
    source: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device_map: Any = None,
    num_crops: int | None = None,
    quantization_config: Any = None,
    tiny_options: dict[str, Any] | None = None,
    merge_adapter: bool = True,
) -> VisionLanguageModel:
    """Load a model + processor from "tiny", a folder, an adapter, a run dir or a hub id.

    A run dir (`config.yaml` + `final/`) loads `final/`. A PEFT adapter folder loads its
    base (`base_model_name_or_path`, resolved the same way) and applies the adapter, merged
    unless `merge_adapter=False` or the base is quantized; its processor comes from the
    adapter folder when saved there, else from the base.
    """
    folder = _resolve_folder(str(source), tiny_options)
    if (folder / "config.yaml").is_file() and (folder / "final").is_dir():
        folder = folder / "final"
    load_kwargs = {
        "dtype": dtype,
        "device_map": device_map,
        "quantization_config": quantization_config,
        "num_crops": num_crops,
    }
    if (folder / "adapter_config.json").is_file():
        return _load_adapter(folder, merge=merge_adapter, **load_kwargs)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelError(
            f"{folder}: no config.json or adapter_config.json; point at a model folder, a PEFT"
            " adapter folder, a training run dir (with final/), 'tiny' or a hub id"
        )
    family = family_for(read_json(config_file))
    try:
        vlm = family.load(folder, **load_kwargs)
    except OSError as err:  # missing weights, pickles only, unreadable files
        raise ModelError(
            f"{folder}: cannot load the model ({err}); vistune needs config.json, *.safetensors"
            " weights and the processor/tokenizer files in one folder"
        ) from err
    vlm.source = str(source)
    return vlm


def _load_adapter(
    adapter_dir: Path, *, merge: bool, num_crops: int | None, **model_kwargs: Any
) -> VisionLanguageModel:
    from peft import PeftModel

    adapter_config = read_json(adapter_dir / "adapter_config.json")
    base_source = adapter_config.get("base_model_name_or_path")
    if not base_source:
        raise ModelError(
            f"{adapter_dir / 'adapter_config.json'}: base_model_name_or_path is empty; set it to"
            " the base model's folder or hub id"
        )
    try:
        base_folder = _resolve_folder(str(base_source), None)
    except ModelError as err:
        raise ModelError(f"{adapter_dir}: cannot load the adapter's base model: {err}") from err
    family = family_for(read_json(base_folder / "config.json"))
    model = family.load_model(base_folder, **model_kwargs)
    with peft_wrapping():
        model = PeftModel.from_pretrained(model, adapter_dir)
    if merge and model_kwargs.get("quantization_config") is None:
        model = model.merge_and_unload()
    has_processor = any((adapter_dir / name).is_file() for name in PROCESSOR_FILES)
    processor_folder = adapter_dir if has_processor else base_folder
    base_model = model if merge else model.get_base_model()
    processor = family.load_processor(processor_folder, num_crops=num_crops, model=base_model)
    return VisionLanguageModel(
        model=model, processor=processor, family=family, source=str(adapter_dir)
    )


__all__ = [
    "FAMILIES",
    "NativeFamily",
    "Phi3VFamily",
    "cache_root",
    "family_for",
    "load_vlm",
    "placeholder_token_ids",
    "read_json",
    "tiny_model_dir",
]
