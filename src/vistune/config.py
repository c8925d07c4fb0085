"""Typed configs shared by every command: YAML in, `key=value` overrides, YAML out.

Each command owns one `VistuneConfig` subclass. The resolved config is written next to the
command's output so any run can be repeated with `--config that/config.yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import Self

from vistune.errors import ConfigError


class VistuneConfig(BaseModel):
    """Base for command configs: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        overrides: list[str] | None = None,
        **explicit: Any,
    ) -> Self:
        """Build a config from an optional YAML file, then `a.b=value` overrides, then kwargs.

        Precedence (last wins): defaults < YAML file < `--set` overrides < explicit CLI options.
        Explicit values of None are ignored so optional CLI flags do not erase YAML values.
        """
        data: dict[str, Any] = {}
        if path is not None:
            data = read_yaml(path)
        origins: dict[str, str] = {}  # key -> where its value came from, for error messages
        for item in overrides or []:
            key, value = parse_override(item)
            set_dotted(data, key, value)
            origins[key] = f"--set {item}"
        for key, value in explicit.items():
            if value is not None:
                set_dotted(data, key, value)
                origins[key] = "command line"
        return cls.from_dict(data, source=str(path) if path else "command line", origins=origins)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], source: str = "config", origins: dict[str, str] | None = None
    ) -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source, origins)) from exc

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())
        return path


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())  # one line, whatever the parser said
        raise ConfigError(f"{path}: not valid YAML ({reason})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """`lora.rank=16` -> ("lora.rank", 16); the value is parsed as YAML (numbers, lists, bools)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key=value, e.g. learning_rate=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
    return key.strip(), value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


def format_validation_error(
    exc: ValidationError, source: str, origins: dict[str, str] | None = None
) -> str:
    """One line naming each bad key and where it came from: `source` (the YAML file) unless
    `origins` says the key was set by `--set` or a command-line option."""
    by_origin: dict[str, list[str]] = {}
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            problem = f"unknown key {where!r}"
        elif err["type"] == "missing":
            flag = "--" + where.replace("_", "-")
            problem = f"{where} is required (pass {flag}, --set {where}=..., or a YAML key)"
        else:
            problem = f"{where}: {err['msg']}"
        by_origin.setdefault(_origin_of(where, origins or {}, source), []).append(problem)
    return "; ".join(f"{origin}: " + "; ".join(items) for origin, items in by_origin.items())


def _origin_of(where: str, origins: dict[str, str], default: str) -> str:
    """The origin of `where` or of the closest section above it (`lora` for `lora.rank`)."""
    parts = where.split(".")
    for end in range(len(parts), 0, -1):
        origin = origins.get(".".join(parts[:end]))
        if origin is not None:
            return origin
    return default
