"""Both live channels against the same contract: in process, and on a real Redis (where two
channel objects stand for two processes)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from conduit.platform import live as live_module
from conduit.platform.live import (
    InProcessLiveChannel,
    LiveChannel,
    LiveUnavailable,
    RedisLiveChannel,
    Subscription,
    SubscriptionEnded,
)
from conduit.platform.settings import Settings
from tests.platform.backends import UNREACHABLE_REDIS_URL, on_redis, own_redis_server

pytestmark = pytest.mark.anyio

WAIT = 2.0


async def received(subscription: Subscription, seconds: float = WAIT) -> str:
    async with asyncio.timeout(seconds):
        return await subscription.next()


async def nothing_more(subscription: Subscription, seconds: float = 0.2) -> None:
    with pytest.raises(TimeoutError):
        await received(subscription, seconds)


@pytest.fixture
def redis_settings(settings: Settings, redis_server_url: str) -> Settings:
    return on_redis(settings, redis_server_url)


def redis_channel(settings: Settings) -> RedisLiveChannel:
    assert settings.redis_url is not None
    return RedisLiveChannel(settings.redis_url, settings)


@pytest.fixture(params=["memory", "redis"])
async def channels(
    request: pytest.FixtureRequest, settings: Settings
) -> AsyncIterator[tuple[LiveChannel, LiveChannel]]:
    """A channel to publish on and one to subscribe on: the same object in process, two
    objects (two processes' worth) sharing a Redis otherwise."""
    if request.param == "memory":
        channel = InProcessLiveChannel()
        yield channel, channel
        await channel.aclose()
        return
    shared = on_redis(settings, request.getfixturevalue("redis_server_url"))
    publisher, subscriber = redis_channel(shared), redis_channel(shared)
    yield publisher, subscriber
    await publisher.aclose()
    await subscriber.aclose()


class TestContract:
    async def test_a_subscriber_receives_its_topic_only_in_order(
        self, channels: tuple[LiveChannel, LiveChannel]
    ) -> None:
        publisher, subscriber = channels
        async with subscriber.subscribe("user:1") as mine, subscriber.subscribe("user:2") as other:
            # Listening as soon as `subscribe` returns: no message is lost to a round trip.
            await publisher.publish("user:1", "first")
            await publisher.publish("user:1", "second")
            assert await received(mine) == "first"
            assert await received(mine) == "second"
            await nothing_more(other)

    async def test_every_subscriber_of_a_topic_receives_each_message(
        self, channels: tuple[LiveChannel, LiveChannel]
    ) -> None:
        publisher, subscriber = channels
        async with subscriber.subscribe("user:1") as first:
            async with subscriber.subscribe("user:1") as second:
                await publisher.publish("user:1", "both")
                assert await received(first) == "both"
                assert await received(second) == "both"
            # The other subscriber leaving does not stop this one listening.
            await publisher.publish("user:1", "still")
            assert await received(first) == "still"

    async def test_what_is_published_with_nobody_listening_is_gone(
        self, channels: tuple[LiveChannel, LiveChannel]
    ) -> None:
        publisher, subscriber = channels
        await publisher.publish("user:1", "missed")
        async with subscriber.subscribe("user:1") as subscription:
            await nothing_more(subscription)
        async with subscriber.subscribe("user:1") as subscription:
            await publisher.publish("user:1", "caught")
            assert await received(subscription) == "caught"

    async def test_publish_many_delivers_each_to_its_topic(
        self, channels: tuple[LiveChannel, LiveChannel]
    ) -> None:
        publisher, subscriber = channels
        # More than one round trip's worth, spread so that no subscriber falls behind.
        count, topics = live_module.PUBLISH_BATCH + 7, 10
        async with contextlib.AsyncExitStack() as stack:
            subscriptions = [
                await stack.enter_async_context(subscriber.subscribe(f"user:{n}"))
                for n in range(topics)
            ]
            await publisher.publish_many((f"user:{n % topics}", str(n)) for n in range(count))
            for index, subscription in enumerate(subscriptions):
                expected = [str(n) for n in range(index, count, topics)]
                assert [await received(subscription) for _ in expected] == expected
                await nothing_more(subscription, 0.01)

    async def test_ending_subscriptions_delivers_what_came_first_then_ends(
        self, channels: tuple[LiveChannel, LiveChannel]
    ) -> None:
        publisher, subscriber = channels
        async with subscriber.subscribe("user:1") as subscription:
            await publisher.publish("user:1", "before")
            await asyncio.sleep(0.1)
            subscriber.end_subscriptions()
            assert subscription.ended
            assert await received(subscription) == "before"
            with pytest.raises(SubscriptionEnded):
                await received(subscription)
            await publisher.publish("user:1", "after")
            with pytest.raises(SubscriptionEnded):
                await received(subscription)
        # Once the process is stopping, a new subscription ends at once.
        async with subscriber.subscribe("user:1") as late:
            with pytest.raises(SubscriptionEnded):
                await received(late)

    async def test_closing_the_channel_ends_open_subscriptions(
        self, channels: tuple[LiveChannel, LiveChannel]
    ) -> None:
        _, subscriber = channels
        async with subscriber.subscribe("user:1") as subscription:
            waiting = asyncio.create_task(received(subscription))
            await asyncio.sleep(0.01)
            await subscriber.aclose()
            with pytest.raises(SubscriptionEnded):
                await waiting

    async def test_a_subscriber_that_falls_behind_loses_the_oldest(
        self, channels: tuple[LiveChannel, LiveChannel]
    ) -> None:
        publisher, subscriber = channels
        extra = 5
        async with subscriber.subscribe("user:1") as subscription:
            await publisher.publish_many(
                ("user:1", str(n)) for n in range(live_module.QUEUE_SIZE + extra)
            )
            await asyncio.sleep(0.2)
            assert await received(subscription) == str(extra)


class TestRedis:
    async def test_listens_in_redis_while_anyone_listens_and_no_longer(
        self, redis_settings: Settings
    ) -> None:
        channel = redis_channel(redis_settings)
        channel_name = f"{redis_settings.redis_key_prefix}live:user:1"
        assert redis_settings.redis_url is not None
        client = redis.asyncio.Redis.from_url(redis_settings.redis_url)

        async def listeners() -> int:
            [(_, count)] = await client.pubsub_numsub(channel_name)
            return int(count)

        try:
            async with channel.subscribe("user:1"), channel.subscribe("user:1"):
                # One connection per process, however many local subscribers.
                assert await listeners() == 1
            for _ in range(100):
                if not await listeners():
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("still subscribed in Redis with no subscriber left")
        finally:
            await channel.aclose()
            await client.aclose()

    async def test_subscribing_without_redis_is_unavailable(self, settings: Settings) -> None:
        channel = redis_channel(on_redis(settings, UNREACHABLE_REDIS_URL))
        try:
            with pytest.raises(LiveUnavailable):
                async with channel.subscribe("user:1"):
                    pass
            # Nothing is left half-subscribed: the next attempt tries afresh.
            with pytest.raises(LiveUnavailable):
                async with channel.subscribe("user:1"):
                    pass
            with pytest.raises(redis.RedisError):
                await channel.publish("user:1", "lost")
        finally:
            await channel.aclose()

    async def test_listens_again_after_redis_restarts(self, settings: Settings) -> None:
        with own_redis_server() as server:
            shared = on_redis(settings, server.connection_url)
            publisher, subscriber = redis_channel(shared), redis_channel(shared)
            try:
                async with subscriber.subscribe("user:1") as subscription:
                    await publisher.publish("user:1", "before")
                    assert await received(subscription) == "before"
                    server.stop()
                    await asyncio.sleep(0.5)
                    server.start()
                    # Delivered once the reader has reconnected and subscribed again.
                    async with asyncio.timeout(10):
                        while True:
                            with contextlib.suppress(redis.RedisError):
                                await publisher.publish("user:1", "after")
                            try:
                                assert await received(subscription, 0.3) == "after"
                                break
                            except TimeoutError:
                                continue
            finally:
                await publisher.aclose()
                await subscriber.aclose()
