"""kill -9 in the middle of `prepare`, run it again: nothing lost, nothing fetched twice."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from vistune.data.prepare import CACHE_DIR, PrepareConfig, prepare_dataset
from vistune.outputs import staging_path

SCRIPT = """
import sys
from vistune.data.prepare import PrepareConfig, prepare_dataset
config = PrepareConfig(
    source=sys.argv[1], out=sys.argv[2], allow_private_hosts=True, download={"concurrency": 2}
)
prepare_dataset(config, show_progress=False)
"""


@pytest.mark.slow
def test_resume_after_kill_9(server, tmp_path) -> None:
    n = 40
    rows = [
        {
            "product_code": f"p{i}",
            "title": f"Item {i}",
            "category3_code": "BAGS",
            "full_price": 10.0 + i,
            "imageurl": server.url(f"/good/{i}.jpg"),
        }
        for i in range(n)
    ]
    source = tmp_path / "urls.csv"
    pd.DataFrame(rows).to_csv(source, index=False)
    out = tmp_path / "out"
    server.latency_s = 0.15  # 40 images, 2 at a time: about 3 s of downloading

    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(source), str(out)])
    journal_lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        journals = list((staging_path(out) / CACHE_DIR).glob("images-*.jsonl"))
        if journals:
            journal_lines = journals[0].read_text().splitlines()
            if len(journal_lines) >= 10:
                break
        time.sleep(0.05)
    process.kill()  # SIGKILL: no cleanup, no flush, no finally blocks
    process.wait()
    assert process.returncode == -9, "the run finished before it could be interrupted"
    assert not out.exists()  # nothing is swapped in before the run succeeds

    done = [json.loads(line)["key"].removeprefix("url:") for line in journal_lines]
    paths = [url.split(str(server.port), 1)[1] for url in done]
    assert 10 <= len(paths) < n
    hits_before = dict(server.hits)

    server.latency_s = 0.0
    config = PrepareConfig(source=str(source), out=out, allow_private_hosts=True)
    manifest = prepare_dataset(config, show_progress=False)
    assert manifest.rows_kept == n and manifest.dropped == {}
    assert manifest.images == n
    for path in paths:  # finished before the kill: not fetched again
        assert server.hits[path] == hits_before[path] == 1, path
    assert all(server.hits[f"/good/{i}.jpg"] >= 1 for i in range(n))
    leftovers = [p.name for p in (out / "images").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temp files of the killed run are cleaned up
