"""The backends shared by every request for cache, rate limits, idempotency keys and live
messages, kept on `app.state`: in-process objects by default, Redis with `REDIS_URL` (see
`platform.redis`).

The lifespan opens them and closes them; nothing connects before the first command.
"""

import logging

from fastapi import FastAPI

from conduit.platform.cache import Cache
from conduit.platform.idempotency import IdempotencyStore
from conduit.platform.live import LiveChannel, create_live_channel
from conduit.platform.rate_limit import Limiter
from conduit.platform.redis import close_redis, create_redis
from conduit.platform.settings import Settings

logger = logging.getLogger(__name__)


def open_backends(app: FastAPI, settings: Settings) -> None:
    redis = create_redis(settings)
    cache = Cache(settings)
    # Only a server follows the announcements: it alone answers from local copies.
    cache.changes.start()
    app.state.redis = redis
    app.state.cache = cache
    app.state.limiter = Limiter(settings, redis)
    app.state.idempotency = IdempotencyStore(cache, ttl_seconds=settings.idempotency_ttl_seconds)
    app.state.live = create_live_channel(settings)
    where = "in process memory" if redis is None else "in Redis"
    logger.info("cache, rate limits and idempotency keys kept %s", where)


async def close_backends(app: FastAPI) -> None:
    live: LiveChannel | None = getattr(app.state, "live", None)
    if live is not None:
        await live.aclose()
    cache: Cache | None = getattr(app.state, "cache", None)
    if cache is not None:
        await cache.aclose()
    await close_redis(getattr(app.state, "redis", None))
