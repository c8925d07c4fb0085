"""`vistune serve` on the command line: help, a clear error without the serve extra."""

from __future__ import annotations

import sys

import pytest
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
