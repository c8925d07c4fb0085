"""Every entry point answers bad paths and hostile files with one line and exit code 1."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from vistune.cli import app

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, (result.stderr or result.output).strip()


def assert_one_line_error(code: int, message: str, *expected: str) -> None:
    assert code == 1, message
    assert "Traceback" not in message, message
    last = message.splitlines()[-1]
    assert last.startswith("error:"), message
    for text in expected:
        assert text in last, message


def bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (10_000, 9_500)).save(buffer, format="PNG")  # 95 M pixels in ~12 kB
    return buffer.getvalue()


@pytest.fixture
def dataset_copy(prepared_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(prepared_dir, copy)
    return copy


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not a folder")
    return path


def test_out_naming_an_existing_file(a_file: Path, dataset_copy: Path, tmp_path: Path) -> None:
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    cases = [
        ("prepare", str(dataset_copy / "nothing.csv"), "--out", a_file),
        ("export", tmp_path / "run", "--out", a_file),
        ("evaluate", "tiny", "--data", dataset_copy, "--out", a_file),
        ("sample", "--out", a_file, "--rows", "100"),
    ]
    for args in cases:
        code, message = invoke(*args)
        if args[0] == "prepare":  # the source is checked first here
            assert_one_line_error(code, message)
            continue
        assert_one_line_error(code, message, str(a_file), "not a folder")
    assert a_file.read_text() == "not a folder"


def test_garbage_parquet_in_a_dataset(dataset_copy: Path, tmp_path: Path) -> None:
    for split in ("train", "test"):
        (dataset_copy / f"{split}.parquet").write_bytes(b"PAR1" + b"\x00garbage" * 20 + b"PAR1")
    code, message = invoke(
        "train", "--data", dataset_copy, "--model", "tiny", "--output", tmp_path / "r",
        "--report-to", "none",
    )  # fmt: skip
    assert_one_line_error(code, message, "train.parquet", "not a readable Parquet file")
    code, message = invoke("evaluate", "tiny", "--data", dataset_copy, "--out", tmp_path / "e")
    assert_one_line_error(code, message, "test.parquet", "not a readable Parquet file")


def test_decompression_bomb_in_a_dataset(dataset_copy: Path, tmp_path: Path) -> None:
    for split in ("train", "test"):
        first = pd.read_parquet(dataset_copy / f"{split}.parquet")["image"].iloc[0]
        (dataset_copy / first).write_bytes(bomb_png())
    code, message = invoke(
        "train", "--data", dataset_copy, "--model", "tiny", "--output", tmp_path / "r",
        "--report-to", "none", "--set", "max_steps=1",
    )  # fmt: skip
    assert_one_line_error(code, message, "decompression bomb")
    code, message = invoke(
        "evaluate", "tiny", "--data", dataset_copy, "--out", tmp_path / "e", "--no-ablation",
        "--set", "wandb=false",
    )  # fmt: skip
    assert_one_line_error(code, message, "decompression bomb")
    assert not (tmp_path / "e").exists()  # nothing half-written


def test_dataset_image_paths_cannot_leave_the_dataset(dataset_copy: Path, tmp_path: Path) -> None:
    from vistune.data.dataset import open_image
    from vistune.errors import ImageError

    (tmp_path / "secret.png").write_bytes(b"x")
    with pytest.raises(ImageError, match="leaves the dataset dir"):
        open_image(dataset_copy, "../secret.png")
    with pytest.raises(ImageError, match="leaves the dataset dir"):
        open_image(dataset_copy, str(tmp_path / "secret.png"))


def test_binary_config_file(tmp_path: Path) -> None:
    config = tmp_path / "prepare.yaml"
    config.write_bytes(bytes(range(256)) * 2)
    code, message = invoke("prepare", "x", "--config", config)
    assert_one_line_error(code, message, "not valid YAML")


def test_set_typo_is_blamed_on_set_not_the_yaml_file(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("max_batch_size: 4\n")
    code, message = invoke("serve", "tiny", "--config", config, "--set", "max_batchsize=2")
    assert_one_line_error(code, message, "--set max_batchsize=2", "unknown key 'max_batchsize'")
    assert str(config) not in message
    config.write_text("max_batchsize: 4\n")  # now the typo is in the file
    code, message = invoke("serve", "tiny", "--config", config)
    assert_one_line_error(code, message, str(config), "unknown key 'max_batchsize'")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("serve", ["[default: 127.0.0.1]", "[default: 8000]", "[default: 8]"]),
        ("demo", ["[default: ./vistune-demo]", "[default: 3040]"]),
    ],
)
def test_help_shows_defaults(command: str, expected: list[str]) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in expected:
        assert text in result.output, result.output
