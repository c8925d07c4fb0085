"""`vistune prepare` on the command line: options, --config/--set, one-line errors."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from vistune.cli import app


def test_prepare_command_with_config_and_set(sample_dir, tmp_path) -> None:
    config = tmp_path / "prepare.yaml"
    config.write_text(yaml.safe_dump({"seed": 3, "splits": {"train": 0.6}}))
    out = tmp_path / "data"
    result = CliRunner().invoke(
        app,
        [
            "prepare",
            str(sample_dir),
            "--out",
            str(out),
            "--config",
            str(config),
            "--set",
            "splits.validation=0.2",
            "--set",
            "splits.test=0.2",
        ],
    )
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "prepare.yaml").read_text())
    assert saved["seed"] == 3 and saved["splits"] == {"train": 0.6, "validation": 0.2, "test": 0.2}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["validation"] > 0.15 * manifest["rows_kept"]
    assert f"prepared {manifest['rows_kept']}/160 rows" in result.output


def test_prepare_command_errors_are_one_line(sample_dir, tmp_path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["prepare", str(tmp_path / "x.csv"), "--out", str(tmp_path)])
    assert missing.exit_code == 1 and "source not found" in missing.output
    unknown = runner.invoke(
        app, ["prepare", str(sample_dir), "--out", str(tmp_path), "--image-column", "photo"]
    )
    assert unknown.exit_code == 1
    assert "--image-column 'photo' is not a column; available columns:" in unknown.output
    bad_split = runner.invoke(
        app, ["prepare", str(sample_dir), "--out", str(tmp_path), "--set", "splits.train=0.95"]
    )
    assert bad_split.exit_code == 1 and "must be 1" in bad_split.output
