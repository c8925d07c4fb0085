"""The one interface training, evaluation and serving use to talk to a model.

A *family* knows how to load a model and its processor, how to phrase the question in the
model's chat template, how to turn (image, question, answer) triples into a padded batch
with labels, and how to generate. Phi-3-vision (vistune's native implementation) and any
transformers-native image-text-to-text model are the two implementations; nothing outside
`vistune.models` branches on a model type.

Contract for `collate` (both families, tested in tests/models):
- training batch (`answers` given): right padding; `input_ids`, `attention_mask`, `labels`
  plus the family's image tensors (`pixel_values`, `image_sizes`, ...). `labels` is -100 on
  every prompt, image-placeholder and padding token; only the answer tokens and the
  end-of-turn token after them carry their ids. No fixed max length: pad to the longest row.
- generation batch (`answers` None): left padding, no `labels`; the prompt ends with the
  assistant header so generation starts with the answer.
- a row whose image is None has no image placeholder in its prompt.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from transformers import BatchFeature, PreTrainedModel


@dataclass
class VisionLanguageModel:
    """A loaded model with its processor and the family that knows how to drive it."""

    model: PreTrainedModel
    processor: Any
    family: ModelFamily
    source: str

    def collate(
        self,
        images: Sequence[Image.Image | None],
        questions: Sequence[str],
        answers: Sequence[str] | None = None,
    ) -> BatchFeature:
        return self.family.collate(self.processor, images, questions, answers)

    @torch.inference_mode()
    def generate(
        self,
        images: Sequence[Image.Image | None],
        questions: Sequence[str],
        max_new_tokens: int = 64,
    ) -> list[str]:
        return self.family.generate(self, images, questions, max_new_tokens=max_new_tokens)

    def save(self, out_dir: str | Path) -> Path:
        """Write model weights (family's canonical layout, safetensors) and processor files."""
        out_dir = Path(out_dir)
        self.model.save_pretrained(out_dir)
        self.family.save_processor(self.processor, out_dir)
        return out_dir


class ModelFamily(ABC):
    """How one kind of vision-language model is loaded, prompted, batched and decoded."""

    name: ClassVar[str]
    #: LoRA target module names used when the config does not name any.
    default_lora_targets: ClassVar[tuple[str, ...]]
    #: Parameter-name prefixes of the vision encoder and of the vision->text projector, so the
    #: trainer can freeze or train each separately.
    vision_tower_prefixes: ClassVar[tuple[str, ...]]
    projector_prefixes: ClassVar[tuple[str, ...]]

    @classmethod
    @abstractmethod
    def matches(cls, config: dict[str, Any]) -> bool:
        """True when a raw `config.json` dict belongs to this family."""

    def load(
        self,
        source: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device_map: Any = None,
        quantization_config: Any = None,
        num_crops: int | None = None,
    ) -> VisionLanguageModel:
        """Load model + processor from a local folder or a hub id (no remote code)."""
        model = self.load_model(
            source, dtype=dtype, device_map=device_map, quantization_config=quantization_config
        )
        processor = self.load_processor(source, num_crops=num_crops, model=model)
        return VisionLanguageModel(
            model=model, processor=processor, family=self, source=str(source)
        )

    @abstractmethod
    def model_class(self) -> type[PreTrainedModel]:
        """The transformers class whose `from_pretrained` loads this family's weights."""

    def load_model(
        self,
        folder: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device_map: Any = None,
        quantization_config: Any = None,
    ) -> PreTrainedModel:
        """The model weights only, from safetensors (never pickles, never remote code)."""
        return self.model_class().from_pretrained(
            folder,
            dtype=dtype,
            device_map=device_map,
            quantization_config=quantization_config,
            trust_remote_code=False,
            use_safetensors=True,
        )

    @abstractmethod
    def load_processor(
        self, folder: str | Path, *, num_crops: int | None = None, model: Any = None
    ) -> Any:
        """The processor; `model`, when given, lets it check it matches the weights."""

    @abstractmethod
    def format_prompt(self, processor: Any, question: str, has_image: bool = True) -> str:
        """The chat-formatted prompt, ending with the assistant header."""

    @abstractmethod
    def collate(
        self,
        processor: Any,
        images: Sequence[Image.Image | None],
        questions: Sequence[str],
        answers: Sequence[str] | None = None,
    ) -> BatchFeature:
        """Build a padded batch; see the module docstring for the label contract."""

    @abstractmethod
    def generate(
        self,
        vlm: VisionLanguageModel,
        images: Sequence[Image.Image | None],
        questions: Sequence[str],
        max_new_tokens: int = 64,
    ) -> list[str]:
        """Greedy, batched (left-padded), KV-cached generation; returns only the answer text."""

    @abstractmethod
    def save_processor(self, processor: Any, out_dir: str | Path) -> None:
        """Write processor, image-processor and tokenizer files loadable by `load`."""
