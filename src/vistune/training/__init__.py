"""Fine-tuning: `TrainConfig` in, a run dir with checkpoints and `final/` out.

`run_training` is the public entry point (CLI `vistune train`, the demo, tests); heavy
imports happen on first use so `import vistune.training` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vistune.training.config import TrainConfig

if TYPE_CHECKING:
    from vistune.training.run import TrainResult

__all__ = ["TrainConfig", "TrainResult", "run_training"]


def run_training(config: TrainConfig, resume: bool = False, force: bool = False) -> TrainResult:
    """Train as `config` says; see `vistune.training.run.run_training`."""
    from vistune.training.run import run_training as _run

    return _run(config, resume=resume, force=force)


def __getattr__(name: str) -> Any:
    if name == "TrainResult":
        from vistune.training.run import TrainResult

        return TrainResult
    raise AttributeError(name)
