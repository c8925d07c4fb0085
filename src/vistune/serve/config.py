"""The typed config of `vistune serve` (YAML + `--set` overrides + CLI flags, as everywhere)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from vistune.config import VistuneConfig

#: Shortest accepted bearer token: an empty or short one would turn auth off or be guessable.
MIN_TOKEN_LENGTH = 16


class ServeConfig(VistuneConfig):
    """Everything `vistune serve` needs; the token is a secret and never printed or saved."""

    model: str = Field(description="Run dir, exported/model folder, hub id or 'tiny'.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: SecretStr | None = Field(
        None, description="Require `Authorization: Bearer <token>` on /v1/* when set."
    )
    max_batch_size: int = Field(8, ge=1, le=512)
    max_queue: int = Field(
        256, ge=1, description="Requests waiting for the model beyond this get 503 + Retry-After."
    )
    max_concurrent_decodes: int = Field(
        4, ge=1, le=256, description="Uploads decoded at once (each can take ~100s of MB)."
    )
    shutdown_grace_s: float = Field(
        25.0,
        ge=0,
        le=3600,
        description="After SIGTERM, queued requests run this long; the rest get 503.",
    )
    max_wait_ms: float = Field(10.0, ge=0, le=10_000)
    max_upload_mb: float = Field(10.0, gt=0, le=1024)
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Uploads with more pixels are refused (decompression bombs)."
    )
    question: str | None = Field(None, description="Default: the run's question, else vistune's.")
    answer_template: str | None = Field(None, description="Default: the run's, else vistune's.")
    max_new_tokens: int | None = Field(None, ge=1, description="Default: the run's answer length.")
    num_crops: int | None = Field(None, ge=1, le=64)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    allow_image_urls: bool = Field(
        False, description="Let /v1/chat/completions fetch http(s) image URLs (else data: only)."
    )
    allow_private_image_hosts: bool = Field(
        False, description="Let fetched image URLs resolve to private/loopback addresses."
    )
    image_url_timeout_s: float = Field(10.0, gt=0, le=300)

    @field_validator("token")
    @classmethod
    def _token_is_strong(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None:
            return None
        value = token.get_secret_value()
        if not value.strip():
            raise ValueError(
                "is empty, which would turn authentication off; leave --token out to serve "
                "without one, or pass a random token (e.g. `openssl rand -hex 24`)"
            )
        if len(value) < MIN_TOKEN_LENGTH or value != value.strip():
            raise ValueError(
                f"must be at least {MIN_TOKEN_LENGTH} characters without surrounding spaces "
                "(e.g. `openssl rand -hex 24`)"
            )
        return token

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
