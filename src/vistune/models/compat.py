"""Quiet the deprecation warnings libraries raise about each other's calls.

transformers 5.24 deprecates `PreTrainedModel.is_gradient_checkpointing` (in favour of
`is_activation_checkpointing`); peft reads the old name whenever it wraps a model. The call
is peft's, so a vistune user can do nothing about it: hide exactly that message, only while
peft wraps or loads a model, and let every other warning through.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Context for `get_peft_model` / `PeftModel.from_pretrained` calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield
