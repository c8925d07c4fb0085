"""The knobs printout shows the prompt the model sees, image runs and BOS placement included."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from vistune.models.families import load_vlm
from vistune.training.knobs import describe_batch


def test_prompt_shows_the_image_run_and_the_bos_after_it(tiny_phi3v_dir: Path) -> None:
    vlm = load_vlm(str(tiny_phi3v_dir))
    question = "What is shown in this image?"
    batch = vlm.collate([Image.new("RGB", (40, 30))], [question], ["Product: A, Category: B"])
    knobs = describe_batch(batch, vlm.processor.tokenizer, vlm.model.config.image_token_id)
    n_image = int(knobs.image_tokens_per_sample)
    assert n_image > 0
    assert knobs.example_prompt_text == (
        f"<s><|user|>\n<|image|>×{n_image}<s>\n{question}<|end|>\n<|assistant|>\n"
    )
    assert knobs.example_loss_text == "Product: A, Category: B<|end|>"
