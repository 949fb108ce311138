"""The worker: claims jobs from the queue and runs their handlers, retrying failures with
backoff and holding the ones that use up their attempts as dead letters.

Any number of workers may run, in any number of processes: pgqueuer claims each job with
`FOR UPDATE SKIP LOCKED`, so no two run the same job. A running job's heartbeat is renewed
while it runs; a job whose worker died (killed, machine lost) stops beating and is claimed
again by another worker after `JOB_HEARTBEAT_TIMEOUT_SECONDS`. Its first run's transaction
never committed, so its effects happen once.

On `stop()` the worker claims nothing more and lets running jobs finish for
`WORKER_GRACE_SECONDS`; jobs still running then are cancelled and released (queued again at
once), never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from pgqueuer import PgQueuer
from pgqueuer.core.executors import (
    AbstractEntrypointExecutor,
    EntrypointExecutorParameters,
)
from pgqueuer.errors import RetryRequested
from pgqueuer.models import Context, Job, Schedule
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from conduit.platform.cache import bind_cache
from conduit.platform.db.engine import create_sessionmaker
from conduit.platform.db.session import commit
from conduit.platform.jobs.context import JobContext, Resources
from conduit.platform.jobs.registry import PeriodicJob, registry
from conduit.platform.jobs.runner import max_attempts, retry_delay, run_job
from conduit.platform.observability import metrics

logger = structlog.stdlib.get_logger(__name__)

# How often each worker samples queue depth and age into its metrics.
METRICS_INTERVAL_SECONDS = 10.0


class _JobExecutor(AbstractEntrypointExecutor):
    def __init__(self, name: str, worker: Worker) -> None:
        # pgqueuer calls handlers through its executor; the handler itself is looked up by name.
        super().__init__(
            EntrypointExecutorParameters(
                concurrency_limit=0, func=self.execute, accepts_context=True, on_failure="hold"
            )
        )
        self.name = name
        self.worker = worker

    async def execute(self, job: Job, context: Context) -> None:
        await self.worker.execute(self.name, job)


class Worker:
    def __init__(self, resources: Resources, engine: AsyncEngine) -> None:
        self.resources = resources
        self.engine = engine
        self.settings = resources.settings
        self.sessionmaker = create_sessionmaker(engine)
        self._pgqueuer: PgQueuer | None = None
        self._connection: asyncpg.Connection[Any] | None = None
        self._started = asyncio.Event()

    @property
    def job_names(self) -> list[str]:
        return sorted([*registry.jobs, *registry.subscriptions])

    async def _connect(self) -> asyncpg.Connection[Any]:
        """A connection of its own, outside the engine's pool: it LISTENs for new jobs and
        holds claims for the worker's whole life."""
        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        kwargs.pop("prepared_statement_cache_size", None)
        kwargs.pop("async_creator_fn", None)
        connection: asyncpg.Connection[Any] = await asyncpg.connect(*args, **kwargs)
        return connection

    async def run(self) -> None:
        """Run jobs until `stop()`."""
        self._connection = await self._connect()
        pgqueuer = PgQueuer.from_asyncpg_connection(self._connection)
        for name in self.job_names:
            pgqueuer.qm.register_executor(name, _JobExecutor(name, self))
        for periodic in registry.periodic.values():
            pgqueuer.sm.schedule(periodic.name, periodic.cron)(self._periodic_runner(periodic))
        self._pgqueuer = pgqueuer
        concurrency = self.settings.worker_concurrency
        batch_size = max(1, concurrency // 2)
        sampler = asyncio.create_task(self._sample_queue_forever())
        logger.info("worker started", jobs=len(self.job_names), concurrency=concurrency)
        self._started.set()
        try:
            await pgqueuer.run(
                batch_size=batch_size,
                max_concurrent_tasks=max(concurrency, 2 * batch_size),
                heartbeat_timeout=timedelta(seconds=self.settings.job_heartbeat_timeout_seconds),
                dequeue_timeout=timedelta(seconds=5),
            )
        except Exception:
            logger.exception("the worker stopped on an error")
            raise
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            with contextlib.suppress(Exception):
                await asyncio.shield(self._connection.close())
            logger.info("worker stopped")

    async def wait_started(self) -> None:
        await self._started.wait()

    def begin_stop(self) -> None:
        if self._pgqueuer is not None:
            self._pgqueuer.shutdown.set()

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Stop claiming, let running jobs finish within the grace period, then release the
        rest. `task` is the one running `run()`."""
        self.begin_stop()
        # An error that ended `run` early was logged there.
        with contextlib.suppress(Exception):
            try:
                await asyncio.wait_for(asyncio.shield(task), self.settings.worker_grace_seconds)
            except TimeoutError:
                logger.warning("jobs still running after the grace period; releasing them")
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def execute(self, name: str, job: Job) -> None:
        attempt = job.attempts + 1
        allowed = max_attempts(name, self.settings.job_max_attempts)
        log = logger.bind(job=name, job_id=job.id, attempt=attempt)
        started = time.perf_counter()
        outcome = "succeeded"
        try:
            with structlog.contextvars.bound_contextvars(job=name, job_id=job.id):
                async with self.sessionmaker() as session:
                    bind_cache(session, self.resources.cache)
                    context = JobContext(
                        resources=self.resources,
                        session=session,
                        job_id=job.id,
                        attempt=attempt,
                        last_attempt=attempt >= allowed,
                    )
                    await run_job(context, name, job.payload)
                    await commit(session)
        except asyncio.CancelledError:
            outcome = "released"
            log.warning("job released: the worker stopped before it finished")
            raise RetryRequested(delay=timedelta(0), reason="released at shutdown") from None
        except Exception as error:
            if attempt >= allowed:
                outcome = "dead"
                log.exception("job failed its last attempt; held as a dead letter")
                raise
            outcome = "retried"
            delay = retry_delay(
                attempt,
                base_seconds=self.settings.job_retry_base_seconds,
                max_seconds=self.settings.job_retry_max_seconds,
            )
            log.warning(
                "job failed; will retry",
                error=f"{type(error).__name__}: {error}",
                retry_in_seconds=round(delay.total_seconds(), 3),
                attempts_allowed=allowed,
            )
            raise RetryRequested(delay=delay, reason=f"{type(error).__name__}: {error}") from error
        finally:
            duration = time.perf_counter() - started
            metrics.JOBS.labels(name, outcome).inc()
            metrics.JOB_DURATION.labels(name).observe(duration)
            if outcome == "succeeded":
                log.info("job succeeded", duration_ms=round(duration * 1000, 1))

    def _periodic_runner(self, periodic: PeriodicJob) -> Any:
        async def run_periodic(schedule: Schedule) -> None:
            log = logger.bind(job=periodic.name)
            started = time.perf_counter()
            try:
                async with self.sessionmaker() as session:
                    bind_cache(session, self.resources.cache)
                    context = JobContext(
                        resources=self.resources,
                        session=session,
                        job_id=0,
                        attempt=1,
                        last_attempt=True,
                    )
                    await periodic.handler(context)
                    await commit(session)
            except Exception:
                metrics.JOBS.labels(periodic.name, "failed").inc()
                log.exception("periodic job failed; it runs again at its next time")
                return
            duration = time.perf_counter() - started
            metrics.JOBS.labels(periodic.name, "succeeded").inc()
            metrics.JOB_DURATION.labels(periodic.name).observe(duration)
            log.info("periodic job succeeded", duration_ms=round(duration * 1000, 1))

        return run_periodic

    async def _sample_queue_forever(self) -> None:
        while True:
            try:
                await sample_queue(self.engine, self.job_names)
            except Exception:
                logger.warning("could not sample the job queue for metrics", exc_info=True)
            await asyncio.sleep(METRICS_INTERVAL_SECONDS)


async def sample_queue(engine: AsyncEngine, job_names: list[str]) -> None:
    """Set the queue depth, age and dead-row gauges from the queue table."""
    async with engine.connect() as connection:
        depth = await connection.execute(
            text("SELECT entrypoint, status::text, count(*) FROM pgqueuer GROUP BY 1, 2")
        )
        ages = await connection.execute(
            text(
                "SELECT entrypoint, extract(epoch FROM now() - min(execute_after)) FROM pgqueuer "
                "WHERE status = 'queued' AND execute_after <= now() GROUP BY 1"
            )
        )
        # From PostgreSQL's table statistics: a count that keeps growing means vacuums are not
        # keeping up (autovacuum off, or an old transaction holding dead rows back).
        dead_rows = await connection.scalar(
            text("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'pgqueuer'::regclass")
        )
        counted = {(row[0], row[1]): int(row[2]) for row in depth}
        oldest = {row[0]: float(row[1]) for row in ages}
    metrics.JOB_QUEUE_DEAD_ROWS.set(dead_rows or 0)
    for name in {*job_names, *(name for name, _ in counted)}:
        for status in ("queued", "picked", "failed"):
            metrics.JOB_QUEUE_DEPTH.labels(name, status).set(counted.get((name, status), 0))
        metrics.JOB_OLDEST_AGE.labels(name).set(oldest.get(name, 0.0))
