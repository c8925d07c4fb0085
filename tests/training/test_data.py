"""Batches as the model sees them: loss only on answer tokens, dynamic padding, picklable."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from vistune.answer import DEFAULT_QUESTION, DEFAULT_TEMPLATE, format_answer
from vistune.training.data import CatalogDataset, EpochSeededLengthSampler, VlmCollator


@pytest.fixture(scope="module")
def vlm(tiny_phi3v_dir: Path):
    from vistune.models.families import load_vlm

    return load_vlm(str(tiny_phi3v_dir))


@pytest.fixture(scope="module")
def train_set(prepared_dir: Path) -> CatalogDataset:
    return CatalogDataset(
        prepared_dir, "train", question=DEFAULT_QUESTION, template=DEFAULT_TEMPLATE
    )


def test_items_are_image_question_answer(train_set: CatalogDataset) -> None:
    item = train_set[0]
    assert item["image"].mode == "RGB"
    assert item["question"] == DEFAULT_QUESTION
    row = train_set.frame.iloc[0].to_dict()
    assert item["answer"] == format_answer(row, DEFAULT_TEMPLATE)
    assert item["answer"].startswith(f"Product: {row['title']}, Category: ")


def test_labels_cover_exactly_the_answers(vlm, train_set: CatalogDataset) -> None:
    collator = VlmCollator(vlm.family, vlm.processor)
    items = [train_set[i] for i in range(6)]
    batch = collator(items)
    tokenizer = vlm.processor.tokenizer
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape
    # dynamic padding: the longest row has no padding at all
    assert int(mask.sum(dim=1).max()) == ids.shape[1]
    assert (labels[mask == 0] == -100).all()
    for row, item in enumerate(items):
        trained = labels[row] != -100
        positions = trained.nonzero().flatten()
        # one contiguous span at the end of the real tokens
        assert (positions.diff() == 1).all()
        assert int(positions[-1]) == int(mask[row].nonzero().max())
        assert torch.equal(labels[row][trained], ids[row][trained])
        text = tokenizer.decode(labels[row][trained].tolist(), skip_special_tokens=False)
        end = tokenizer.decode(labels[row][trained][-1:].tolist(), skip_special_tokens=False)
        assert text == item["answer"] + end
        assert end.strip() and end not in item["answer"]
        # nothing of the prompt or the image is trained on
        prompt = tokenizer.decode(ids[row][mask[row].bool() & ~trained].tolist())
        assert "What is shown in this image?" in prompt


def test_collator_pickles_without_the_model(vlm) -> None:
    collator = VlmCollator(vlm.family, vlm.processor)
    blob = pickle.dumps(collator)
    assert len(blob) < 5_000_000
    assert isinstance(pickle.loads(blob), VlmCollator)


def test_length_sampler_is_a_function_of_seed_and_epoch() -> None:
    lengths = [5, 50, 6, 49, 7, 48, 8, 47] * 4
    sampler = EpochSeededLengthSampler(4, lengths, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(len(lengths)))
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    fresh = EpochSeededLengthSampler(4, lengths, seed=3)
    fresh.set_epoch(1)
    assert list(fresh) == second  # a resumed run replays the same epoch order
    # groups of 4 consecutive indices have similar lengths (megabatch sorting)
    spreads = [
        max(lengths[i] for i in first[k : k + 4]) - min(lengths[i] for i in first[k : k + 4])
        for k in range(0, len(first), 4)
    ]
    assert sorted(spreads)[len(spreads) // 2] <= 3
