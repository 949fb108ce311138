"""Rendered copies of cached reads kept in the server process, so that the most common answers
cost no round trip to Redis and no JSON encoding.

A copy is valid while none of the generations its entry was built on has changed since just
before the entry was read (see `platform.cache`). This process learns of changes at once when
it makes them; with `REDIS_URL` it learns of the other processes' from a Redis pub/sub channel
on which every invalidation is announced after its generations are replaced, so a copy outlives
the write that made it stale by the time the announcement takes to arrive (well under a
millisecond on a local network). A request with a token is never answered from a copy, so a
writer always reads its own writes.

Copies are served only while that channel is known to work: until the subscription is confirmed,
after any error on it (every copy is dropped then, since announcements may have been missed),
and for at most `MAX_AGE_SECONDS` each, which bounds what a connection that died silently could
cost.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from conduit.platform.redis import redis_connection_options
from conduit.platform.settings import Settings

logger = logging.getLogger(__name__)

MAX_AGE_SECONDS = 5.0
MAX_BYTES = 64 * 1024 * 1024
# Generations whose changes are counted before the counts start over (dropping every copy).
MAX_TRACKED_GENERATIONS = 100_000
RESUBSCRIBE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The change counts of an entry's generations, read before the entry itself."""

    epoch: int
    counts: tuple[int, ...]

    def extended(self, later: "Snapshot") -> "Snapshot":
        """This snapshot and a later one of other generations, as one snapshot of both: it
        matches nothing when the counts started over in between."""
        epoch = self.epoch if later.epoch == self.epoch else -1
        return Snapshot(epoch, self.counts + later.counts)


@dataclass(slots=True)
class LocalCopy:
    body: bytes
    tag: str
    generations: tuple[str, ...]
    snapshot: Snapshot
    expires_at: float
    # How many changes the process had heard of when the copy was last found valid: until it
    # hears of another, the copy's generations need no comparing (a list page has 20 or more).
    checked_at: int
    # The headers its answer left the app with, less the request id, by URL scheme: what
    # `platform.cached_reads` replays.
    sent_headers: dict[str, tuple[tuple[bytes, bytes], ...]] = field(default_factory=dict)


class LocalCopies:
    """The copies of one process, and what it knows of changes to their generations."""

    def __init__(self, *, trusted: bool, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._trusted = trusted
        self._copies: dict[str, LocalCopy] = {}
        self._bytes = 0
        self._changes: dict[str, int] = {}
        # Every change heard of (and every start over) counts one.
        self._heard = 0
        # Bumped whenever counts start over, so that no snapshot taken before still matches.
        self._epoch = 0

    @property
    def trusted(self) -> bool:
        return self._trusted

    def snapshot(self, generations: Iterable[str]) -> Snapshot:
        return Snapshot(self._epoch, tuple(self._changes.get(g, 0) for g in generations))

    def get(self, key: str, generations: tuple[str, ...]) -> LocalCopy | None:
        """The copy kept for `key`, if it was built on `generations` (and perhaps on more, which
        the entry named: the articles of a list page) and none of them has changed since."""
        copy = self._copies.get(key)
        if copy is None:
            return None
        if (
            not self._trusted
            or copy.generations[: len(generations)] != generations
            or copy.expires_at <= time.monotonic()
        ):
            self._discard(key)
            return None
        if copy.checked_at != self._heard:
            if copy.snapshot != self.snapshot(copy.generations):
                self._discard(key)
                return None
            copy.checked_at = self._heard
        return copy

    def keep(
        self, key: str, generations: tuple[str, ...], snapshot: Snapshot, body: bytes, tag: str
    ) -> None:
        """Keep `body` for `key`, rendered from an entry that was fresh after `snapshot`; unless
        a change has been heard of since, which the entry may predate."""
        if not self._trusted or snapshot != self.snapshot(generations):
            return
        if len(body) > self.max_bytes // 100:
            return
        self._discard(key)
        expires_at = time.monotonic() + MAX_AGE_SECONDS
        copy = LocalCopy(body, tag, generations, snapshot, expires_at, checked_at=self._heard)
        self._copies[key] = copy
        self._bytes += len(body)
        # Oldest first: dicts keep insertion order, and a refreshed copy is inserted anew.
        while self._bytes > self.max_bytes:
            self._discard(next(iter(self._copies)))

    def changed(self, generations: Iterable[str]) -> None:
        self._heard += 1
        for generation in generations:
            self._changes[generation] = self._changes.get(generation, 0) + 1
        if len(self._changes) > MAX_TRACKED_GENERATIONS:
            self.forget_all()

    def forget_all(self) -> None:
        self._copies.clear()
        self._bytes = 0
        self._changes.clear()
        self._epoch += 1
        self._heard += 1

    def distrust(self) -> None:
        """Serve nothing until `trust` (changes may go unheard meanwhile)."""
        self._trusted = False
        self.forget_all()

    def trust(self) -> None:
        self.forget_all()
        self._trusted = True

    def _discard(self, key: str) -> None:
        copy = self._copies.pop(key, None)
        if copy is not None:
            self._bytes -= len(copy.body)


class ChangeAnnouncements:
    """Tells every process of the generations a write replaced, and hears what the others tell.

    In process only without `REDIS_URL` (one process holds everything then); over a Redis
    pub/sub channel with it, which `start` begins to follow.
    """

    def __init__(self, settings: Settings) -> None:
        self.copies = LocalCopies(trusted=settings.redis_url is None)
        self._channel = f"{settings.redis_key_prefix}cache:changed"
        self._redis: Redis | None = None
        self._listener: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        if settings.redis_url is not None:
            options = redis_connection_options(settings)
            self._redis = Redis.from_url(settings.redis_url, **options)  # type: ignore[arg-type]
            listening = {**options, "socket_timeout": None, "max_connections": 1}
            self._listener = Redis.from_url(settings.redis_url, **listening)  # type: ignore[arg-type]

    def start(self) -> None:
        if self._listener is not None and self._task is None:
            self._task = asyncio.create_task(self._follow(self._listener), name="cache-changes")

    def changed_here(self, generations: Iterable[str]) -> None:
        self.copies.changed(generations)

    async def announce(self, generations: Iterable[str]) -> None:
        """Tell the other processes; a failure only costs their copies, which stop being
        served when this process cannot reach Redis either."""
        if self._redis is None:
            return
        try:
            await self._redis.publish(self._channel, json.dumps(sorted(generations)))
        except (RedisError, OSError) as error:
            logger.warning("could not announce a cache change: %r", error)

    async def _follow(self, listener: Redis) -> None:
        failed = False
        while True:
            pubsub = listener.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    # A bounded wait, so that redis-py's periodic health check gets to run.
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._hear(message)
                        if failed and self.copies.trusted:
                            logger.info("cache change announcements heard again")
                            failed = False
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.copies.distrust()
                if not failed:
                    logger.warning("cache change announcements unavailable: %r", error)
                failed = True
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RESUBSCRIBE_SECONDS)

    def _hear(self, message: dict[str, object]) -> None:
        if message["type"] == "subscribe":
            self.copies.trust()
        elif message["type"] == "message":
            data = message["data"]
            generations = json.loads(data.decode() if isinstance(data, bytes) else str(data))
            self.copies.changed(generations)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self.copies.distrust()
        for client in (self._listener, self._redis):
            if client is not None:
                await client.aclose()
