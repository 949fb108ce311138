"""The Redis connection shared by rate limits and health checks, and the circuit that keeps a
down Redis from slowing every request.

With no `REDIS_URL` there is no client: the cache, rate limits and idempotency keys live in
the process (correct for one process). With it, they all live in Redis and are shared by every
replica. Nothing here connects at construction; the first command does.
"""

import logging
import time

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from conduit.platform.settings import Settings

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 50


def redis_connection_options(settings: Settings) -> dict[str, object]:
    """Options for every Redis connection pool the app opens.

    A command fails fast instead of retrying: the caller degrades (cache bypass, the rate-limit
    fail policy) at once rather than holding the request while Redis is unreachable.
    """
    return {
        "socket_timeout": settings.redis_timeout_seconds,
        "socket_connect_timeout": settings.redis_timeout_seconds,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
        "max_connections": MAX_CONNECTIONS,
        "client_name": "conduit",
    }


def create_redis(settings: Settings) -> Redis | None:
    """The app's Redis client, or None on the embedded default."""
    if settings.redis_url is None:
        return None
    return Redis.from_url(settings.redis_url, **redis_connection_options(settings))  # type: ignore[arg-type]


async def close_redis(client: Redis | None) -> None:
    if client is not None:
        await client.aclose()


class Circuit:
    """Skips a failing backend for `retry_seconds` after an error, so that while Redis is down
    each request pays for at most one failed call per period instead of one per command."""

    def __init__(self, name: str, retry_seconds: float) -> None:
        self.name = name
        self.retry_seconds = retry_seconds
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def record_failure(self, error: BaseException) -> None:
        if not self.is_open:
            logger.warning(
                "%s backend unavailable, bypassed for %.1fs: %r",
                self.name,
                self.retry_seconds,
                error,
            )
        self._open_until = time.monotonic() + self.retry_seconds

    def record_success(self) -> None:
        self._open_until = 0.0
