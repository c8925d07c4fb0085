"""The CI script installs from the default package index and never names an index host."""

from __future__ import annotations

import re
from pathlib import Path

CI_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "run"


def test_ci_names_no_package_index_host() -> None:
    text = CI_SCRIPT.read_text()
    assert "--index-url" not in text and "--extra-index-url" not in text
    assert "--find-links" not in text and " -f " not in text
    assert not re.search(r"https?://", text), "a URL in .ci/run"
    assert 'pip install -q "torch==2.13.0"' in text  # the pin, with a range as the fallback
