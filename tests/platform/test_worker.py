"""The worker against committed data: real worker processes that race, get killed and stop.

These tests use a database of their own (committed rows, visible across processes), not the
per-test rolled-back transaction.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from click.testing import Result
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from typer.testing import CliRunner

from conduit import cli
from conduit.app import create_app
from conduit.platform.db import migrations
from conduit.platform.jobs.queue import enqueue
from conduit.platform.observability import tracing
from conduit.platform.settings import Environment, Settings, get_settings, to_async_database_url
from conduit.users import service as users_service
from conduit.users.schemas import NewUser
from tests.conftest import (
    GENEROUS_RATE_LIMITS,
    TEST_JWT_SECRET,
    database_name,
    drop_database,
    recreate_database,
)
from tests.helpers import register
from tests.platform import job_worker
from tests.platform.server import free_port
from tests.platform.test_observability import span_trace

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
# Short, so that a job whose worker was killed is claimed again within seconds.
HEARTBEAT_TIMEOUT_SECONDS = "2"


@pytest.fixture(scope="module")
async def worker_database_url(server_url: str) -> AsyncIterator[str]:
    name = database_name("conduit_worker")
    url = await recreate_database(server_url, name)
    await migrations.upgrade(url)
    engine = create_async_engine(to_async_database_url(url))
    async with engine.begin() as connection:
        await connection.execute(
            text("CREATE TABLE job_effect (key text NOT NULL, pid integer NOT NULL)")
        )
    await engine.dispose()
    yield url
    await drop_database(server_url, name)


@pytest.fixture
async def engine(worker_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(to_async_database_url(worker_database_url))
    async with engine.begin() as connection:
        await connection.execute(
            text("TRUNCATE job_effect, pgqueuer, pgqueuer_log, domain_event, user_account CASCADE")
        )
    yield engine
    await engine.dispose()


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    def lines(self) -> list[dict[str, Any]]:
        parsed = []
        for line in self.log.read_text().splitlines():
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return parsed

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@contextmanager
def running_worker(
    database_url: str,
    log: Path,
    *,
    command: tuple[str, ...] = ("tests.platform.job_worker",),
    **settings: str,
) -> Iterator[WorkerProcess]:
    metrics_port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MIGRATE_ON_START": "false",
        "LOG_FORMAT": "json",
        "WORKER_METRICS_PORT": str(metrics_port),
        "JOB_HEARTBEAT_TIMEOUT_SECONDS": HEARTBEAT_TIMEOUT_SECONDS,
        **{name.upper(): value for name, value in settings.items()},
    }
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", *command],
            env=environment,
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(process, log, metrics_port)
    try:
        deadline = time.monotonic() + 30
        while not any(line.get("event") == "worker started" for line in worker.lines()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the worker did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield worker
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, seconds: float = 30, what: str = "condition"
) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def scrape(worker: WorkerProcess) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{worker.metrics_port}/metrics")
    return response.text


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql), params)).scalar()


async def queue_jobs(engine: AsyncEngine, name: str, payloads: list[dict[str, Any]]) -> None:
    async with AsyncSession(engine) as session:
        for payload in payloads:
            await enqueue(session, name, payload)
        await session.commit()


async def effects(engine: AsyncEngine, key: str) -> int:
    return int(await scalar(engine, "SELECT count(*) FROM job_effect WHERE key = :key", key=key))


async def job_status(engine: AsyncEngine) -> tuple[str, int] | None:
    async with engine.connect() as connection:
        row = (
            await connection.execute(text("SELECT status::text, attempts FROM pgqueuer"))
        ).first()
    return None if row is None else (row[0], row[1])


async def test_a_rolled_back_write_queues_nothing_and_a_committed_one_everything(
    engine: AsyncEngine,
) -> None:
    new_user = NewUser(username="rolledback", email="rb@example.com", password="long enough pw")
    async with AsyncSession(engine) as session:
        await users_service.register(session, new_user)
        await session.rollback()
    assert await scalar(engine, "SELECT count(*) FROM domain_event") == 0
    assert await scalar(engine, "SELECT count(*) FROM pgqueuer") == 0

    async with AsyncSession(engine) as session:
        await users_service.register(session, new_user)
        await session.commit()
    assert await scalar(engine, "SELECT type FROM domain_event") == "user.registered"
    assert await scalar(engine, "SELECT count(*) FROM pgqueuer") >= 1


async def test_a_job_queued_first_in_a_transaction_still_rolls_back_with_it(
    engine: AsyncEngine,
) -> None:
    async with AsyncSession(engine) as session:
        await enqueue(session, "test.record_effect", {"key": "first"})
        await session.rollback()
    assert await scalar(engine, "SELECT count(*) FROM pgqueuer") == 0


async def test_two_workers_share_hundreds_of_jobs_without_running_one_twice(
    engine: AsyncEngine, worker_database_url: str, tmp_path: Path
) -> None:
    jobs = 300
    with (
        running_worker(worker_database_url, tmp_path / "a.log") as first,
        running_worker(worker_database_url, tmp_path / "b.log") as second,
    ):
        await queue_jobs(engine, "test.record_effect", [{"key": f"job-{n}"} for n in range(jobs)])

        async def all_done() -> bool:
            return await scalar(engine, "SELECT count(*) FROM pgqueuer") == 0

        await wait_until(all_done, seconds=60, what="the queue to empty")
        metrics = await scrape(first)
        assert first.terminate() == 0
        assert second.terminate() == 0

    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT key, pid FROM job_effect"))).all()
    assert len(rows) == jobs
    assert len({key for key, _ in rows}) == jobs
    # Both took part: with 300 jobs, one worker alone would show one process id.
    assert len({pid for _, pid in rows}) == 2
    succeeded = [
        line
        for worker in (first, second)
        for line in worker.lines()
        if line.get("event") == "job succeeded"
    ]
    assert len(succeeded) == jobs
    assert {line["job"] for line in succeeded} == {"test.record_effect"}
    assert all("job_id" in line and "duration_ms" in line for line in succeeded)
    assert 'conduit_jobs_total{job="test.record_effect",outcome="succeeded"}' in metrics


async def test_a_job_whose_worker_is_killed_is_completed_once_by_another(
    engine: AsyncEngine, worker_database_url: str, tmp_path: Path
) -> None:
    await queue_jobs(engine, "test.record_effect", [{"key": "killed", "seconds": 60}])
    with running_worker(worker_database_url, tmp_path / "killed.log") as doomed:

        async def picked() -> bool:
            return await job_status(engine) == ("picked", 0)

        await wait_until(picked, what="the first worker to claim the job")
        doomed.process.kill()
        doomed.process.wait()
    assert await effects(engine, "killed") == 0

    with running_worker(
        worker_database_url, tmp_path / "heir.log", **{job_worker.NO_SLEEP: "1"}
    ) as heir:

        async def done() -> bool:
            return await job_status(engine) is None

        await wait_until(done, what="the second worker to finish the job")
        # Give a duplicate run every chance to show itself.
        await asyncio.sleep(float(HEARTBEAT_TIMEOUT_SECONDS) + 1)
        assert heir.terminate() == 0
    assert await effects(engine, "killed") == 1


async def test_sigterm_lets_the_running_job_finish(
    engine: AsyncEngine, worker_database_url: str, tmp_path: Path
) -> None:
    await queue_jobs(engine, "test.record_effect", [{"key": "finishes", "seconds": 1.5}])
    with running_worker(worker_database_url, tmp_path / "w.log", worker_grace_seconds="30") as w:

        async def picked() -> bool:
            return await job_status(engine) == ("picked", 0)

        await wait_until(picked, what="the worker to claim the job")
        assert w.terminate() == 0
    assert await effects(engine, "finishes") == 1
    assert await job_status(engine) is None


async def test_sigterm_releases_a_job_that_outlasts_the_grace_period(
    engine: AsyncEngine, worker_database_url: str, tmp_path: Path
) -> None:
    await queue_jobs(engine, "test.record_effect", [{"key": "released", "seconds": 60}])
    with running_worker(worker_database_url, tmp_path / "w.log", worker_grace_seconds="0.5") as w:

        async def picked() -> bool:
            return await job_status(engine) == ("picked", 0)

        await wait_until(picked, what="the worker to claim the job")
        started = time.monotonic()
        assert w.terminate() == 0
        assert time.monotonic() - started < 10
        assert any(line.get("event", "").startswith("job released") for line in w.lines())
    # Queued again at once, not dropped and not left for the heartbeat timeout.
    assert await job_status(engine) == ("queued", 1)
    assert await effects(engine, "released") == 0

    with running_worker(worker_database_url, tmp_path / "next.log", **{job_worker.NO_SLEEP: "1"}):

        async def done() -> bool:
            return await job_status(engine) is None

        await wait_until(done, what="another worker to run the released job")
    assert await effects(engine, "released") == 1


async def conduit(database_url: str, *args: str) -> Result:
    """The command line, in a thread: its commands run their own event loop."""

    def invoke() -> Result:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(
                cli.app, list(args), env={"DATABASE_URL": database_url, "MIGRATE_ON_START": "false"}
            )
        finally:
            get_settings.cache_clear()

    return await anyio.to_thread.run_sync(invoke)


async def test_failures_retry_with_backoff_then_wait_as_dead_letters_to_be_replayed(
    engine: AsyncEngine, worker_database_url: str, tmp_path: Path
) -> None:
    await queue_jobs(engine, "test.always_fail", [{}])
    with running_worker(
        worker_database_url, tmp_path / "w.log", job_retry_base_seconds="0.2"
    ) as worker:

        async def dead() -> bool:
            status = await job_status(engine)
            return status is not None and status[0] == "failed"

        await wait_until(dead, what="the job to use up its attempts")
        metrics = await scrape(worker)
        assert worker.terminate() == 0

    # Three runs (the job type allows three): two retries, then held.
    assert await job_status(engine) == ("failed", 2)
    retries = [line for line in worker.lines() if line.get("event") == "job failed; will retry"]
    assert [line["attempt"] for line in retries] == [1, 2]
    assert all(0 < line["retry_in_seconds"] <= 0.4 for line in retries[:1])
    [last] = [line for line in worker.lines() if "dead letter" in line.get("event", "")]
    assert last["attempt"] == 3
    # One line per run: the queue library's own lines about the same runs are left out.
    assert not [line for line in worker.lines() if "entrypoint" in str(line.get("event"))]
    assert 'conduit_jobs_total{job="test.always_fail",outcome="retried"} 2.0' in metrics
    assert 'conduit_jobs_total{job="test.always_fail",outcome="dead"} 1.0' in metrics

    listed = await conduit(worker_database_url, "jobs", "dead")
    assert listed.exit_code == 0, listed.output
    assert "test.always_fail" in listed.stdout
    assert "RuntimeError: refused on attempt 3" in listed.stdout

    assert "failed" in (await conduit(worker_database_url, "jobs", "list")).stdout
    refused = await conduit(worker_database_url, "jobs", "retry")
    assert refused.exit_code == 1
    replayed = await conduit(worker_database_url, "jobs", "retry", "--all")
    assert replayed.exit_code == 0, replayed.output
    assert "queued again" in replayed.stdout
    assert await job_status(engine) == ("queued", 0)
    again = await conduit(worker_database_url, "jobs", "retry", "--all")
    assert "nothing to retry" in again.stdout


async def test_queue_depth_and_age_are_sampled_into_metrics(
    engine: AsyncEngine, worker_database_url: str, tmp_path: Path
) -> None:
    await queue_jobs(engine, "test.always_fail", [{}])
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE pgqueuer SET status = 'failed', "
                "created = now() - interval '1 hour', execute_after = now() - interval '1 hour'"
            )
        )
    await queue_jobs(engine, "test.record_effect", [{"key": "waiting"}])
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE pgqueuer SET execute_after = now() - interval '90 seconds' "
                "WHERE entrypoint = 'test.record_effect'"
            )
        )
    from conduit.platform.jobs.worker import sample_queue
    from conduit.platform.observability import metrics

    await sample_queue(engine, ["test.record_effect", "test.always_fail"])
    assert metrics.JOB_QUEUE_DEPTH.labels("test.always_fail", "failed")._value.get() == 1
    assert metrics.JOB_QUEUE_DEPTH.labels("test.record_effect", "queued")._value.get() == 1
    assert metrics.JOB_QUEUE_DEPTH.labels("test.record_effect", "picked")._value.get() == 0
    assert metrics.JOB_OLDEST_AGE.labels("test.record_effect")._value.get() >= 90
    assert metrics.JOB_OLDEST_AGE.labels("test.always_fail")._value.get() == 0


async def test_dead_rows_in_the_queue_are_sampled_into_metrics(engine: AsyncEngine) -> None:
    from conduit.platform.jobs.worker import sample_queue
    from conduit.platform.observability import metrics

    await queue_jobs(engine, "test.record_effect", [{"key": str(key)} for key in range(50)])
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM pgqueuer"))
        # Statistics are sent at most once a second; this transaction's are sent at its end.
        await connection.execute(text("SELECT pg_stat_force_next_flush()"))

    await sample_queue(engine, ["test.record_effect"])
    # Below the thousand dead rows at which autovacuum takes the table.
    assert metrics.JOB_QUEUE_DEAD_ROWS._value.get() >= 50


async def test_the_server_runs_jobs_itself_and_their_spans_join_the_request_trace(
    engine: AsyncEngine,
    worker_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "create_span_exporter", lambda _: exporter)
    settings = Settings(
        _env_file=None,
        environment=Environment.test,
        database_url=worker_database_url,
        data_dir=tmp_path,
        jwt_secret=TEST_JWT_SECRET,
        migrate_on_start=False,
        worker_in_process=True,
        otel_exporter_otlp_endpoint="http://collector.invalid:4318",
        **GENEROUS_RATE_LIMITS,
    )
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/api") as client:
            await register(client, "traced")

        async def handled() -> bool:
            return await scalar(engine, "SELECT count(*) FROM pgqueuer") == 0

        await wait_until(handled, what="the server's worker to run the jobs")
    assert await scalar(engine, "SELECT count(*) FROM event_handling") >= 1

    spans = exporter.get_finished_spans()
    [request] = [span for span in spans if span.name == "POST /api/users"]
    processed = [span for span in spans if span.name.startswith("process ")]
    assert processed
    assert {span_trace(span) for span in processed} == {span_trace(request)}


async def test_conduit_worker_serves_metrics_and_stops_cleanly_on_sigterm(
    worker_database_url: str, redis_server_url: str, tmp_path: Path
) -> None:
    # The real command, not the test harness: it refuses to run without Redis.
    with running_worker(
        worker_database_url,
        tmp_path / "worker.log",
        command=("conduit", "worker"),
        redis_url=redis_server_url,
    ) as worker:
        assert "conduit_job_queue_depth" in await scrape(worker)
        assert worker.terminate() == 0
    assert any(line.get("event") == "worker stopped" for line in worker.lines())
