"""`vistune serve`: an HTTP endpoint with an upload page and micro-batched predictions.

Needs the `serve` extra (FastAPI, uvicorn, python-multipart). The batcher, predictor and
upload guards import without it; `create_app` and `run_server` need it.
"""

from vistune.serve.batcher import BatchStats, MicroBatcher
from vistune.serve.config import ServeConfig
from vistune.serve.predictor import Prediction, Predictor

__all__ = ["BatchStats", "MicroBatcher", "Prediction", "Predictor", "ServeConfig"]
