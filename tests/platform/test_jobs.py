"""The jobs backbone's pure parts and its guards: backoff, the registry, the ports' checks."""

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.jobs.queue import enqueue, publish
from conduit.platform.jobs.registry import EVENT_TYPES, Registry, registry
from conduit.platform.jobs.runner import retry_delay


@pytest.mark.parametrize("attempt", [1, 2, 3, 10, 40])
def test_retry_delay_doubles_with_jitter_and_stops_at_the_maximum(attempt: int) -> None:
    step = min(3600.0, 2.0 * 2 ** (attempt - 1))
    delays = [retry_delay(attempt, base_seconds=2, max_seconds=3600) for _ in range(200)]
    assert all(timedelta(seconds=step / 2) <= delay <= timedelta(seconds=step) for delay in delays)
    # Jittered: a burst of failures does not come back at one instant.
    assert len(set(delays)) > 100


def test_a_name_is_registered_once() -> None:
    local = Registry()

    async def handler(*_: object) -> None:
        return None

    local.job("same")(handler)
    with pytest.raises(RuntimeError, match="already registered"):
        local.subscribe("same", "user.registered")(handler)
    with pytest.raises(RuntimeError, match="unknown events"):
        local.subscribe("typo", "user.registred")(handler)


def test_every_event_has_a_subscriber() -> None:
    unheard = {event for event in EVENT_TYPES if not registry.subscribers_of(event)}
    assert unheard == set()


@pytest.mark.anyio
async def test_unknown_jobs_and_events_are_refused_before_anything_is_written(
    session: AsyncSession,
) -> None:
    async def counts() -> tuple[int | None, int | None]:
        jobs = await session.scalar(text("SELECT count(*) FROM pgqueuer"))
        return jobs, await session.scalar(text("SELECT count(*) FROM domain_event"))

    before = await counts()
    with pytest.raises(LookupError):
        await enqueue(session, "no.such.job", {})
    with pytest.raises(LookupError):
        await publish(session, "article.liked", article_id=1)
    assert await counts() == before


def _readme_rows(header: str) -> dict[str, str]:
    """The rows of the README table that starts with `header`, by their first cell."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index(header) :].split("\n\n", 1)[0].splitlines()[2:]
    return {row.split("|")[1].strip().strip("`"): row for row in table}


def test_the_readme_lists_every_event_with_its_handlers() -> None:
    rows = _readme_rows("| event | data | handled by |")
    assert set(rows) == EVENT_TYPES
    for event, row in rows.items():
        listed = {name.strip(" `") for name in row.split("|")[3].split(",")}
        assert listed == {s.name for s in registry.subscribers_of(event)}, event


def test_the_readme_lists_every_periodic_job() -> None:
    assert set(_readme_rows("| job | when | what |")) == set(registry.periodic)
