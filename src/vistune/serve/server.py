"""Load the model a `ServeConfig` names and run the app under uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from vistune.serve.config import ServeConfig
from vistune.serve.predictor import Predictor


def load_predictor(config: ServeConfig) -> Predictor:
    """Load the model on the configured device with the question and answer format it was
    trained with (read from the run's config.yaml, as `vistune evaluate` does)."""
    from vistune.device import model_load_args
    from vistune.evaluation.runner import prompt_settings_of
    from vistune.models.families import load_vlm

    settings = prompt_settings_of(config)
    vlm = load_vlm(
        config.model,
        num_crops=settings["num_crops"],
        **model_load_args(config.device, "auto"),
    )
    vlm.model.eval()
    return Predictor(
        vlm,
        question=settings["question"],
        answer_template=settings["answer_template"],
        max_new_tokens=settings["max_new_tokens"],
    )


def build_app(config: ServeConfig) -> Any:
    """The FastAPI app with its model loaded, ready for uvicorn (or a test's live server)."""
    from vistune.serve.app import create_app

    predictor = load_predictor(config)
    return create_app(predictor, config, model_name=predictor.vlm.source)


def run_server(config: ServeConfig, console: Console | None = None) -> None:
    """Serve until Ctrl-C/SIGTERM; then drain (see `draining_server`) and stop."""
    console = console or Console(stderr=True)
    console.print(f"loading [bold]{config.model}[/] ...")
    app = build_app(config)
    if config.token is None and config.host not in ("127.0.0.1", "localhost", "::1"):
        console.print(
            f"[yellow]warning:[/] serving on {config.host} without --token: anyone who can "
            "reach this port can use the model"
        )
    console.print(
        f"serving on http://{config.host}:{config.port}/  (POST /v1/predict, POST "
        "/v1/chat/completions, GET /v1/models, GET /healthz; "
        f"batches of up to {config.max_batch_size}, wait {config.max_wait_ms:g} ms)"
    )
    server = draining_server(
        app,
        host=config.host,
        port=config.port,
        log_level="info",
        log_config=log_config(),
        grace_s=config.shutdown_grace_s,
    )
    server.run()


def log_config() -> dict[str, Any]:
    """uvicorn's logging setup, plus vistune's own serve messages (a client that went away)
    on the same stream and format."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["vistune"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


#: Time on top of the grace period for the batch running when it ends to finish and answer.
SHUTDOWN_MARGIN_S = 30.0


def draining_server(app: Any, *, grace_s: float, **settings: Any) -> Any:
    """A uvicorn server whose shutdown first tells the app to drain (`app.state.begin_drain`).

    uvicorn alone stops accepting connections, waits `timeout_graceful_shutdown` and then
    cancels what is left, which answers 500 to every request still queued for the model.
    Here SIGTERM (or `should_exit`) first switches the app to draining: new requests get 503
    with Retry-After, queued ones run for `grace_s`, the rest get 503; uvicorn's own
    timeout is set past that, so it never has to cancel a request.
    """
    import uvicorn

    class DrainingServer(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            begin_drain = getattr(getattr(app, "state", None), "begin_drain", None)
            if begin_drain is not None:
                begin_drain()
            await super().shutdown(sockets)

    return DrainingServer(
        uvicorn.Config(app, timeout_graceful_shutdown=int(grace_s + SHUTDOWN_MARGIN_S), **settings)
    )


@dataclass
class BackgroundServer:
    """A uvicorn server running in a thread of this process (tests, benchmarks)."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful stop: open requests finish, the batcher drains, the thread ends."""
        self.server.should_exit = True
        self.thread.join(timeout=timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"server at {self.url} did not stop within {timeout} s")


def start_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> BackgroundServer:
    """Serve `app` from a thread; port 0 binds any free port before the server starts."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    grace_s = getattr(getattr(app, "state", None), "shutdown_grace_s", 30.0)
    server = draining_server(app, log_level="warning", lifespan="on", grace_s=grace_s)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    url_host = f"[{host}]" if ":" in host else host
    return BackgroundServer(f"http://{url_host}:{bound_port}", server, thread)


@contextmanager
def serving_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """`with serving_in_thread(app) as url:` a live server for the block's duration."""
    background = start_in_thread(app, host, port)
    try:
        yield background.url
    finally:
        background.stop()
