"""W&B mode resolution and offline run directories (no network, no prompts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vistune import tracking


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_no_credentials_is_offline(clean_env: Path) -> None:
    assert not tracking.has_wandb_credentials()
    assert tracking.resolve_wandb_mode() == "offline"


def test_explicit_modes_win(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_wandb_mode() == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert tracking.resolve_wandb_mode() == "offline"
    # online requested without credentials would prompt: fall back to offline
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "online")
    assert tracking.resolve_wandb_mode() == "offline"


def test_key_and_reachable_host_is_online(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(tracking, "host_reachable", lambda host=None, timeout=2.0: True)
    assert tracking.resolve_wandb_mode() == "online"
    monkeypatch.setattr(tracking, "host_reachable", lambda host=None, timeout=2.0: False)
    assert tracking.resolve_wandb_mode() == "offline"


def test_netrc_login_counts_as_credentials(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc_file = clean_env / ".netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc_file.chmod(0o600)
    assert tracking.has_wandb_credentials()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")
    assert not tracking.has_wandb_credentials()


def test_unreachable_host_fails_fast() -> None:
    # port 9 on localhost: refused at once; a closed port must not hang the resolver
    assert not tracking.host_reachable("http://127.0.0.1:9", timeout=1.0)


def test_offline_run_lands_in_run_dir(clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    run = tracking.init_wandb(run_dir, project="vistune-test", name="t", config={"a": 1})
    try:
        run.log({"loss": 1.5})
        assert run.config["a"] == 1
    finally:
        run.finish()
    dirs = tracking.offline_run_dirs(run_dir)
    assert len(dirs) == 1
    assert list(dirs[0].glob("run-*.wandb"))
