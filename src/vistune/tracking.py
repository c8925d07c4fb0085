"""Weights & Biases set-up that never prompts and never hangs.

W&B is vistune's default tracker. Machines without an API key or without network (CI, the
air-gapped GPU box, a laptop on a plane) must still train and keep their logs, so the mode is
decided up front: `online` only when credentials exist, `WANDB_MODE` does not say otherwise and
the W&B host answers a TCP connect within a couple of seconds; `offline` otherwise, which
writes `RUN_DIR/wandb/offline-run-*` for a later `wandb sync`. Training (vistune.training) and
evaluation (vistune.evaluation) both start their runs through `init_wandb`.
"""

from __future__ import annotations

import netrc
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

WandbMode = Literal["online", "offline", "disabled"]

DEFAULT_WANDB_HOST = "https://api.wandb.ai"
#: Values of WANDB_MODE that mean "do not talk to the server".
_OFFLINE_MODES = {"offline", "dryrun"}
_DISABLED_MODES = {"disabled"}


def wandb_host() -> str:
    """The W&B API base URL (WANDB_BASE_URL or the public cloud)."""
    return os.environ.get("WANDB_BASE_URL", DEFAULT_WANDB_HOST).rstrip("/")


def has_wandb_credentials(host: str | None = None) -> bool:
    """True when an API key is in the environment or a netrc entry exists for the W&B host.

    Reads the same places `wandb login` writes (WANDB_API_KEY, $NETRC or ~/.netrc) without
    calling into wandb's login flow, which may prompt.
    """
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    netloc = urlsplit(host or wandb_host()).netloc
    candidates = [os.environ.get("NETRC"), str(Path.home() / ".netrc"), str(Path.home() / "_netrc")]
    for candidate in candidates:
        if not candidate or not Path(candidate).is_file():
            continue
        try:
            entry = netrc.netrc(candidate).authenticators(netloc)
        except (netrc.NetrcParseError, OSError):
            continue
        if entry and entry[2]:
            return True
    return False


def host_reachable(host: str | None = None, timeout: float = 2.0) -> bool:
    """A bounded TCP connect to the W&B host: the only network touch before choosing a mode."""
    parts = urlsplit(host or wandb_host())
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(check_network: bool = True) -> WandbMode:
    """Pick the W&B mode for this process without ever asking the user anything.

    - WANDB_MODE=disabled -> "disabled" (no-op run; what the test-suite uses by default).
    - WANDB_MODE=offline/dryrun -> "offline".
    - otherwise "online" only when credentials exist and (if `check_network`) the host
      answers; else "offline". An explicit WANDB_MODE=online without credentials also falls
      back to "offline", because online without a key would prompt.
    """
    requested = os.environ.get("WANDB_MODE", "").strip().lower()
    if requested in _DISABLED_MODES:
        return "disabled"
    if requested in _OFFLINE_MODES:
        return "offline"
    if not has_wandb_credentials():
        return "offline"
    if check_network and not host_reachable():
        return "offline"
    return "online"


def init_wandb(
    run_dir: str | Path,
    *,
    project: str,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    job_type: str = "train",
    mode: WandbMode | None = None,
) -> Any:
    """Start a W&B run whose files live under `run_dir/wandb/`.

    Returns the `wandb` run object (a no-op run when disabled). The mode comes from
    `resolve_wandb_mode()` unless given. WANDB_SILENT and the settings below make sure wandb
    prints little and never requests input; `init_timeout` bounds the online handshake.
    """
    import wandb

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = mode or resolve_wandb_mode()
    os.environ.setdefault("WANDB_SILENT", "true")
    settings = wandb.Settings(
        silent=True,
        console="off",
        init_timeout=30,
        x_disable_stats=True,
    )
    return wandb.init(
        dir=str(run_dir.resolve()),
        project=project,
        name=name,
        config=dict(config or {}),
        job_type=job_type,
        mode=resolved,
        settings=settings,
        reinit="finish_previous",
    )


def offline_run_dirs(run_dir: str | Path) -> list[Path]:
    """The `offline-run-*` folders under `run_dir/wandb/` (what `wandb sync` takes)."""
    return sorted((Path(run_dir) / "wandb").glob("offline-run-*"))
