"""Fetch image URLs: concurrent, bounded, retried, size-capped, and refusing private hosts.

What the reference loop (`requests.get(url)` with no timeout, one at a time) lacks:

* bounded concurrency (`asyncio.Semaphore`) over one `httpx.AsyncClient` connection pool;
* a deadline per attempt (connect/read timeouts *and* a total, so a server trickling
  bytes cannot hold a slot forever);
* retries with exponential backoff and full jitter on 5xx, 408, 429, timeouts and
  connection errors; no retry on other 4xx (they will not change);
* streaming with a byte cap (checked against Content-Length first, then while reading the
  decoded body, so a gzip bomb stops at the cap too);
* redirects followed by hand so every hop is checked again;
* an SSRF guard: the host of every hop is resolved with `getaddrinfo` and the URL is
  refused if any address is private, loopback, link-local, multicast, reserved or
  unspecified (IPv4 and IPv6, IPv4-mapped IPv6 included), unless `allow_private_hosts` is
  set. `allowed_hosts` names hosts trusted without that check (an internal mirror; the
  tests' local server); a redirect from such a host to any other host is checked again.

Known limit: the address is checked when the hop starts and httpx resolves the name again
when it connects, so a DNS server that answers differently within those milliseconds (DNS
rebinding) is not stopped here; route downloads through an egress proxy where that matters.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import ssl
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urljoin, urlsplit

import httpx

from vistune.data import schema

RETRY_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUS: Final = frozenset({301, 302, 303, 307, 308})
USER_AGENT: Final = "vistune-prepare (+https://github.com/vistune)"


@dataclass(frozen=True)
class DownloadOptions:
    """How URLs are fetched; `prepare` builds this from its config."""

    concurrency: int = 16
    timeout_s: float = 20.0  # per attempt, connect + read + total
    retries: int = 3  # extra attempts after the first
    backoff_s: float = 0.5  # first retry waits up to this, then doubling (full jitter)
    max_bytes: int = 20 * 2**20
    max_redirects: int = 5
    allow_private_hosts: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    trust_env: bool = False  # use HTTP(S)_PROXY, SSL_CERT_FILE, .netrc from the environment


class FetchError(Exception):
    """A URL that gave no image bytes; `reason` is `download_failed` or `refused_url`."""

    def __init__(self, reason: str, detail: str, *, retryable: bool = False) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retryable = retryable

    def __str__(self) -> str:
        return self.detail


def is_public_address(address: str) -> bool:
    """True if `address` is a globally routable unicast IP (after unwrapping IPv4-mapped)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


async def check_url(
    url: str, options: DownloadOptions, verdicts: dict[tuple[str, int], str | None] | None = None
) -> None:
    """Raise `FetchError(refused_url)` unless `url` is http(s) to an allowed host.

    `verdicts` caches the outcome per (host, port) for one run, so a catalog of thousands
    of URLs on one CDN resolves that host once (None = allowed, else the refusal detail).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(schema.REFUSED_URL, f"{url}: only http and https URLs are fetched")
    host = parts.hostname
    if not host:
        raise FetchError(schema.REFUSED_URL, f"{url}: no host name")
    if options.allow_private_hosts or host in options.allowed_hosts:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if verdicts is not None and (host, port) in verdicts:
        refusal = verdicts[(host, port)]
        if refusal is not None:
            raise FetchError(schema.REFUSED_URL, f"{url}: {refusal}")
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(
            schema.DOWNLOAD_FAILED, f"{url}: cannot resolve {host} ({exc})", retryable=True
        ) from exc
    refusal = None
    for info in infos:
        address = str(info[4][0])
        if not is_public_address(address):
            refusal = (
                f"{host} resolves to non-public address {address}; "
                "pass --allow-private-hosts to fetch from private networks"
            )
            break
    if verdicts is not None:
        verdicts[(host, port)] = refusal
    if refusal is not None:
        raise FetchError(schema.REFUSED_URL, f"{url}: {refusal}")


CONNECTIONS_PER_CLIENT: Final = 4


def make_client(
    options: DownloadOptions,
    connections: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    connections = connections or options.concurrency
    limit = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(options.timeout_s),
        limits=limit,
        follow_redirects=False,  # each hop is checked by `fetch_bytes`
        headers={"User-Agent": USER_AGENT},
        trust_env=options.trust_env,  # proxies and .netrc only when asked for
        verify=ssl_context if ssl_context is not None else httpx.create_ssl_context(),
    )


def make_clients(options: DownloadOptions) -> list[httpx.AsyncClient]:
    """Several small connection pools instead of one big one.

    httpcore's pool rescans every connection for every queued request, so its cost grows
    with the square of the pool size; measured here, 4 pools of 4 connections fetch ~30 %
    more images per CPU second than one pool of 16. Callers spread URLs over the clients.
    """
    count = max(1, -(-options.concurrency // CONNECTIONS_PER_CLIENT))
    per_client = -(-options.concurrency // count)
    context = httpx.create_ssl_context()  # loading the CA bundle once costs ~50 ms
    return [make_client(options, per_client, context) for _ in range(count)]


async def fetch_bytes(
    client: httpx.AsyncClient,
    url: str,
    options: DownloadOptions,
    verdicts: dict[tuple[str, int], str | None] | None = None,
) -> bytes:
    """GET `url` with retries; return the body or raise `FetchError`."""
    attempt = 0
    while True:
        try:
            async with asyncio.timeout(options.timeout_s):
                return await _fetch_once(client, url, options, verdicts)
        except TimeoutError:
            error = FetchError(
                schema.DOWNLOAD_FAILED,
                f"{url}: no complete response within {options.timeout_s:g} s",
                retryable=True,
            )
        except FetchError as exc:
            error = exc
        if not error.retryable or attempt >= options.retries:
            if attempt:
                error.detail += f" (after {attempt + 1} attempts)"
            raise error
        await asyncio.sleep(random.uniform(0, options.backoff_s * 2**attempt))
        attempt += 1


async def _fetch_once(
    client: httpx.AsyncClient,
    url: str,
    options: DownloadOptions,
    verdicts: dict[tuple[str, int], str | None] | None,
) -> bytes:
    current = url
    for _hop in range(options.max_redirects + 1):
        await check_url(current, options, verdicts)
        try:
            async with client.stream("GET", current) as response:
                if response.status_code in REDIRECT_STATUS:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(
                            schema.DOWNLOAD_FAILED, f"{current}: redirect without a Location"
                        )
                    current = urljoin(current, location)
                    continue
                if response.status_code != 200:
                    raise FetchError(
                        schema.DOWNLOAD_FAILED,
                        f"{current}: HTTP {response.status_code}",
                        retryable=response.status_code in RETRY_STATUS,
                    )
                return await _read_capped(response, current, options.max_bytes)
        except httpx.TimeoutException as exc:
            raise FetchError(
                schema.DOWNLOAD_FAILED,
                f"{current}: timed out ({type(exc).__name__})",
                retryable=True,
            ) from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise FetchError(
                schema.DOWNLOAD_FAILED,
                f"{current}: {type(exc).__name__}: {exc}",
                retryable=isinstance(exc, httpx.TransportError),
            ) from exc
    raise FetchError(schema.DOWNLOAD_FAILED, f"{url}: more than {options.max_redirects} redirects")


async def _read_capped(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(
            schema.DOWNLOAD_FAILED,
            f"{url}: body of {int(declared)} bytes exceeds the cap of {max_bytes} bytes",
        )
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > max_bytes:
            raise FetchError(
                schema.DOWNLOAD_FAILED, f"{url}: body exceeds the cap of {max_bytes} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)
