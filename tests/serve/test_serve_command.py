"""`vistune serve` on the command line: help, a clear error without the serve extra."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from vistune.cli import app


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--token", "--max-batch-size", "--max-wait-ms"):
        assert option in result.output


def test_missing_serve_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi -> ImportError
    result = CliRunner().invoke(app, ["serve", "tiny"])
    assert result.exit_code == 1
    assert 'pip install "vistune[serve]"' in result.output
    assert "fastapi" in result.output


def test_bad_settings_fail_with_one_line(tmp_path: object) -> None:
    result = CliRunner().invoke(app, ["serve", "tiny", "--max-batch-size", "0"])
    assert result.exit_code == 1
    assert "max_batch_size" in result.output


@pytest.mark.slow
def test_vistune_serve_runs_and_stops_cleanly_on_sigterm(tiny_phi3v_dir: Path) -> None:
    """The real command in its own process: model load, auth, a prediction, SIGTERM."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "VISTUNE_SERVE_TOKEN": "t0ken-t0ken-t0ken"}
    command = [sys.executable, "-m", "vistune.cli", "serve", str(tiny_phi3v_dir)]
    command += ["--port", str(port), "--set", "max_new_tokens=8"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "vistune serve did not come up"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).json()["auth_required"]:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), (120, 20, 20)).save(buffer, format="PNG")
        files = {"image": ("a.png", buffer.getvalue(), "image/png")}
        assert httpx.post(f"{url}/v1/predict", files=files, timeout=60).status_code == 401
        response = httpx.post(
            f"{url}/v1/predict",
            files=files,
            headers={"Authorization": "Bearer t0ken-t0ken-t0ken"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert isinstance(response.json()["raw"], str)
    finally:
        process.send_signal(signal.SIGTERM)
        stderr = process.communicate(timeout=60)[1]
    # uvicorn shuts down gracefully (lifespan: the batcher drains), then re-raises the signal.
    assert process.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr
    assert "t0ken" not in stderr  # the token is never printed
