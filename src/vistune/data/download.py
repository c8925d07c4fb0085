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
* `Retry-After` on 429/503 honoured (seconds or an HTTP date), capped at
  `max_retry_after_s` so one server cannot park a worker for an hour;
* an SSRF guard that cannot be rebound: each new connection resolves the host once
  (`PinnedAddressBackend`), refuses it if *any* address is private, loopback, link-local,
  multicast, reserved or unspecified, or embeds such an IPv4 address (IPv4-mapped,
  IPv4-compatible, 6to4, Teredo, NAT64), and then connects to the address it checked, while
  TLS SNI, certificate checks and the Host header keep the name. There is no second lookup
  for a DNS server to answer differently, and no verdict cached across connections.
  `allow_private_hosts` turns the check off; `allowed_hosts` names hosts trusted without
  it (an internal mirror; the tests' local server), and a redirect from such a host to any
  other host is checked again.

With `trust_env=True` and a proxy in the environment, the proxy makes the connection: the
URL's host is then checked up front (`check_url`) but the proxy resolves it again.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from httpcore._utils import is_socket_readable

from vistune.data import schema

#: Resolves (host, port) to IP address strings; the default is the system's getaddrinfo.
Resolver = Callable[[str, int], Awaitable[list[str]]]

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
    max_retry_after_s: float = 30.0  # longest Retry-After honoured; longer waits are capped
    resolver: Resolver | None = None  # None: the system resolver (tests pass a fake one)


class FetchError(Exception):
    """A URL that gave no image bytes; `reason` is `download_failed` or `refused_url`."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return self.detail


NAT64_WELL_KNOWN: Final = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL_USE: Final = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215, never global
IPV4_COMPATIBLE: Final = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries and routes to: IPv4-mapped,
    IPv4-compatible, 6to4 (2002::/16), Teredo (2001::/32: server and client) and NAT64
    (64:ff9b::/96). A private IPv4 wrapped in one of these reaches the private host."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if _wraps_ipv4(ip):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _wraps_ipv4(ip: ipaddress.IPv6Address) -> bool:
    """NAT64 or IPv4-compatible (not :: and ::1, which are IPv6's own)."""
    return ip in NAT64_WELL_KNOWN or (ip in IPV4_COMPATIBLE and int(ip) > 1)


def is_public_address(address: str) -> bool:
    """True if `address` is a globally routable unicast IP, and so is every IPv4 address it
    embeds (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64; see `embedded_ipv4`)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in NAT64_LOCAL_USE:
            return False
        embedded = embedded_ipv4(ip)
        if ip.ipv4_mapped is not None or _wraps_ipv4(ip):
            candidates = []  # pure wrappers: judged by the IPv4 address they route to
        candidates.extend(embedded)
    return all(_is_public(candidate) for candidate in candidates)


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


async def check_url(url: str, options: DownloadOptions) -> None:
    """Raise `FetchError(refused_url)` unless `url` is http(s) to an allowed host.

    An up-front check (scheme, host, every resolved address); the connection itself is
    checked again, on the address it really uses, by `PinnedAddressBackend`.
    """
    host = _check_scheme(url)
    if options.allow_private_hosts or host in options.allowed_hosts:
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await _resolve(options.resolver, host, port)
    except OSError as exc:
        raise FetchError(
            schema.DOWNLOAD_FAILED, f"{url}: cannot resolve {host} ({exc})", retryable=True
        ) from exc
    try:
        refuse_private(host, addresses)
    except RefusedAddressError as exc:
        raise FetchError(schema.REFUSED_URL, f"{url}: {exc}") from exc


def _check_scheme(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(schema.REFUSED_URL, f"{url}: only http and https URLs are fetched")
    if not parts.hostname:
        raise FetchError(schema.REFUSED_URL, f"{url}: no host name")
    return parts.hostname


class RefusedAddressError(Exception):
    """A connection the SSRF guard refused (raised inside httpx, turned into a FetchError)."""


def refuse_private(host: str, addresses: Iterable[str]) -> None:
    """Raise `RefusedAddressError` if any of `host`'s addresses is not public."""
    for address in addresses:
        if not is_public_address(address):
            raise RefusedAddressError(
                f"{host} resolves to non-public address {address}; "
                "pass --allow-private-hosts to fetch from private networks"
            )


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _resolve(resolver: Resolver | None, host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]  # an IP literal needs no lookup
    except ValueError:
        pass
    addresses = await (resolver or system_resolver)(host, port)
    if not addresses:
        raise OSError(f"no address for {host}")
    return addresses


class PinnedAddressBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend: resolve once, check every address, connect to a checked one.

    httpcore hands `connect_tcp` the URL's host name and does TLS (SNI, certificate
    hostname) and the Host header with that name itself, so connecting to the IP checked
    here changes where the bytes go and nothing else.
    """

    def __init__(self, options: DownloadOptions) -> None:
        self.options = options
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await _resolve(self.options.resolver, host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host} ({exc})") from exc
        if not (self.options.allow_private_hosts or host in self.options.allowed_hosts):
            refuse_private(host, addresses)
        error: Exception | None = None
        for address in addresses:  # every one was checked; the first that answers wins
            try:
                stream = await self.inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
            else:
                return KeepAliveCheckedStream(stream, stream.get_extra_info("socket"))
        assert error is not None
        raise error

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class KeepAliveCheckedStream(httpcore.AsyncNetworkStream):
    """An httpcore stream whose idle-connection check costs one `poll`, not a peer lookup.

    httpcore asks every pooled connection `get_extra_info("is_readable")` each time it
    looks for a free one (to spot a server that closed it); anyio answers by building all
    of the socket's attributes, `getpeername` included: about 0.8 ms of the event loop's
    time per image in `benchmarks/prepare_throughput.py`. The raw socket is taken once at
    connect and the same `is_socket_readable` check httpcore uses runs on it. Everything
    else goes to the wrapped stream unchanged (TLS streams are wrapped again).
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream, raw_socket: socket.socket | None):
        self.inner = inner
        self.raw_socket = raw_socket

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self.inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self.inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self.inner.start_tls(ssl_context, server_hostname, timeout)
        return KeepAliveCheckedStream(tls, self.raw_socket)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self.raw_socket is not None:
            return is_socket_readable(self.raw_socket)
        return self.inner.get_extra_info(info)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, errors, pooling) over `PinnedAddressBackend`.

    httpx does not take a network backend, so the pool it built is replaced by the same
    pool with the pinning backend.
    """

    def __init__(
        self, options: DownloadOptions, *, limits: httpx.Limits, ssl_context: ssl.SSLContext
    ) -> None:
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=PinnedAddressBackend(options),
        )


CONNECTIONS_PER_CLIENT: Final = 4


def make_client(
    options: DownloadOptions,
    connections: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    connections = connections or options.concurrency
    limit = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    context = ssl_context if ssl_context is not None else httpx.create_ssl_context()
    return httpx.AsyncClient(
        timeout=httpx.Timeout(options.timeout_s),
        limits=limit,
        follow_redirects=False,  # each hop is checked by `fetch_bytes`
        headers={"User-Agent": USER_AGENT},
        trust_env=options.trust_env,  # proxies and .netrc only when asked for
        verify=context,
        transport=PinnedTransport(options, limits=limit, ssl_context=context),
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


async def fetch_bytes(client: httpx.AsyncClient, url: str, options: DownloadOptions) -> bytes:
    """GET `url` with retries; return the body or raise `FetchError`."""
    attempt = 0
    while True:
        try:
            async with asyncio.timeout(options.timeout_s):
                return await _fetch_once(client, url, options)
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
        if error.retry_after_s is not None:  # the server said when; capped
            await asyncio.sleep(min(error.retry_after_s, options.max_retry_after_s))
        else:
            await asyncio.sleep(random.uniform(0, options.backoff_s * 2**attempt))
        attempt += 1


async def _fetch_once(client: httpx.AsyncClient, url: str, options: DownloadOptions) -> bytes:
    current = url
    for _hop in range(options.max_redirects + 1):
        _check_scheme(current)
        if options.trust_env:  # a proxy may make the connection: check the name up front
            await check_url(current, options)
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
                        retry_after_s=parse_retry_after(response.headers.get("retry-after")),
                    )
                return await _read_capped(response, current, options.max_bytes)
        except RefusedAddressError as exc:
            raise FetchError(schema.REFUSED_URL, f"{current}: {exc}") from exc
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


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


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
