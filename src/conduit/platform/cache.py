"""Cache-aside reads on cashews: in the process by default (`mem://`), in Redis with `REDIS_URL`.

Entries are never trusted by age alone. Each one records the *generations* of the data it was
built from (`article:<slug>`, `articles`, `authors`...): random tokens that a write replaces
after its transaction commits (`invalidate_after_commit`). An entry is served only while all
its generations are unchanged, so:

- a read that loaded old rows just before a commit stores them under the old generation, and
  nobody is served them afterwards (the race that deleting keys after commit leaves open);
- invalidating a whole family (every article list) is one write, with no key scans;
- a lost generation key (eviction, restart) only causes misses, since a new one is random.

When a hot entry is missing or stale, one request per key rebuilds it (it holds a lock in the
backend) while the others wait for the entry it stores (no stampede on the database). Many small
entries, such as the summaries of a page's articles, are read together in one round trip and
the missing ones loaded together (`get_many_or_load`). Any cache failure falls back to the
database: a read never fails because of the cache.

While one request rebuilds an entry that a write made stale, the anonymous reads answered
before routing may be given the entry as it was, if it was loaded at most
`CACHE_STALE_WHILE_REBUILDING_SECONDS` ago (`peek_or_stale`).
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Final, Generic, TypeVar, cast

from cashews import Cache as CashewsCache
from cashews.exceptions import CacheBackendInteractionError
from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.db.session import SESSION_CACHE_KEY, after_commit
from conduit.platform.local_copies import ChangeAnnouncements
from conduit.platform.observability.metrics import CACHE_HITS, CACHE_MISSES, CACHE_STALE_ANSWERS
from conduit.platform.redis import Circuit, close_redis, create_redis, redis_connection_options
from conduit.platform.settings import Settings

logger = logging.getLogger(__name__)

JsonValue = Any
T = TypeVar("T")

MEMORY_MAX_ENTRIES = 10_000
# Longer than any rebuild should take; a crashed holder frees the key after this.
REBUILD_LOCK_SECONDS = 10
REBUILD_POLL_SECONDS = 0.02
# Generations outlive the entries built on them; expiring one only causes misses.
GENERATION_TTL_SECONDS = 7 * 24 * 3600
# Sets every key to the same value with the same expiry, atomically, in one command.
_START_GENERATIONS = """
for _, key in ipairs(KEYS) do
    redis.call('SET', key, ARGV[1], 'EX', ARGV[2])
end
"""

_BACKEND_ERRORS: Final = (CacheBackendInteractionError, RedisError, OSError, TimeoutError)
_PENDING_GENERATIONS = "conduit.cache.stale_generations"


@dataclass(frozen=True, slots=True)
class CacheAddress:
    """Where a cached value lives: its key, the generations it is built from, and the name
    that labels its hit and miss metrics."""

    name: str
    key: str
    generations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Found:
    """A cached value, and whether a write has made it stale (see `Cache.peek_or_stale`)."""

    value: JsonValue
    stale: bool


class CacheUnavailable(Exception):
    """The cache backend could not be reached; callers fall back to the source of truth."""


class Cache:
    """The app's cache: cache-aside reads validated by generations, plus the small key-value
    operations the idempotency store needs, all on one backend."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.cache_enabled
        self.ttl_seconds = settings.cache_ttl_seconds
        self.stale_seconds = settings.cache_stale_while_rebuilding_seconds
        self.prefix = settings.redis_key_prefix
        self.circuit = Circuit("cache", settings.redis_retry_seconds)
        self.changes = ChangeAnnouncements(settings)
        self._backend = CashewsCache(name=f"conduit-{uuid.uuid4().hex}")
        # Reads of several keys at once go straight to Redis: cashews decodes each value of a
        # `get_many` in an asyncio task of its own, which cost about as much as the read itself.
        self._reader: Redis | None = None
        self._start_generations: AsyncScript | None = None
        if settings.redis_url is None:
            # No expiry sweeper task: expired entries go on access or by LRU at the size cap.
            self._backend.setup(
                f"mem://?size={MEMORY_MAX_ENTRIES}&check_interval=0", pickle_type="json"
            )
        else:
            options = redis_connection_options(settings)
            self._backend.setup(
                settings.redis_url,
                pickle_type="json",
                suppress=False,
                client_name=options["client_name"],
                socket_timeout=options["socket_timeout"],
                socket_connect_timeout=options["socket_connect_timeout"],
                retry=options["retry"],
                max_connections=options["max_connections"],
                wait_for_connection_timeout=settings.redis_timeout_seconds,
            )
            self._reader = create_redis(settings)
            if self._reader is not None:
                self._start_generations = self._reader.register_script(_START_GENERATIONS)

    async def aclose(self) -> None:
        await self.changes.aclose()
        await self._backend.close()
        await close_redis(self._reader)

    async def _get_many(self, keys: Sequence[str]) -> list[JsonValue]:
        """The values at `keys` (None where there is none), in one round trip."""
        if self._reader is None:
            return list(await self._backend.get_many(*keys))
        return [_decoded(value) for value in await self._reader.mget(keys)]

    async def _replace_generations(self, keys: Sequence[str]) -> None:
        """Give the generation keys one new token, never used before: entries and copies built
        on their old tokens no longer match. In Redis one script sets them all (a publication
        names dozens, its title's and body's words): invalidating 30 cost 1.1 ms of CPU through
        cashews' transaction of one `SET` each, 0.22 ms with the script."""
        token = uuid.uuid4().hex
        if self._start_generations is None:
            await self._backend.set_many(dict.fromkeys(keys, token), expire=GENERATION_TTL_SECONDS)
            return
        # Encoded as cashews encodes a string, so that every reader decodes it alike.
        await self._start_generations(keys=keys, args=[json.dumps(token), GENERATION_TTL_SECONDS])

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def _lock_key(self, key: str) -> str:
        return self._key(f"lock:{key}")

    def _generation_key(self, generation: str) -> str:
        return f"{self.prefix}gen:{generation}"

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        if self.circuit.is_open:
            raise CacheUnavailable("bypassed after a recent failure")
        try:
            result = await operation()
        except _BACKEND_ERRORS as error:
            self.circuit.record_failure(error)
            raise CacheUnavailable(str(error)) from error
        self.circuit.record_success()
        return result

    async def get(self, key: str) -> JsonValue | None:
        return await self._call(lambda: self._backend.get(self._key(key)))

    async def set(self, key: str, value: JsonValue, *, ttl_seconds: float) -> None:
        await self._call(lambda: self._backend.set(self._key(key), value, expire=ttl_seconds))

    async def add(self, key: str, value: JsonValue, *, ttl_seconds: float) -> bool:
        """Store `value` only if `key` is absent; True when it was stored (Redis `SET NX`)."""
        return bool(
            await self._call(
                lambda: self._backend.set(self._key(key), value, expire=ttl_seconds, exist=False)
            )
        )

    async def delete(self, key: str) -> None:
        await self._call(lambda: self._backend.delete(self._key(key)))

    async def ping(self) -> None:
        await self._call(lambda: self._backend.ping())

    async def peek_or_stale(self, address: CacheAddress) -> Found | None:
        """The fresh value at `address`; or else, while a write has made the entry stale and
        another request rebuilds it, the entry as it was, if it was loaded at most
        `stale_seconds` ago (marked stale). None when there is neither (the cache disabled or
        down included), and for the one caller sent to rebuild it. Never loads, and counts no
        misses: a caller that goes on to `get_or_load` counts the miss there.

        Readers that would otherwise all go to the database and wait there for the one rebuild
        are answered at once with what was current a moment ago, as HTTP's
        `stale-while-revalidate` allows. The first reader to find an entry stale and nobody
        rebuilding it claims the rebuild (a marker named by the generations that made the entry
        stale, so the next write's staleness is claimed afresh) and gets None: it goes on to
        the route, which rebuilds the entry.
        """
        if not self.enabled:
            return None
        keys = [
            self._key(address.key),
            *(self._generation_key(g) for g in address.generations),
            self._lock_key(address.key),
        ]
        try:
            entry, *current, lock = await self._call(lambda: self._get_many(keys))
            if not isinstance(entry, dict) or None in current:
                return None
            if entry.get("generations") == current:
                CACHE_HITS.labels(address.name).inc()
                return Found(entry.get("value"), stale=False)
            loaded_at = entry.get("at")
            if (
                not isinstance(loaded_at, int | float)
                or time.time() - loaded_at > self.stale_seconds
            ):
                return None
            if lock is None and await self._claim_rebuild(address.key, current):
                return None
        except CacheUnavailable:
            return None
        CACHE_STALE_ANSWERS.labels(address.name).inc()
        return Found(entry.get("value"), stale=True)

    async def _claim_rebuild(self, key: str, current: Sequence[str | None]) -> bool:
        """Whether this caller is the first to find `key` stale under the `current` generations
        (and is to rebuild it)."""
        marker = self._key(f"rebuild:{key}:{':'.join(map(str, current))}")
        claimed = await self._call(
            partial(self._backend.set, marker, 1, expire=self.stale_seconds, exist=False)
        )
        return bool(claimed)

    async def get_or_load(self, address: CacheAddress, *, load: Callable[[], Awaitable[T]]) -> T:
        """The cached value at `address`, or `load()`'s, stored for later readers unless None.

        Exceptions from `load` propagate unchanged (a 404 stays a 404).
        """
        name, key, generations = address.name, address.key, address.generations
        if not self.enabled:
            return await load()
        try:
            value, seen = await self._lookup(key, generations)
        except CacheUnavailable:
            CACHE_MISSES.labels(name).inc()
            return await load()
        if value is not _MISSING:
            CACHE_HITS.labels(name).inc()
            return cast(T, value)
        try:
            return await self._rebuild(name, key, generations, load, seen)
        except CacheUnavailable:
            CACHE_MISSES.labels(name).inc()
            return await load()

    async def peek_many(self, addresses: Sequence[CacheAddress]) -> list[JsonValue] | None:
        """The fresh values at all of `addresses` (one round trip), or None unless every one is
        there to serve. Counts hits only when all are."""
        if not self.enabled:
            return None
        try:
            values, _ = await self._lookup_many(addresses)
        except CacheUnavailable:
            return None
        if any(value is _MISSING for value in values):
            return None
        for address in addresses:
            CACHE_HITS.labels(address.name).inc()
        return values

    async def get_many_or_load(
        self,
        addresses: Sequence[CacheAddress],
        *,
        load: Callable[[list[CacheAddress]], Awaitable[Mapping[str, T]]],
    ) -> list[T | None]:
        """The values at `addresses`, in order: the cached ones read in one round trip, the rest
        from one call of `load(missing)`, which maps the keys it found to their values (a key it
        leaves out is None, and stored for nobody).

        Unlike `get_or_load`, concurrent misses of the same keys each load them: meant for many
        small entries that one query loads together, where waiting on each key's lock would
        cost more than the query.
        """
        if not self.enabled:
            loaded = await load(list(addresses))
            return [loaded.get(address.key) for address in addresses]
        tokens: dict[str, str | None] | None
        try:
            values, tokens = await self._lookup_many(addresses)
        except CacheUnavailable:
            values, tokens = [_MISSING] * len(addresses), None
        missing = [
            address for address, value in zip(addresses, values, strict=True) if value is _MISSING
        ]
        for address, value in zip(addresses, values, strict=True):
            (CACHE_MISSES if value is _MISSING else CACHE_HITS).labels(address.name).inc()
        if not missing:
            return cast(list[T | None], values)
        loaded = await load(missing)
        if tokens is not None:
            # Not storing them only costs the next reader the same load.
            with contextlib.suppress(CacheUnavailable):
                await self._store_many(missing, loaded, tokens)
        return [
            loaded.get(address.key) if value is _MISSING else cast(T, value)
            for address, value in zip(addresses, values, strict=True)
        ]

    async def _lookup_many(
        self, addresses: Sequence[CacheAddress]
    ) -> tuple[list[JsonValue], dict[str, str | None]]:
        """Each address's fresh value or `_MISSING`, and the tokens of all their generations."""
        generations = list(dict.fromkeys(g for address in addresses for g in address.generations))
        keys = [
            *(self._key(address.key) for address in addresses),
            *(self._generation_key(g) for g in generations),
        ]
        found = await self._call(lambda: self._get_many(keys))
        tokens = dict(zip(generations, found[len(addresses) :], strict=True))
        values: list[JsonValue] = []
        for address, entry in zip(addresses, found[: len(addresses)], strict=True):
            current = [tokens[g] for g in address.generations]
            if (
                isinstance(entry, dict)
                and None not in current
                and entry.get("generations") == current
            ):
                values.append(entry.get("value"))
            else:
                values.append(_MISSING)
        return values, tokens

    async def _store_many(
        self,
        addresses: Sequence[CacheAddress],
        loaded: Mapping[str, JsonValue],
        read_before_load: Mapping[str, str | None],
    ) -> None:
        """Store what `load` found under the generations read before it (see
        `_claim_generations`); an entry whose generation a write started meanwhile is left out."""
        claimed: dict[str, str | None] = {}
        entries: dict[str, JsonValue] = {}
        for address in addresses:
            value = loaded.get(address.key)
            if value is None:
                continue
            tokens: list[str] = []
            for generation in address.generations:
                if generation not in claimed:
                    started = await self._claim_generations(
                        [generation], [read_before_load[generation]]
                    )
                    claimed[generation] = None if started is None else started[0]
                token = claimed[generation]
                if token is None:
                    break
                tokens.append(token)
            else:
                entries[self._key(address.key)] = {"generations": tokens, "value": value}
        if entries:
            await self._call(lambda: self._backend.set_many(entries, expire=self.ttl_seconds))

    async def _lookup(
        self, key: str, generations: Sequence[str], *, seen: list[str | None] | None = None
    ) -> tuple[JsonValue, list[str | None]]:
        """The entry's value when it was built on the current generations (or on `seen`), else
        `_MISSING`; and the current generations."""
        keys = [self._key(key), *(self._generation_key(g) for g in generations)]
        entry, *current = await self._call(lambda: self._get_many(keys))
        if isinstance(entry, dict):
            built_on = entry.get("generations")
            if None not in current and built_on == current:
                return entry.get("value"), current
            if seen is not None and None not in seen and built_on == seen:
                return entry.get("value"), current
        return _MISSING, current

    async def _rebuild(
        self,
        name: str,
        key: str,
        generations: Sequence[str],
        load: Callable[[], Awaitable[T]],
        seen: list[str | None],
    ) -> T:
        """Load and store the entry, one caller at a time; `seen` are the generations the
        caller found when it asked.

        Whoever finds another caller rebuilding waits for its entry, not for its lock: taking
        the lock in turn only to read the entry would queue every reader of a hot key behind
        one another. The entry is as good as one loaded now if it was built on the generations
        the caller found, even if a write has replaced them since: it was loaded after every
        write the caller could have been told of. Insisting on the current ones would make each
        waiter load again whenever a write came during the wait.
        """
        lock = self._lock_key(key)
        # Digits, which `_get_many` reads back as a number (see `peek_or_stale`): any other raw
        # lock value would read as absent, as cashews' JSON serializer reads it.
        holder = str(uuid.uuid4().int)
        outcome: _Outcome[T] | None = None
        try:
            while not await self._backend.set_lock(lock, holder, expire=REBUILD_LOCK_SECONDS):
                await asyncio.sleep(REBUILD_POLL_SECONDS)
                value, _ = await self._lookup(key, generations, seen=seen)
                if value is not _MISSING:
                    CACHE_HITS.labels(name).inc()
                    return cast(T, value)
            try:
                # The caller before us may have stored the entry between our lookups.
                value, current = await self._lookup(key, generations, seen=seen)
                if value is not _MISSING:
                    CACHE_HITS.labels(name).inc()
                    return cast(T, value)
                CACHE_MISSES.labels(name).inc()
                loaded_at = time.time()
                outcome = await _Outcome.of(load)
                if outcome.value is not None:
                    built_on = await self._claim_generations(generations, current)
                    if built_on is not None:
                        entry = {"generations": built_on, "value": outcome.value, "at": loaded_at}
                        await self.set(key, entry, ttl_seconds=self.ttl_seconds)
            finally:
                await self._backend.unlock(lock, holder)
        except _BACKEND_ERRORS as error:
            self.circuit.record_failure(error)
            if outcome is None:
                raise CacheUnavailable(str(error)) from error
        except CacheUnavailable:
            if outcome is None:
                raise
        if outcome is None:
            raise CacheUnavailable("the rebuild did not run")
        return outcome.result()

    async def _claim_generations(
        self, generations: Sequence[str], read_before_load: list[str | None]
    ) -> list[str] | None:
        """The generations to store an entry under, or None when it must not be stored.

        Tokens read before the load are safe: a write committed since then has replaced them.
        A missing generation is started only now (so lookups of absent rows leave nothing
        behind), and only if no write started it meanwhile, since that write may have
        committed after the load.
        """
        tokens: list[str] = []
        for generation, token in zip(generations, read_before_load, strict=True):
            if token is None:
                token = uuid.uuid4().hex
                started = await self._call(
                    partial(
                        self._backend.set,
                        self._generation_key(generation),
                        token,
                        expire=GENERATION_TTL_SECONDS,
                        exist=False,
                    )
                )
                if not started:
                    return None
            tokens.append(token)
        return tokens

    async def invalidate(self, *generations: str) -> None:
        """Start new generations, so entries built on the old ones are never served again.

        Never raises: a write must not fail because the cache is down. Entries left behind in
        an unreachable Redis expire within CACHE_TTL_SECONDS.
        """
        if not generations:
            return
        changed = set(generations)
        # Before, so that no copy is served from here on; after, for any copy rendered from
        # an entry read meanwhile, which the new tokens have not made stale yet.
        self.changes.changed_here(changed)
        keys = [self._generation_key(g) for g in changed]
        try:
            await self._call(lambda: self._replace_generations(keys))
        except CacheUnavailable as error:
            logger.warning("could not invalidate %s: %s", sorted(generations), error)
            return
        finally:
            self.changes.changed_here(changed)
        await self.changes.announce(changed)


def _decoded(value: bytes | str | None) -> JsonValue:
    """A value as cashews' JSON serializer stored it (unsigned and uncompressed, as set up
    here), read as its `get_many` reads it: digits are a number, anything else JSON. A value
    that is neither, which this cache never writes, reads as absent rather than failing."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return json.loads(value)
    except ValueError:
        return None


class _Missing:
    pass


_MISSING: Final = _Missing()


class _Outcome(Generic[T]):
    """What `load()` returned or raised, carried out of the lock before being re-raised, so
    that a failure to release the lock never hides the loader's own exception."""

    def __init__(self, value: T | None, error: Exception | None) -> None:
        self.value = value
        self.error = error

    @classmethod
    async def of(cls, load: Callable[[], Awaitable[T]]) -> "_Outcome[T]":
        try:
            return cls(await load(), None)
        except Exception as error:
            return cls(None, error)

    def result(self) -> T:
        if self.error is not None:
            raise self.error
        return cast(T, self.value)


def bind_cache(session: AsyncSession, cache: Cache) -> None:
    """Make `cache` the one that this session's writes invalidate after they commit."""
    session.info[SESSION_CACHE_KEY] = cache


def invalidate_after_commit(session: AsyncSession, *generations: str) -> None:
    """Invalidate `generations` once the session's transaction commits; never before, or a
    concurrent read could cache the rows being replaced. A rollback drops the request."""
    cache: Cache | None = session.info.get(SESSION_CACHE_KEY)
    if cache is None:
        logger.warning("session has no cache bound; %s not invalidated", sorted(generations))
        return
    pending: set[str] | None = session.info.get(_PENDING_GENERATIONS)
    if pending is None:
        pending = session.info[_PENDING_GENERATIONS] = set()

        async def invalidate_pending() -> None:
            stale = session.info.pop(_PENDING_GENERATIONS, set())
            await cache.invalidate(*stale)

        after_commit(session, invalidate_pending, on_discard=_forget_pending(session))
    pending.update(generations)


def _forget_pending(session: AsyncSession) -> Callable[[], None]:
    return lambda: session.info.pop(_PENDING_GENERATIONS, None)


# Async, like every dependency on a hot path: a plain function would be run in a thread.
async def get_cache(request: Request) -> Cache:
    cache: Cache = request.app.state.cache
    return cache


CacheDep = Annotated[Cache, Depends(get_cache)]
