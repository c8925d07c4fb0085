"""The start-of-run summary of what the model actually sees (axolotl/ms-swift habit).

Computed from a real collated batch, so a masking or resolution mistake (loss on the prompt,
no image tokens, answers cut short) is visible before hours of training, not after.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from vistune.training.model import ParamCounts


@dataclass
class BatchKnobs:
    rows: int
    tokens_per_sample: float
    image_tokens_per_sample: float
    loss_tokens_per_sample: float
    pixel_values_shape: list[int] | None
    example_loss_text: str
    example_prompt_text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def image_token_mask(input_ids: torch.Tensor, image_token_id: int | None) -> torch.Tensor:
    """Image placeholder positions: the configured id, or the official processor's ids < 0."""
    mask = input_ids < 0
    if image_token_id is not None:
        mask |= input_ids == image_token_id
    return mask


def describe_batch(batch: dict[str, Any], tokenizer: Any, image_token_id: int | None) -> BatchKnobs:
    """Token accounting of one training batch plus the decoded loss span of its first row."""
    input_ids = batch["input_ids"]
    attention = batch["attention_mask"].bool()
    labels = batch["labels"]
    rows = input_ids.shape[0]
    images = image_token_mask(input_ids, image_token_id) & attention
    loss = labels != -100
    first_loss_ids = labels[0][loss[0]].tolist()
    prompt = attention[0] & ~loss[0]
    pixel_values = batch.get("pixel_values")
    return BatchKnobs(
        rows=rows,
        tokens_per_sample=attention.sum().item() / rows,
        image_tokens_per_sample=images.sum().item() / rows,
        loss_tokens_per_sample=loss.sum().item() / rows,
        pixel_values_shape=list(pixel_values.shape) if pixel_values is not None else None,
        example_loss_text=tokenizer.decode(first_loss_ids, skip_special_tokens=False),
        example_prompt_text=prompt_text(
            input_ids[0][prompt].tolist(), images[0][prompt].tolist(), tokenizer
        ),
    )


def prompt_text(ids: list[int], is_image: list[bool], tokenizer: Any) -> str:
    """The prompt as the model sees it, each image run shown as `<|image|>×N`, so where the
    image sits and where BOS falls around it are visible before any GPU hour is spent."""
    parts: list[str] = []
    start = 0
    while start < len(ids):
        end = start
        while end < len(ids) and is_image[end] == is_image[start]:
            end += 1
        if is_image[start]:
            parts.append(f"<|image|>×{end - start}")
        else:
            parts.append(tokenizer.decode(ids[start:end], skip_special_tokens=False))
        start = end
    return "".join(parts)


def render_knobs(
    config: Any,
    params: ParamCounts,
    knobs: BatchKnobs,
    answer_lengths: list[int],
    precision: str,
    world_size: int,
    num_crops: int | None = None,
    strategy: str | None = None,
) -> str:
    """Human-readable block printed at the start of `vistune train`."""
    effective = config.per_device_batch_size * config.gradient_accumulation_steps * world_size
    lines = [
        f"model            {config.model}  (method {config.method}, precision {precision})",
        f"trainable params {params.trainable:,} of {params.total:,} ({100 * params.share:.2f} %)",
        f"vision tower     {'trained' if config.train_vision_tower else 'frozen'}; "
        f"projector {'trained' if config.train_projector else 'frozen'}",
        f"batch            {config.per_device_batch_size} per device x "
        f"{config.gradient_accumulation_steps} accumulation x {world_size} process(es) "
        f"= {effective} samples/step",
        f"sharding         {strategy or 'none'}",
        f"crops            num_crops={num_crops or config.num_crops or 'model default'}; "
        f"pixel_values {knobs.pixel_values_shape}",
        f"tokens/sample    {knobs.tokens_per_sample:.1f} total, "
        f"{knobs.image_tokens_per_sample:.1f} image, "
        f"{knobs.loss_tokens_per_sample:.1f} in the loss "
        f"({100 * knobs.loss_tokens_per_sample / max(knobs.tokens_per_sample, 1):.1f} %)",
        f"answer length    max {max(answer_lengths)} / mean "
        f"{sum(answer_lengths) / len(answer_lengths):.1f} tokens "
        f"(max_answer_tokens {config.max_answer_tokens})",
        f"prompt (no loss) {knobs.example_prompt_text!r}",
        f"loss on          {knobs.example_loss_text!r}",
    ]
    return "\n".join(lines)
