"""Running queued jobs inside a test's transaction.

Jobs that a request queues live in the test's rolled-back transaction, out of a worker's sight;
`JobRunner` runs them on the same connection through the worker's own `run_job`, each in a
savepoint, until none is left (handlers may queue more). The worker's claiming, retries and
shutdown are tested against committed data in `tests/platform/test_worker.py`.
"""

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.db.session import commit
from conduit.platform.jobs.context import JobContext, Resources
from conduit.platform.jobs.registry import registry
from conduit.platform.jobs.runner import run_job


@dataclass(frozen=True)
class QueuedJob:
    id: int
    name: str
    payload: bytes | None
    attempts: int


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

    async def due(self) -> list[QueuedJob]:
        """The jobs that may run now, oldest first."""
        result = await self.session.execute(
            text(
                "SELECT id, entrypoint, payload, attempts FROM pgqueuer "
                "WHERE status = 'queued' AND execute_after <= now() ORDER BY id"
            )
        )
        return [QueuedJob(*row) for row in result]

    def context(self, *, job_id: int = 0, attempt: int = 1) -> JobContext:
        return JobContext(
            resources=self.resources,
            session=self.session,
            job_id=job_id,
            attempt=attempt,
            last_attempt=True,
        )

    async def run(self, job: QueuedJob) -> None:
        """Take `job` off the queue and run it, committed (to a savepoint) as the worker would;
        a handler's error propagates, rolled back to before the job."""
        await self.session.execute(text("DELETE FROM pgqueuer WHERE id = :id"), {"id": job.id})
        try:
            await run_job(
                self.context(job_id=job.id, attempt=job.attempts + 1), job.name, job.payload
            )
            await commit(self.session)
        except BaseException:
            await self.session.rollback()
            raise

    async def run_periodic(self, name: str) -> None:
        """Run periodic job `name` as the worker does: committed when it returns."""
        await registry.periodic[name].handler(self.context())
        await commit(self.session)

    async def run_all(self, names: Collection[str] | None = None) -> list[str]:
        """Run every due job (only those in `names` when given), and the jobs they queue, in
        order, until none is left; the names of those run."""
        ran: list[str] = []
        while batch := [job for job in await self.due() if names is None or job.name in names]:
            for job in batch:
                await self.run(job)
                ran.append(job.name)
        return ran
