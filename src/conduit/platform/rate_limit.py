"""Rate limits on the `limits` library: in the process by default, in Redis with `REDIS_URL`.

Who is limited: a signed-in caller by user id (a valid access token, checked without touching
the database), anyone else by client IP. The IP is the socket peer, or, when the peer is one of
TRUSTED_PROXIES, the nearest untrusted address in `X-Forwarded-For`; IPv6 clients count per
/64, the block one subscriber usually holds.

What applies to a request, all at once:
- its tier's limit (`RATE_LIMIT_TIERS`: the user's tier from RATE_LIMIT_USER_TIERS, else
  RATE_LIMIT_DEFAULT_TIER), or RATE_LIMIT_ANONYMOUS without a token; the `unlimited` tier
  (a tier whose limit is null) skips this and the write limit;
- RATE_LIMIT_WRITES on POST, PUT, PATCH and DELETE;
- per IP, RATE_LIMIT_LOGIN on login and RATE_LIMIT_REGISTER on registration (`route_limit`);
- on login, failed attempts per account and per IP (`LoginGuard`): once either count is
  reached within its window, attempts get 429 until the oldest failure leaves the window.

Request limits use the sliding window counter (constant memory per client); login failures use
the exact moving window. Every limited response says where the caller stands in the tightest
limit (`X-RateLimit-Limit`, `-Remaining`, `-Reset` as a Unix time); a 429 adds `Retry-After`.
If the storage cannot be reached, RATE_LIMIT_FAIL_OPEN decides: let requests through without
the headers (default), or refuse them with 503.
"""

import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Annotated, Final, Literal, TypeVar

from fastapi import Depends, Request
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.errors import StorageError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conduit.platform.errors import ConduitError
from conduit.platform.observability.metrics import RATE_LIMIT_REJECTIONS
from conduit.platform.redis import Circuit
from conduit.platform.security import read_access_token, token_from_header
from conduit.platform.settings import Settings

logger = logging.getLogger(__name__)

_STORAGE_ERRORS: Final = (StorageError, RedisError, OSError, TimeoutError)
_READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_REPORTS = "conduit_rate_limits"

IPNetwork = IPv4Network | IPv6Network
T = TypeVar("T")
RouteLimit = Literal["login", "register"]


class TooManyRequests(ConduitError):
    status_code = 429
    field = "requests"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)


class RateLimitUnavailable(ConduitError):
    status_code = 503
    field = "rate limit"
    message = "cannot be checked right now; retry shortly"


@dataclass(frozen=True, slots=True)
class LimitReport:
    """Where the caller stands in one limit after this request."""

    name: str
    limit: int
    remaining: int
    reset_at: float

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))


@dataclass(slots=True)
class _RequestLimits:
    # Once per request, whichever layer gets there first (the cached-reads one, or the route).
    enforced: bool = False
    reports: list[LimitReport] = field(default_factory=list)
    rejected: LimitReport | None = None
    unavailable_retry_after: int | None = None


def _parse(limit: str | None) -> list[RateLimitItem]:
    return [] if limit is None else parse_many(limit)


def _storage(settings: Settings, redis: Redis | None) -> Storage:
    if redis is None or settings.redis_url is None:
        return MemoryStorage()
    return RedisStorage(
        f"async+{settings.redis_url}",
        implementation="redispy",
        wrap_exceptions=True,
        key_prefix=f"{settings.redis_key_prefix}limits",
        # Typed as scalars by limits, but passed through to redis-py's client as it is.
        connection_pool=redis.connection_pool,  # type: ignore[arg-type]
    )


class Limiter:
    """The app's rate limits, configured once from settings."""

    def __init__(self, settings: Settings, redis: Redis | None) -> None:
        self.enabled = settings.rate_limit_enabled
        self.fail_open = settings.rate_limit_fail_open
        self.trusted_proxies: Sequence[IPNetwork] = tuple(settings.trusted_proxies)
        self.circuit = Circuit("rate limit", settings.redis_retry_seconds)
        storage = _storage(settings, redis)
        self._requests: RateLimiter = SlidingWindowCounterRateLimiter(storage)
        self._failures: RateLimiter = MovingWindowRateLimiter(storage)
        self._anonymous = _parse(settings.rate_limit_anonymous)
        self._tiers = {name: _parse(limit) for name, limit in settings.rate_limit_tiers.items()}
        self._default_tier = settings.rate_limit_default_tier
        self.user_tiers = dict(settings.rate_limit_user_tiers)
        self._writes = _parse(settings.rate_limit_writes)
        self._routes: dict[RouteLimit, list[RateLimitItem]] = {
            "login": _parse(settings.rate_limit_login),
            "register": _parse(settings.rate_limit_register),
        }
        self._failures_per_account = _parse(settings.rate_limit_login_failures_per_account)
        self._failures_per_ip = _parse(settings.rate_limit_login_failures_per_ip)

    def tier_of(self, user_id: int) -> str:
        return self.user_tiers.get(user_id, self._default_tier)

    async def _guarded(self, request: Request, operation: Callable[[], Awaitable[T]]) -> T | None:
        """Run a storage operation; None when the storage is down and the policy is open."""
        try:
            if self.circuit.is_open:
                raise StorageError(ConnectionError("bypassed after a recent failure"))
            result = await operation()
        except _STORAGE_ERRORS as error:
            self.circuit.record_failure(error)
            if self.fail_open:
                return None
            retry_after = max(1, math.ceil(self.circuit.retry_seconds))
            _limits_of(request).unavailable_retry_after = retry_after
            raise RateLimitUnavailable() from None
        self.circuit.record_success()
        return result

    async def _hit(
        self,
        request: Request,
        name: str,
        items: Sequence[RateLimitItem],
        *identifiers: str,
        strategy: RateLimiter | None = None,
    ) -> None:
        limiter = strategy or self._requests
        for item in items:
            outcome = await self._guarded(
                request, partial(_hit_and_read, limiter, item, name, *identifiers)
            )
            if outcome is None:
                return
            allowed, reset_at, remaining = outcome
            report = LimitReport(name, item.amount, remaining, reset_at)
            _limits_of(request).reports.append(report)
            if not allowed:
                _reject(request, report, f"are limited to {item}")

    async def enforce(self, request: Request) -> None:
        """The caller's tier limit, and the write limit on writes; once per request, however
        many times it is called."""
        if not self.enabled:
            return
        this_request = _limits_of(request)
        if this_request.enforced:
            return
        this_request.enforced = True
        user_id = user_id_from_request(request)
        if user_id is None:
            identity, limits = f"ip:{self.client_ip(request)}", self._anonymous
        else:
            identity, limits = f"user:{user_id}", self._tiers[self.tier_of(user_id)]
            if not limits:
                return
        await self._hit(request, "requests", limits, identity)
        if request.method not in _READ_METHODS:
            await self._hit(request, "writes", self._writes, identity)

    async def enforce_route(self, request: Request, route: RouteLimit) -> None:
        if self.enabled:
            await self._hit(request, route, self._routes[route], self.client_ip(request))

    async def ensure_login_allowed(self, request: Request, account: str) -> None:
        """429 while the account, or the caller's IP, has too many recent failed logins."""
        if not self.enabled:
            return
        for name, items, identity in self._failure_limits(request, account):
            for item in items:
                outcome = await self._guarded(
                    request, partial(_read, self._failures, item, name, identity)
                )
                if outcome is None:
                    return
                reset_at, remaining = outcome
                report = LimitReport(name, item.amount, remaining, reset_at)
                _limits_of(request).reports.append(report)
                if remaining <= 0:
                    _reject(
                        request,
                        report,
                        "are locked after too many failed attempts",
                        field="login attempts",
                    )

    async def record_login_failure(self, request: Request, account: str) -> None:
        if not self.enabled:
            return
        for name, items, identity in self._failure_limits(request, account):
            for item in items:
                await self._guarded(request, partial(self._failures.hit, item, name, identity))

    async def clear_login_failures(self, request: Request, account: str) -> None:
        """A successful login forgives the account's failures (not the IP's)."""
        if not self.enabled:
            return
        identity = _account_key(account)
        for item in self._failures_per_account:
            await self._guarded(
                request, partial(self._failures.clear, item, "login-failures-account", identity)
            )

    def _failure_limits(
        self, request: Request, account: str
    ) -> list[tuple[str, list[RateLimitItem], str]]:
        return [
            ("login-failures-account", self._failures_per_account, _account_key(account)),
            ("login-failures-ip", self._failures_per_ip, self.client_ip(request)),
        ]

    def client_ip(self, request: Request) -> str:
        peer = request.client.host if request.client else ""
        try:
            address: IPv4Address | IPv6Address = ip_address(peer)
        except ValueError:
            return peer or "unknown"
        if self._is_trusted(address):
            hops = [
                hop.strip()
                for header in request.headers.getlist("x-forwarded-for")
                for hop in header.split(",")
            ]
            for hop in reversed(hops):
                try:
                    address = ip_address(hop)
                except ValueError:
                    break
                if not self._is_trusted(address):
                    break
        if isinstance(address, IPv6Address):
            return str(IPv6Network(f"{address}/64", strict=False))
        return str(address)

    def _is_trusted(self, address: IPv4Address | IPv6Address) -> bool:
        return any(address in network for network in self.trusted_proxies)


async def _hit_and_read(
    limiter: RateLimiter, item: RateLimitItem, *identifiers: str
) -> tuple[bool, float, int]:
    allowed = await limiter.hit(item, *identifiers)
    stats = await limiter.get_window_stats(item, *identifiers)
    return allowed, stats.reset_time, stats.remaining


async def _read(limiter: RateLimiter, item: RateLimitItem, *identifiers: str) -> tuple[float, int]:
    stats = await limiter.get_window_stats(item, *identifiers)
    return stats.reset_time, stats.remaining


def _reject(
    request: Request, report: LimitReport, message: str, *, field: str = "requests"
) -> None:
    _limits_of(request).rejected = report
    RATE_LIMIT_REJECTIONS.labels(report.name).inc()
    raise TooManyRequests(f"{message}; retry in {report.retry_after} seconds", field=field)


def _account_key(account: str) -> str:
    # Emails stay out of the rate-limit storage.
    return hashlib.sha256(account.strip().lower().encode()).hexdigest()[:32]


def user_id_from_request(request: Request) -> int | None:
    """The user id of a valid access token in the request, else None; no database read."""
    try:
        token = token_from_header(request.headers.get("authorization"))
        if token is None:
            return None
        return read_access_token(token, secret=request.app.state.jwt_secret).user_id
    except ConduitError:
        # An invalid token is the route's to reject; until then the caller is anonymous.
        return None


def _limits_of(request: Request) -> _RequestLimits:
    limits: _RequestLimits | None = getattr(request.state, _REPORTS, None)
    if limits is None:
        limits = _RequestLimits()
        setattr(request.state, _REPORTS, limits)
    return limits


def get_limiter(request: Request) -> Limiter:
    limiter: Limiter = request.app.state.limiter
    return limiter


async def enforce_rate_limits(request: Request) -> None:
    """Dependency for every API route: the caller's tier and write limits."""
    await get_limiter(request).enforce(request)


def route_limit(route: RouteLimit) -> Callable[[Request], Awaitable[None]]:
    """Dependency adding the per-IP limit of a costly route (login, registration)."""

    async def enforce_route_limit(request: Request) -> None:
        await get_limiter(request).enforce_route(request, route)

    return enforce_route_limit


@dataclass(frozen=True, slots=True)
class LoginThrottle:
    """Failed-login accounting for one request, bound to its caller."""

    limiter: Limiter
    request: Request

    async def ensure_allowed(self, account: str) -> None:
        await self.limiter.ensure_login_allowed(self.request, account)

    async def record_failure(self, account: str) -> None:
        await self.limiter.record_login_failure(self.request, account)

    async def record_success(self, account: str) -> None:
        await self.limiter.clear_login_failures(self.request, account)


def login_throttle(request: Request) -> LoginThrottle:
    return LoginThrottle(get_limiter(request), request)


LoginGuard = Annotated[LoginThrottle, Depends(login_throttle)]


class RateLimitHeaders:
    """Put the rate-limit headers on every response the limits looked at, errors included,
    which a dependency alone cannot do."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, object] = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            limits = state.get(_REPORTS)
            if message["type"] == "http.response.start" and isinstance(limits, _RequestLimits):
                _add_headers(MutableHeaders(scope=message), limits, message["status"])
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _add_headers(headers: MutableHeaders, limits: _RequestLimits, status: int) -> None:
    if limits.unavailable_retry_after is not None and status == 503:
        headers["Retry-After"] = str(limits.unavailable_retry_after)
    shown = limits.rejected or min(
        limits.reports, key=lambda report: (report.remaining, -report.reset_at), default=None
    )
    if shown is None:
        return
    headers["X-RateLimit-Limit"] = str(shown.limit)
    headers["X-RateLimit-Remaining"] = str(max(0, shown.remaining))
    headers["X-RateLimit-Reset"] = str(math.ceil(shown.reset_at))
    if limits.rejected is not None and status == 429:
        headers["Retry-After"] = str(limits.rejected.retry_after)
