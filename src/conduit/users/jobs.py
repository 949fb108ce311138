"""Periodic jobs of the users module."""

from conduit.platform.jobs.context import JobContext
from conduit.platform.jobs.registry import every
from conduit.users import sessions


@every("users.delete_ended_sessions", "17 * * * *")
async def delete_ended_sessions(context: JobContext) -> None:
    await sessions.delete_ended(context.session)
