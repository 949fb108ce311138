"""The `conduit worker` process: the worker with its own engine, clients, metrics and traces,
stopped gracefully by SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal

import structlog
from prometheus_client import start_http_server

from conduit import background  # noqa: F401 (registers every job)
from conduit.platform.cache import Cache
from conduit.platform.db.engine import create_engine
from conduit.platform.http import create_http_client
from conduit.platform.jobs.context import Resources
from conduit.platform.jobs.worker import Worker
from conduit.platform.live import create_live_channel
from conduit.platform.observability import metrics, tracing
from conduit.platform.redis import close_redis, create_redis
from conduit.platform.settings import Settings

logger = structlog.stdlib.get_logger(__name__)


async def run_worker_until_stopped(settings: Settings, database_url: str) -> None:
    tracer_provider = tracing.create_tracer_provider(settings)
    engine = create_engine(settings, database_url)
    metrics.track_pool(engine)
    if tracer_provider is not None:
        tracing.instrument_engine(engine, tracer_provider)
        tracing.instrument_redis(tracer_provider)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port)
        logger.info("metrics served", port=settings.worker_metrics_port, path="/metrics")
    redis = create_redis(settings)
    resources = Resources(
        settings=settings,
        http=create_http_client(settings),
        cache=Cache(settings),
        redis=redis,
        live=create_live_channel(settings),
    )
    worker = Worker(resources, engine)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    task = asyncio.create_task(worker.run(), name="conduit-worker")
    stop_requested = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({task, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.is_set():
            logger.info("stopping: finishing the jobs in hand")
        await worker.stop(task)
    finally:
        stop_requested.cancel()
        await resources.http.aclose()
        await resources.live.aclose()
        await resources.cache.aclose()
        await close_redis(redis)
        await engine.dispose()
        if tracer_provider is not None:
            tracer_provider.shutdown()
