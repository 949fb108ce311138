"""Prometheus metrics, served at `/metrics`.

The metric objects are created here, once per process, on the default registry; other modules
import and increment them. With several server processes (`conduit serve --workers N`),
PROMETHEUS_MULTIPROC_DIR makes every process write its values to files that `/metrics` adds
up, whichever process answers the scrape; gauges say how (`livesum`: summed over live processes).

HTTP metrics are labelled by route template (`/api/articles/{slug}`), never by raw path, and
by a method from a fixed set, so a client cannot make new time series by inventing URLs.
"""

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, multiprocess
from prometheus_fastapi_instrumentator import Instrumentator
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# `*_created` series double the output and no dashboard or alert here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "handler", "status"],
)
HTTP_REQUEST_ERRORS = Counter(
    "http_request_errors_total",
    "HTTP requests answered with a server error (5xx), by method, route template and status.",
    ["method", "handler", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from receiving an HTTP request to the end of its response, by method and route template.",
    ["method", "handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_REQUESTS_IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "HTTP requests being handled right now.",
    multiprocess_mode="livesum",
)

DB_POOL_SIZE = Gauge(
    "conduit_db_pool_size",
    "Connections each pool keeps open at most without overflow (DB_POOL_SIZE), summed over "
    "server processes.",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_CHECKED_OUT = Gauge(
    "conduit_db_pool_checked_out",
    "Database connections in use.",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_OVERFLOW = Gauge(
    "conduit_db_pool_overflow",
    "Database connections open beyond the pool size (at most DB_MAX_OVERFLOW per process).",
    ["pool"],
    multiprocess_mode="livesum",
)

CACHE_HITS = Counter(
    "conduit_cache_hits_total",
    "Reads answered from the cache, by cache name (article, articles, tags, profile...).",
    ["cache"],
)
CACHE_STALE_ANSWERS = Counter(
    "conduit_cache_stale_answers_total",
    "Anonymous reads answered from an entry a write had made stale, while another request "
    "rebuilt it, by cache name.",
    ["cache"],
)
CACHE_MISSES = Counter(
    "conduit_cache_misses_total",
    "Reads the cache could not answer and the database did, by cache name.",
    ["cache"],
)
RATE_LIMIT_REJECTIONS = Counter(
    "conduit_rate_limit_rejections_total",
    "Requests refused with 429 by a rate limit, by limit name (login, write, read...).",
    ["limit"],
)

JOBS = Counter(
    "conduit_jobs_total",
    "Job runs by job name and outcome: succeeded, retried (failed, will run again), dead "
    "(failed its last attempt, held as a dead letter), released (stopped by a shutdown, queued "
    "again).",
    ["job", "outcome"],
)
JOB_DURATION = Histogram(
    "conduit_job_duration_seconds",
    "Time one run of a job took, whatever its outcome, by job name.",
    ["job"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
# Sampled from the queue table by each worker; every worker sees the same queue, so the
# processes' values agree and the largest is as good as any.
JOB_QUEUE_DEPTH = Gauge(
    "conduit_job_queue_depth",
    "Jobs in the queue by job name and status: queued (waiting, including retries not yet "
    "due), picked (running), failed (dead letters).",
    ["job", "status"],
    multiprocess_mode="livemax",
)
JOB_OLDEST_AGE = Gauge(
    "conduit_job_oldest_ready_age_seconds",
    "How long the oldest job that is due has been waiting to start, by job name (0: none).",
    ["job"],
    multiprocess_mode="livemax",
)
JOB_QUEUE_DEAD_ROWS = Gauge(
    "conduit_job_queue_dead_rows",
    "Dead rows in the job queue's table that no vacuum has removed yet; every dequeue reads "
    "past them.",
    multiprocess_mode="livemax",
)


# The series of each (method, route template, status) seen: finding a labelled series is a
# lock and a validation of its labels each time, a tenth of a cached read's own work. The
# labels are bounded (fixed methods, the app's templates), so this is too.
_request_series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}


def record_request(method: str, handler: str, status: str, seconds: float) -> None:
    """Count one answered request; `handler` is its route template."""
    method = method if method in HTTP_METHODS else "OTHER"
    key = (method, handler, status)
    series = _request_series.get(key)
    if series is None:
        series = HTTP_REQUESTS.labels(*key), HTTP_REQUEST_DURATION.labels(method, handler)
        _request_series[key] = series
    requests, duration = series
    requests.inc()
    duration.observe(seconds)
    if status.startswith("5"):
        HTTP_REQUEST_ERRORS.labels(method, handler, status).inc()


def expose(app: FastAPI) -> None:
    """Serve the metrics at `/metrics`. The HTTP metrics are recorded by the access log's
    middleware (`platform.middleware.RecordRequests`), which resolves each request's route
    template anyway."""
    Instrumentator().expose(app, include_in_schema=False)


class _PoolUsage:
    """Counts a pool's connections from its events.

    Counting, rather than asking the pool inside an event, matters: SQLAlchemy fires `checkin`
    and `close` before it updates its own figures.
    """

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.open = 0
        self.checked_out = 0

    def connected(self, *_: Any) -> None:
        self.open += 1
        self.publish()

    def closed(self, *_: Any) -> None:
        self.open -= 1
        self.publish()

    def checked_out_one(self, *_: Any) -> None:
        self.checked_out += 1
        self.publish()

    def checked_in_one(self, *_: Any) -> None:
        self.checked_out -= 1
        self.publish()

    def publish(self) -> None:
        DB_POOL_CHECKED_OUT.labels(self.name).set(self.checked_out)
        DB_POOL_OVERFLOW.labels(self.name).set(max(self.open - self.size, 0))


def track_pool(engine: AsyncEngine, name: str = "primary") -> None:
    """Publish the usage of `engine`'s connection pool as the `conduit_db_pool_*` gauges."""
    pool = engine.sync_engine.pool
    size = pool.size() if isinstance(pool, QueuePool) else 0
    usage = _PoolUsage(name, size)
    DB_POOL_SIZE.labels(name).set(size)
    usage.publish()
    target = engine.sync_engine
    event.listen(target, "connect", usage.connected)
    event.listen(target, "close", usage.closed)
    event.listen(target, "close_detached", usage.closed)
    event.listen(target, "checkout", usage.checked_out_one)
    event.listen(target, "checkin", usage.checked_in_one)


def forget_pool(name: str = "primary") -> None:
    DB_POOL_SIZE.labels(name).set(0)
    DB_POOL_CHECKED_OUT.labels(name).set(0)
    DB_POOL_OVERFLOW.labels(name).set(0)


def process_stopped() -> None:
    """Drop this process's gauges from the multiprocess files, so sums cover live processes."""
    if MULTIPROC_DIR in os.environ:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def clear_multiprocess_directory(directory: Path) -> None:
    """Remove the value files an earlier run left, which would otherwise be added in."""
    directory.mkdir(parents=True, exist_ok=True)
    for values in directory.glob("*.db"):
        values.unlink()
