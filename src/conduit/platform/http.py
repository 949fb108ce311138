"""The outbound HTTP client of a process (webhook deliveries), guarded against server-side
request forgery.

Every connection the client opens goes through `GuardedNetworkBackend`: it resolves the host
itself, without blocking the event loop, refuses the connection when any address the name
resolves to is not a public one (loopback, private, link-local, multicast, reserved,
unspecified, shared, including IPv4 addresses embedded in IPv6 ones), and connects to an address
it has just vetted. Checking at connect time rather than before the request leaves no window in
which DNS could be changed between the check and the connection (DNS rebinding), and covers
every request the client makes. WEBHOOKS_ALLOW_PRIVATE_ADDRESSES lifts the refusal, read at each
connection so that an operator's change applies at once.

Redirects are not followed (a redirect could lead anywhere) and proxies from the environment are
ignored: behind a proxy, the proxy rather than this process would choose the address.
"""

from __future__ import annotations

import socket
import typing
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address

import anyio
import httpcore
import httpx

from conduit import __version__
from conduit.platform.settings import Settings

# How long a name may take to resolve when an endpoint is registered (deliveries count the
# resolution in their own timeout).
RESOLVE_TIMEOUT_SECONDS = 5.0

_NAT64 = IPv6Network("64:ff9b::/96")


class AddressNotAllowed(Exception):
    """The host resolves to an address outbound requests must not reach."""

    def __init__(self, host: str) -> None:
        super().__init__(f"{host} resolves to an address that is not allowed")
        self.host = host


class HostNotResolved(Exception):
    """The host name could not be resolved (unknown, or the resolver did not answer)."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host} could not be resolved ({reason})")
        self.host = host


def _embedded_ipv4(address: IPv6Address) -> list[IPv4Address]:
    """IPv4 addresses an IPv6 one carries, which is where a packet to it may end up."""
    embedded = []
    if address.ipv4_mapped is not None:
        embedded.append(address.ipv4_mapped)
    if address in _NAT64:
        embedded.append(IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        embedded.append(address.sixtofour)
    if address.teredo is not None:
        embedded.extend(address.teredo)
    return embedded


def _is_public_single(address: IPv4Address | IPv6Address) -> bool:
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def is_public_address(address: IPv4Address | IPv6Address) -> bool:
    """True for addresses on the public internet; False for anything local or special."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if address.ipv4_mapped is not None or address in _NAT64:
            # Only the IPv4 address matters: these prefixes are translations, not places.
            return all(_is_public_single(inner) for inner in embedded)
        if not all(_is_public_single(inner) for inner in embedded):
            return False
    return _is_public_single(address)


def _parse_address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


async def resolve_allowed_addresses(
    host: str, port: int, *, allow_private: bool, resolve_seconds: float | None
) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order, all of them allowed.

    Raises `AddressNotAllowed` when any is not (a name answering with one public and one
    private address must not get the private one tried), `HostNotResolved` when there are none.
    """
    try:
        with anyio.fail_after(resolve_seconds):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise HostNotResolved(host, "the resolver did not answer in time") from None
    except (OSError, UnicodeError) as error:
        raise HostNotResolved(host, str(error) or type(error).__name__) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise HostNotResolved(host, "no address")
    if not allow_private:
        for text in addresses:
            address = _parse_address(text.split("%", 1)[0])
            if address is None or not is_public_address(address):
                raise AddressNotAllowed(host)
    return addresses


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to vetted addresses (see the module's docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_allowed_addresses(
            host,
            port,
            allow_private=self.settings.webhooks_allow_private_addresses,
            resolve_seconds=timeout,
        )
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last_error = error
        raise last_error or HostNotResolved(host, "no address")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressNotAllowed(path)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with its connection pool built on `GuardedNetworkBackend`.

    httpx does not take a network backend as an argument, so the pool it builds is replaced by
    an identical one that has it; the SSRF tests fail if an httpx upgrade changes that.
    """

    def __init__(self, settings: Settings, *, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetworkBackend(settings),
        )


def create_http_client(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.webhook_timeout_seconds),
        # A redirect could lead a delivery to an address the URL check refused.
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": f"Conduit/{__version__}"},
        transport=GuardedTransport(
            settings, limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
        ),
    )
