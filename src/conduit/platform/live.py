"""Live messages from whoever writes (a job handler, a route after its commit) to whoever
streams (an open server-sent events response), by topic, across processes.

In process by default, which is right for the embedded default where the worker runs inside
the server; Redis pub/sub with `REDIS_URL`, so a message published by a worker on one machine
reaches the stream held open by an API replica on another. Delivery is best effort by nature
(a stream that is not open misses the message, and so does one whose process is cut off from
Redis for a moment); what must not be lost is persisted first by the caller, and a client that
reconnects reads it from the API.

Streams are long-lived responses, and a server that stops gracefully waits for its open
responses before anything else. So a channel ends its subscriptions as soon as the process is
asked to stop (SIGTERM or SIGINT), ahead of the server's own handling of the signal, and again
when it is closed; a stream then finishes its response and the shutdown goes on at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any, Protocol, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from conduit.platform.errors import ConduitError
from conduit.platform.redis import redis_connection_options
from conduit.platform.settings import Settings

logger = logging.getLogger(__name__)

# A subscriber that stops reading loses its oldest messages instead of growing without bound.
QUEUE_SIZE = 100
# Messages per round trip when publishing many at once.
PUBLISH_BATCH = 500
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class LiveUnavailable(ConduitError):
    status_code = 503
    field = "live"
    message = "is unavailable; try again shortly"


class SubscriptionEnded(Exception):
    """The channel is closing (the server is stopping): no more messages will come."""


_END = object()


class Subscription:
    """The messages published to one topic while the subscription is open, oldest first."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._queue: asyncio.Queue[object] = asyncio.Queue(QUEUE_SIZE)
        self._ended = False

    def deliver(self, message: str) -> None:
        if not self._ended:
            self._put(message)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._put(_END)

    @property
    def ended(self) -> bool:
        return self._ended

    def _put(self, item: object) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(item)

    async def next(self) -> str:
        """The next message, waiting for one (bound the wait with `asyncio.timeout`).

        Raises `SubscriptionEnded` once the channel has ended the subscription and every
        message delivered before that has been read.
        """
        if self._ended and self._queue.empty():
            raise SubscriptionEnded
        item = await self._queue.get()
        if item is _END:
            raise SubscriptionEnded
        return cast(str, item)


class LiveChannel(Protocol):
    async def publish(self, topic: str, message: str) -> None: ...

    async def publish_many(self, messages: Iterable[tuple[str, str]]) -> None:
        """Publish each (topic, message), in as few round trips as the channel allows."""
        ...

    def subscribe(self, topic: str) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """While open, messages published to `topic` arrive in the subscription.

        Raises `LiveUnavailable` when the channel cannot listen to the topic.
        """
        ...

    def end_subscriptions(self) -> None:
        """End every open subscription, and any opened later, as when the process stops."""
        ...

    async def aclose(self) -> None: ...


class _LocalSubscribers:
    """The open subscriptions of this process, by topic."""

    def __init__(self) -> None:
        self.topics: dict[str, set[Subscription]] = {}
        self.ended = False

    def deliver(self, topic: str, message: str) -> None:
        for subscription in self.topics.get(topic, ()):
            subscription.deliver(message)

    def add(self, topic: str) -> Subscription:
        subscription = Subscription(topic)
        if self.ended:
            subscription.end()
        self.topics.setdefault(topic, set()).add(subscription)
        return subscription

    def remove(self, subscription: Subscription) -> bool:
        """Forget `subscription`; whether its topic has no subscriber left."""
        subscribers = self.topics.get(subscription.topic)
        if subscribers is None:
            return False
        subscribers.discard(subscription)
        if not subscribers:
            del self.topics[subscription.topic]
            return True
        return False

    def end_all(self) -> None:
        self.ended = True
        for subscribers in self.topics.values():
            for subscription in subscribers:
                subscription.end()


def _on_stop_signals(callback: Callable[[], None]) -> Callable[[], None]:
    """Run `callback` on the running event loop when SIGTERM or SIGINT arrives, then let the
    signal's previous handler (the server's graceful shutdown) run as before. Returns what
    undoes this.

    Chaining the handler is what lets the callback run before the server starts waiting for
    open responses: the server's own shutdown hook (the ASGI lifespan) only runs after they
    have all finished. A signal whose handler is not a Python function (default or ignored) is
    left alone, as no graceful shutdown would follow it anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    installed: dict[int, tuple[Callable[[int, FrameType | None], Any], Any]] = {}
    for signum in STOP_SIGNALS:
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(
            number: int,
            frame: FrameType | None,
            previous: Callable[[int, FrameType | None], Any] = previous,
        ) -> None:
            # A signal handler runs between two bytecodes of the main thread, possibly inside
            # the event loop's own code: the callback must be scheduled, not called.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback)
            previous(number, frame)

        signal.signal(signum, handler)
        installed[signum] = (handler, previous)

    def undo() -> None:
        for signum, (handler, previous) in installed.items():
            # Left alone when someone chained their own handler after ours meanwhile.
            if signal.getsignal(signum) is handler:
                signal.signal(signum, previous)

    return undo


class _Channel:
    """What both channels share: local subscribers, and ending them when the process stops."""

    def __init__(self) -> None:
        self._subscribers = _LocalSubscribers()
        self._undo_stop_signals: Callable[[], None] | None = None

    def end_subscriptions(self) -> None:
        self._subscribers.end_all()

    def _watch_stop_signals(self) -> None:
        # Installed by the first subscription rather than at construction, so that a process
        # that only publishes (a worker, a test) keeps its signal handlers as they are.
        if self._undo_stop_signals is None:
            self._undo_stop_signals = _on_stop_signals(self.end_subscriptions)

    def _close_local(self) -> None:
        self.end_subscriptions()
        if self._undo_stop_signals is not None:
            self._undo_stop_signals()


class InProcessLiveChannel(_Channel):
    async def publish(self, topic: str, message: str) -> None:
        self._subscribers.deliver(topic, message)

    async def publish_many(self, messages: Iterable[tuple[str, str]]) -> None:
        for topic, message in messages:
            self._subscribers.deliver(topic, message)

    @asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[Subscription]:
        self._watch_stop_signals()
        subscription = self._subscribers.add(topic)
        try:
            yield subscription
        finally:
            self._subscribers.remove(subscription)

    async def aclose(self) -> None:
        self._close_local()


class _RemoteTopic:
    """A topic this process listens to in Redis; `confirmed` once Redis has acknowledged it."""

    def __init__(self) -> None:
        self.confirmed = asyncio.Event()


class RedisLiveChannel(_Channel):
    """One pub/sub connection per process, subscribed to the topics its streams follow.

    A subscription is handed out once Redis has confirmed it, so a message published after
    `subscribe` returns is never missed for want of a round trip. Publishing uses a separate
    connection pool with the usual command timeouts; the pub/sub connection has no read
    timeout, since it waits for messages indefinitely.
    """

    def __init__(
        self, redis_url: str, settings: Settings, *, subscribe_timeout_seconds: float = 5.0
    ) -> None:
        super().__init__()
        options = redis_connection_options(settings)
        self._redis: Redis = Redis.from_url(redis_url, **options)  # type: ignore[arg-type]
        listening = {**options, "socket_timeout": None, "max_connections": 2}
        self._listener: Redis = Redis.from_url(redis_url, **listening)  # type: ignore[arg-type]
        self._prefix = f"{settings.redis_key_prefix}live:"
        self._subscribe_timeout = subscribe_timeout_seconds
        self._remote: dict[str, _RemoteTopic] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        # Wakes the reader when there is something to listen to again.
        self._listening = asyncio.Event()
        # SUBSCRIBE and UNSUBSCRIBE for a topic go out in the order its subscribers come and go.
        self._lock = asyncio.Lock()
        self._closed = False

    async def publish(self, topic: str, message: str) -> None:
        await self._redis.publish(self._prefix + topic, message)

    async def publish_many(self, messages: Iterable[tuple[str, str]]) -> None:
        batch: list[tuple[str, str]] = []
        for item in messages:
            batch.append(item)
            if len(batch) == PUBLISH_BATCH:
                await self._publish_batch(batch)
                batch = []
        if batch:
            await self._publish_batch(batch)

    async def _publish_batch(self, batch: list[tuple[str, str]]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for topic, message in batch:
                pipe.publish(self._prefix + topic, message)
            await pipe.execute()

    @asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[Subscription]:
        self._watch_stop_signals()
        subscription = self._subscribers.add(topic)
        try:
            # Ended already when the process is stopping: nothing is worth listening for.
            if not subscription.ended:
                remote = await self._listen_to(topic)
                try:
                    async with asyncio.timeout(self._subscribe_timeout):
                        await remote.confirmed.wait()
                except TimeoutError:
                    raise LiveUnavailable() from None
            yield subscription
        finally:
            if self._subscribers.remove(subscription):
                await self._stop_listening_to(topic)

    async def _listen_to(self, topic: str) -> _RemoteTopic:
        async with self._lock:
            remote = self._remote.get(topic)
            if remote is not None:
                return remote
            remote = self._remote[topic] = _RemoteTopic()
            pubsub = self._ensure_reader()
            try:
                await pubsub.subscribe(self._prefix + topic)
            except (RedisError, OSError) as error:
                logger.warning("live channel could not subscribe: %r", error)
                raise LiveUnavailable() from None
            self._listening.set()
            return remote

    async def _stop_listening_to(self, topic: str) -> None:
        async with self._lock:
            # Someone may have subscribed again while this waited for the lock.
            if topic in self._subscribers.topics or self._remote.pop(topic, None) is None:
                return
            if self._pubsub is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.unsubscribe(self._prefix + topic)

    def _ensure_reader(self) -> PubSub:
        if self._pubsub is None:
            self._pubsub = self._listener.pubsub()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(self._pubsub), name="live-channel")
        return self._pubsub

    async def _read(self, pubsub: PubSub) -> None:
        connected = True
        while True:
            if not pubsub.subscribed:
                # Checking and clearing happen with no await in between, so a subscription
                # made meanwhile cannot be missed: it sets the event after subscribing.
                self._listening.clear()
                await self._listening.wait()
                continue
            try:
                # A bounded wait, so that redis-py's periodic health check gets to run.
                message = await pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # redis-py reconnects on the next read and subscribes again to every channel;
                # what is published meanwhile is lost, as the module says.
                if connected:
                    logger.warning("live channel lost its Redis connection: %r", error)
                connected = False
                await asyncio.sleep(1.0)
                continue
            if not connected:
                logger.info("live channel reconnected to Redis")
                connected = True
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        topic = channel.removeprefix(self._prefix)
        if message["type"] == "subscribe":
            remote = self._remote.get(topic)
            if remote is not None:
                remote.confirmed.set()
        elif message["type"] == "message":
            data = message["data"]
            self._subscribers.deliver(topic, data.decode() if isinstance(data, bytes) else data)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_local()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._listener.aclose()
        await self._redis.aclose()


def create_live_channel(settings: Settings) -> LiveChannel:
    if settings.redis_url is None:
        return InProcessLiveChannel()
    return RedisLiveChannel(settings.redis_url, settings)
