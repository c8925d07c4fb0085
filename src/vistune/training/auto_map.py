"""`auto_map` entries in a model folder's JSON files, and dropping those that point nowhere.

A model folder names its remote code in `auto_map` (config.json, preprocessor_config.json,
processor_config.json, tokenizer_config.json): `"AutoProcessor": "processing_phi3_v.Phi3VProcessor"`
means "import class Phi3VProcessor from processing_phi3_v.py in this folder". transformers
writes the same entry as `"owner/repo--processing_phi3_v.Phi3VProcessor"` once it has loaded
the code from the hub. An entry whose module file is not in the folder breaks every loader
that follows it (`trust_remote_code=True`: vLLM, SGLang, transformers' Auto classes), so a
folder vistune writes keeps only entries whose file it contains.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: JSON files transformers reads an `auto_map` from.
AUTO_MAP_FILES = (
    "config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer_config.json",
    "video_preprocessor_config.json",
    "feature_extractor_config.json",
)


def module_file(reference: str) -> str:
    """`[owner/repo--]pkg.module.Class` -> `pkg/module.py` (the file it imports)."""
    local = reference.split("--", 1)[1] if "--" in reference else reference
    module = local.rsplit(".", 1)[0]
    return module.replace(".", "/") + ".py"


def _references(value: Any) -> Iterator[str]:
    """Class references in one auto_map value: a string or a [slow, fast] list with nulls."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        yield from (v for v in value if isinstance(v, str))


def missing_code(folder: Path, auto_map: dict[str, Any]) -> dict[str, list[str]]:
    """Entries of `auto_map` whose module file is absent from `folder`: key -> missing files."""
    missing: dict[str, list[str]] = {}
    for key, value in auto_map.items():
        absent = [
            module_file(r) for r in _references(value) if not (folder / module_file(r)).is_file()
        ]
        if absent:
            missing[key] = absent
    return missing


def localise(auto_map: dict[str, Any]) -> dict[str, Any]:
    """Drop the `owner/repo--` prefix so entries name this folder's files, as on the hub."""

    def one(reference: Any) -> Any:
        if isinstance(reference, str) and "--" in reference:
            return reference.split("--", 1)[1]
        return reference

    return {
        key: [one(v) for v in value] if isinstance(value, list) else one(value)
        for key, value in auto_map.items()
    }


def clean_auto_maps(folder: str | Path) -> list[str]:
    """Make every `auto_map` in `folder` name only code the folder contains; say what changed.

    Entries whose files are present are kept (hub prefixes removed); entries with an absent
    file are dropped, and `auto_map` itself when nothing is left. Returns one line per dropped
    entry, `file: key -> module.py`, for the caller to report.
    """
    folder = Path(folder)
    dropped: list[str] = []
    for name in AUTO_MAP_FILES:
        path = folder / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        auto_map = data.get("auto_map") if isinstance(data, dict) else None
        if not isinstance(auto_map, dict):
            continue
        local = localise(auto_map)
        missing = missing_code(folder, local)
        kept = {key: value for key, value in local.items() if key not in missing}
        dropped += [f"{name}: {key} -> {', '.join(files)}" for key, files in missing.items()]
        if kept == auto_map:
            continue
        if kept:
            data["auto_map"] = kept
        else:
            del data["auto_map"]
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return dropped


__all__ = ["AUTO_MAP_FILES", "clean_auto_maps", "localise", "missing_code", "module_file"]
