"""The README's commands work (litgpt-style).

Every `vistune ...` command in a ```bash block must parse against the real CLI (a renamed
option or command fails here, not in a newcomer's terminal). The block of commands the
README says "run offline in seconds" is executed as written (in-process), in a scratch folder.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vistune.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)
OFFLINE_MARKER = "These run offline in seconds"


def bash_blocks(text: str) -> list[str]:
    return BLOCK.findall(text)


def commands(block: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, `a && b` split."""
    joined = block.replace("\\\n", " ")
    result = []
    for line in joined.splitlines():
        for part in line.split("&&"):
            part = part.strip()
            if part and not part.startswith("#"):
                result.append(part)
    return result


def vistune_args(command: str) -> list[str] | None:
    """The argument list of a vistune invocation (`vistune ...` or `... -m vistune.cli ...`)."""
    words = shlex.split(command)
    if words and words[0] == "vistune":
        return words[1:]
    if "vistune.cli" in words:
        return words[words.index("vistune.cli") + 1 :]
    return None


def readme_text() -> str:
    return README.read_text()


def test_readme_has_the_two_commands_first() -> None:
    blocks = bash_blocks(readme_text())
    assert "vistune demo" in blocks[0] and 'pip install -e ".[dev]"' in blocks[0]
    assert blocks[1].strip() == "python -m pytest -n 2"
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python -m pytest -n 2" in ci  # CI runs the README's test command


def all_vistune_commands() -> list[list[str]]:
    found = []
    for block in bash_blocks(readme_text()):
        for command in commands(block):
            args = vistune_args(command)
            if args is not None:
                found.append(args)
    return found


@pytest.mark.parametrize("args", all_vistune_commands(), ids=lambda a: " ".join(a)[:60])
def test_every_readme_command_parses(args: list[str]) -> None:
    """Parse with the real CLI: `--help` is eager, so it runs only after every option and
    command name was accepted (an unknown one exits 2 with "No such option")."""
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"README command `vistune {' '.join(args)}`:\n{result.output}"


def test_a_wrong_option_would_be_caught() -> None:
    result = CliRunner().invoke(app, ["train", "--no-such-option", "1", "--help"])
    assert result.exit_code == 2


def test_the_offline_commands_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = readme_text()
    after = text[text.index(OFFLINE_MARKER) :]
    block = bash_blocks(after)[0]
    monkeypatch.chdir(tmp_path)
    for command in commands(block):
        args = vistune_args(command)
        assert args is not None, command
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, f"`{command}` failed:\n{result.output}"
    manifest = tmp_path / "data" / "manifest.json"
    assert manifest.is_file()
    assert all((tmp_path / "data" / f"{s}.parquet").is_file() for s in ("train", "test"))
