"""A `conduit worker` process that can also run two test jobs, for the tests that kill, stop
and race real worker processes (tests/platform/test_worker.py).

Run as `python -m tests.platform.job_worker` with the worker's usual environment. The jobs are
registered on import, so the tests that queue them import this module too.
"""

import asyncio
import os

from sqlalchemy import text

from conduit.platform.jobs.context import JobContext
from conduit.platform.jobs.host import run_worker_until_stopped
from conduit.platform.jobs.registry import JsonObject, job
from conduit.platform.observability.logging import configure_logging
from conduit.platform.settings import get_settings

# Set in a worker's environment to skip the jobs' sleeps: the worker that takes over a job.
NO_SLEEP = "TEST_JOBS_NO_SLEEP"


@job("test.record_effect")
async def record_effect(context: JobContext, payload: JsonObject) -> None:
    """Sleeps `seconds`, then records `key` in the `job_effect` table in the job's transaction:
    a run that does not finish records nothing, a finished run exactly one row."""
    if not os.environ.get(NO_SLEEP):
        await asyncio.sleep(float(payload.get("seconds", 0)))
    await context.session.execute(
        text("INSERT INTO job_effect (key, pid) VALUES (:key, :pid)"),
        {"key": payload["key"], "pid": os.getpid()},
    )


@job("test.always_fail", max_attempts=3)
async def always_fail(context: JobContext, payload: JsonObject) -> None:
    raise RuntimeError(f"refused on attempt {context.attempt}")


if __name__ == "__main__":
    settings = get_settings()
    assert settings.database_url is not None
    configure_logging(settings)
    asyncio.run(run_worker_until_stopped(settings, settings.database_url))
