"""An append-only record of finished images, so `prepare` resumes after any interruption.

Each finished image appends one JSON line (source identity -> stored file, hash, size) and
flushes it, after the image file itself was renamed into place. A run killed with
kill -9 therefore leaves only complete files and at most one torn last line, which is
ignored on the next run; everything recorded is skipped, everything else is redone.
Failures are not recorded: a transient download error is retried on the next run.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any


class ImageJournal:
    """Finished images by source identity, backed by a JSONL file under `DIR/.cache/`."""

    def __init__(self, path: Path, images_dir: Path) -> None:
        self.path = path
        self.images_dir = images_dir
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the torn last line of a killed run
                if isinstance(entry, dict) and "key" in entry and "file" in entry:
                    self._entries[entry["key"]] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def get(self, key: str) -> dict[str, Any] | None:
        """The recorded result for `key`, if its image file is still there."""
        entry = self._entries.get(key)
        if entry is not None and (self.images_dir / entry["file"]).is_file():
            return entry
        return None

    def record(self, key: str, entry: dict[str, Any]) -> None:
        entry = {"key": key, **entry}
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock:
            self._entries[key] = entry
            self._handle.write(line)
            self._handle.flush()

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ImageJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
