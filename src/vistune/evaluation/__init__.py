"""Evaluation: batched generation, the strict parser's scores, baselines, reports, W&B tables.

`generate_predictions` and `compute_metrics` are cheap and write nothing, so training's
periodic evaluation calls them on a validation subset; `run_evaluation` is `vistune
evaluate` (all files, report and W&B run).
"""

from vistune.evaluation.generation import generate_predictions, predictions_from_answers
from vistune.evaluation.metrics import compute_metrics, per_category_metrics
from vistune.evaluation.runner import EvalResult, EvaluateConfig, run_evaluation
from vistune.evaluation.tables import wandb_table

__all__ = [
    "EvalResult",
    "EvaluateConfig",
    "compute_metrics",
    "generate_predictions",
    "per_category_metrics",
    "predictions_from_answers",
    "run_evaluation",
    "wandb_table",
]
