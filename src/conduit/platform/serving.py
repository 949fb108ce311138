"""Serving the app over HTTP with granian, as `conduit serve` does.

granian was chosen over uvicorn by measurement (see the README's "Benchmark"): on the same two
server processes it answered cached reads faster (list pages at twice the rate) with a steadier
tail, and routes that wait on the database equally. Each server process is a granian worker
that builds the app with `served_app()`; the main process only supervises them.

On SIGTERM the workers stop accepting connections and let requests in flight finish; a worker
still busy after SHUTDOWN_GRACE_SECONDS is killed, cutting off what it was serving (jobs it was
running in process are then retried once their heartbeat times out).
"""

import multiprocessing
from typing import cast

from granian import Granian
from granian.constants import Interfaces, Loops
from granian.log import LogLevels
from granian.utils.proxies import wrap_asgi_with_proxy_headers
from starlette.types import ASGIApp

from conduit.app import create_app
from conduit.platform.observability.logging import logging_config
from conduit.platform.settings import Settings, get_settings


def served_app() -> ASGIApp:
    """The app of one server process. Behind trusted proxies, the client's address and scheme
    come from `X-Forwarded-For` and `X-Forwarded-Proto`, so that HSTS follows the client's TLS
    and the access log shows the client; from any other peer those headers are ignored."""
    settings = get_settings()
    app = create_app(settings)
    if not settings.trusted_proxies:
        return app
    trusted = [str(network) for network in settings.trusted_proxies]
    return cast(ASGIApp, wrap_asgi_with_proxy_headers(app, trusted_hosts=trusted))


def serve(settings: Settings, *, host: str, port: int, workers: int, reload: bool) -> None:
    """Run `workers` server processes until SIGTERM or SIGINT, then drain them."""
    # Each server process imports the app afresh rather than inheriting this one's state:
    # prometheus-client picks its multiprocess storage when it is imported, and nothing this
    # process started (the embedded database's handle, threads) belongs in a server process.
    multiprocessing.set_start_method("spawn", force=True)
    Granian(
        f"{__name__}:{served_app.__name__}",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        # The API has no WebSocket routes (live notifications are Server-Sent Events).
        websockets=False,
        # The app writes its own access log, with route template, user and trace.
        log_access=False,
        log_dictconfig=logging_config(settings),
        # granian sets its own loggers' level from this, over the config's.
        log_level=LogLevels(settings.log_level.value.lower()),
        # granian would read 0 as "wait for ever": a second is the shortest grace it can give.
        workers_kill_timeout=max(settings.shutdown_grace_seconds, 1),
        respawn_failed_workers=True,
        reload=reload,
    ).serve()
