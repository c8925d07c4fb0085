"""Downloads against a local server: retries, timeouts, caps, bad bodies, the SSRF guard."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pytest

from vistune.data import schema
from vistune.data.download import (
    DownloadOptions,
    FetchError,
    check_url,
    fetch_bytes,
    is_public_address,
    make_client,
)
from vistune.data.prepare import PrepareConfig, prepare_dataset

FAST = {"timeout_s": 0.5, "retries": 2, "backoff_s": 0.01, "max_bytes": 100_000}


pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def fetch(url: str, **options) -> bytes:
    opts = DownloadOptions(**{**FAST, **options})

    async def run() -> bytes:
        async with make_client(opts) as client:
            return await fetch_bytes(client, url, opts)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
    ],
)
def test_public_address_classification(address, public) -> None:
    assert is_public_address(address) is public


def test_check_url_refuses_private_names_and_schemes() -> None:
    def refused(url: str, **kw) -> str:
        with pytest.raises(FetchError) as info:
            asyncio.run(check_url(url, DownloadOptions(**kw)))
        assert info.value.reason == schema.REFUSED_URL
        return info.value.detail

    assert "127.0.0.1" in refused("http://127.0.0.1:9/x.jpg")
    assert "non-public" in refused("http://localhost/x.jpg")  # the name resolves to loopback
    assert "non-public" in refused("http://[::1]/x.jpg")
    assert "non-public" in refused("http://[::ffff:169.254.169.254]/x")
    assert "only http" in refused("file:///etc/passwd", allow_private_hosts=True)
    asyncio.run(check_url("http://127.0.0.1/x", DownloadOptions(allow_private_hosts=True)))


def test_retries_5xx_but_not_4xx(server) -> None:
    assert fetch(server.url("/flaky/1.jpg"), allow_private_hosts=True)[:2] == b"\xff\xd8"
    assert server.hits["/flaky/1.jpg"] == 2
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(server.url("/missing"), allow_private_hosts=True)
    assert server.hits["/missing"] == 1


def test_slow_response_times_out_after_retries(server) -> None:
    with pytest.raises(FetchError, match=r"within 0.5 s \(after 2 attempts\)"):
        fetch(server.url("/slow.jpg"), allow_private_hosts=True, retries=1)
    assert server.hits["/slow.jpg"] == 2


def test_byte_cap_with_and_without_content_length(server) -> None:
    for path in ("/big.bin", "/big-chunked.bin", "/gzip-bomb.jpg"):
        with pytest.raises(FetchError, match="exceeds the cap of 100000 bytes"):
            fetch(server.url(path), allow_private_hosts=True)
        assert server.hits[path] == 1  # a too-big body is not retried


def test_redirect_hops_are_checked_again(server) -> None:
    trusted = {"allowed_hosts": frozenset({"127.0.0.1"})}
    assert fetch(server.url("/to/good/3.jpg"), **trusted)[:2] == b"\xff\xd8"
    for path, where in [
        ("/to-localhost/good/3.jpg", "localhost"),
        ("/to-metadata", "169.254.169.254"),
        ("/to-internal", "10.255.255.1"),
    ]:
        with pytest.raises(FetchError) as info:
            fetch(server.url(path), **trusted)
        assert info.value.reason == schema.REFUSED_URL and where in info.value.detail
    assert server.hits["/good/3.jpg"] == 1  # the localhost hop never reached the server


def url_catalog(tmp_path, server, paths: list[str]) -> str:
    rows = [
        {
            "product_code": f"p{i}",
            "title": f"Item {i}",
            "category3_code": "BAGS" if i % 2 else "CAPS",
            "full_price": 100.0 + i,
            "imageurl": server.url(path),
        }
        for i, path in enumerate(paths)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "urls.csv", index=False)
    return str(tmp_path / "urls.csv")


def test_prepare_downloads_and_reports_every_failure(server, tmp_path) -> None:
    paths = [f"/good/{i}.jpg" for i in range(6)] + [
        "/flaky/5.jpg",
        "/to/good/0.jpg",  # same image as /good/0.jpg: stored once
        "/missing",
        "/cut.jpg",
        "/truncated.jpg",
        "/page.html",
        "/bomb.png",
        "/big.bin",
        "/to/missing",
    ]
    source = url_catalog(tmp_path, server, paths)
    out = tmp_path / "out"
    config = PrepareConfig(
        source=source,
        out=out,
        allow_private_hosts=True,
        download={**FAST, "max_bytes": 200_000},
    )
    manifest = prepare_dataset(config, show_progress=False)
    dropped = {
        paths[d["source_row"]]: (d["reason"], d["detail"])
        for d in map(json.loads, (out / "dropped.jsonl").read_text().splitlines())
    }
    assert {p: r for p, (r, _) in dropped.items()} == {
        "/missing": schema.DOWNLOAD_FAILED,
        "/cut.jpg": schema.DOWNLOAD_FAILED,
        "/truncated.jpg": schema.INVALID_IMAGE,
        "/page.html": schema.INVALID_IMAGE,
        "/bomb.png": schema.INVALID_IMAGE,
        "/big.bin": schema.DOWNLOAD_FAILED,
        "/to/missing": schema.DOWNLOAD_FAILED,
    }
    assert "decompression bomb" in dropped["/bomb.png"][1]
    assert "HTTP 404" in dropped["/missing"][1]
    assert manifest.rows_kept == 8 and manifest.images == 7
    kept = pd.concat(pd.read_parquet(out / f"{s}.parquet") for s in schema.SPLITS)
    assert kept["image"].str.startswith("images/").all()
    assert (kept["imageurl"] == kept["source_image"]).all()  # original URL column kept


def test_prepare_refuses_loopback_unless_allowed(server, tmp_path) -> None:
    source = url_catalog(tmp_path, server, ["/good/1.jpg", "/good/2.jpg"])
    with pytest.raises(Exception, match="refused_url 2"):
        prepare_dataset(PrepareConfig(source=source, out=tmp_path / "o"), show_progress=False)
    assert sum(server.hits.values()) == 0
    manifest = prepare_dataset(
        PrepareConfig(source=source, out=tmp_path / "o", allow_hosts=["127.0.0.1"]),
        show_progress=False,
    )
    assert manifest.rows_kept == 2
