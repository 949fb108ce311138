"""Running queued jobs inside a test's transaction.

Jobs that a request queues live in the test's rolled-back transaction, out of a worker's sight;
`JobRunner` runs them on the same connection through the worker's own `run_job`, each in a
savepoint, until none is left (handlers may queue more). The worker's claiming, retries and
shutdown are tested against committed data in `tests/platform/test_worker.py`.
"""

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.db.session import commit
from conduit.platform.jobs.context import JobContext, Resources
from conduit.platform.jobs.runner import run_job


@dataclass
class JobRunner:
    session: AsyncSession
    resources: Resources

    async def queued(self) -> list[str]:
        """Names of the jobs waiting, oldest first."""
        result = await self.session.execute(
            text("SELECT entrypoint FROM pgqueuer WHERE status = 'queued' ORDER BY id")
        )
        return list(result.scalars())

    async def run_all(self) -> list[str]:
        """Run every due job, and the jobs they queue, in order; the names of those run.

        A handler's error propagates to the test, rolled back to before that job.
        """
        ran: list[str] = []
        while True:
            rows = (
                await self.session.execute(
                    text(
                        "SELECT id, entrypoint, payload, attempts FROM pgqueuer "
                        "WHERE status = 'queued' AND execute_after <= now() ORDER BY id"
                    )
                )
            ).all()
            if not rows:
                return ran
            for job_id, name, payload, attempts in rows:
                await self.session.execute(
                    text("DELETE FROM pgqueuer WHERE id = :id"), {"id": job_id}
                )
                context = JobContext(
                    resources=self.resources,
                    session=self.session,
                    job_id=job_id,
                    attempt=attempts + 1,
                    last_attempt=True,
                )
                try:
                    await run_job(context, name, payload)
                    await commit(self.session)
                except BaseException:
                    await self.session.rollback()
                    raise
                ran.append(name)
