"""The `conduit` command line: serve the API, manage the database schema and user accounts,
seed a large data set."""

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import pydantic
import typer
import uvloop
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.app import resolve_database_url
from conduit.platform import serving
from conduit.platform.db import migrations
from conduit.platform.db.engine import create_engine, create_sessionmaker
from conduit.platform.errors import ConduitError, validation_errors
from conduit.platform.jobs import inspect as jobs_inspect
from conduit.platform.jobs.host import run_worker_until_stopped
from conduit.platform.observability.logging import configure_logging
from conduit.platform.observability.metrics import MULTIPROC_DIR, clear_multiprocess_directory
from conduit.platform.seed import Mode, Options, Plan, SeedRefused, seed
from conduit.platform.seed.console import ProgressBars
from conduit.platform.settings import Environment, Settings, SettingsError, get_settings
from conduit.users import repository as users_repository
from conduit.users import service as users_service
from conduit.users.schemas import NewUserEnvelope

T = TypeVar("T")

app = typer.Typer(
    help=(
        "Conduit: the RealWorld API on async PostgreSQL.\n\n"
        "With no DATABASE_URL set, commands use an embedded PostgreSQL kept under DATA_DIR "
        "(default ./.conduit), so `conduit serve` alone gives a working server."
    ),
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(
    help="Inspect and migrate the database schema (Alembic).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
users_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
app.add_typer(users_app, name="users")
jobs_app = typer.Typer(help="Inspect the job queue and replay dead letters.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


def _settings() -> Settings:
    try:
        return get_settings()
    except (SettingsError, ValueError) as error:
        typer.secho(f"configuration error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _database_url(settings: Settings) -> str:
    return asyncio.run(resolve_database_url(settings))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=(
                "Number of server processes. Default: one per CPU in production with REDIS_URL "
                "set (which they share), else 1."
            ),
            show_default=False,
        ),
    ] = None,
    reload: Annotated[
        bool, typer.Option(help="Restart when the code changes (development).")
    ] = False,
    worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker",
            help=(
                "Also run background jobs in each server process. Default: on with the "
                "embedded database, off with DATABASE_URL (run `conduit worker` instead)."
            ),
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the API (docs at /docs), applying migrations first unless MIGRATE_ON_START=false."""
    if worker is not None:
        os.environ["WORKER_IN_PROCESS"] = "true" if worker else "false"
        get_settings.cache_clear()
    settings = _settings()
    if workers is None:
        workers = default_workers(settings)
    if workers > 1 and settings.redis_url is None:
        typer.secho(
            f"refusing to start {workers} worker processes without REDIS_URL: the cache, rate "
            "limits and idempotency keys would be kept apart in each process. Set REDIS_URL "
            "(redis://host:6379/0) or serve with --workers 1.",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    configure_logging(settings)
    database_url = _database_url(settings)
    if settings.should_migrate_on_start:
        asyncio.run(migrations.upgrade(database_url))
    # Create the signing key once, before any worker process could race to create it.
    settings.jwt_signing_key()
    # Server processes inherit the resolved database and must not start or migrate it again;
    # they run jobs when the embedded default does, which they can no longer tell by DATABASE_URL.
    os.environ["WORKER_IN_PROCESS"] = "true" if settings.runs_worker_in_process else "false"
    os.environ["DATABASE_URL"] = database_url
    os.environ["MIGRATE_ON_START"] = "false"
    get_settings.cache_clear()
    with _metrics_shared_by(workers):
        serving.serve(settings, host=host, port=port, workers=workers, reload=reload)


def default_workers(settings: Settings) -> int:
    """One process per CPU where speed matters (production) and the processes can share the
    cache, rate limits and idempotency keys (REDIS_URL)."""
    if settings.environment is not Environment.production or settings.redis_url is None:
        return 1
    return os.cpu_count() or 1


@contextmanager
def _metrics_shared_by(workers: int) -> Iterator[None]:
    """Prometheus' multiprocess mode for several server processes, in a directory that starts
    empty, as the client requires: a temporary one, or PROMETHEUS_MULTIPROC_DIR emptied."""
    configured = os.environ.get(MULTIPROC_DIR)
    if workers == 1:
        yield
    elif configured:
        clear_multiprocess_directory(Path(configured))
        yield
    else:
        with tempfile.TemporaryDirectory(prefix="conduit-metrics-") as directory:
            os.environ[MULTIPROC_DIR] = directory
            try:
                yield
            finally:
                del os.environ[MULTIPROC_DIR]


@db_app.command()
def upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    asyncio.run(migrations.upgrade(_database_url(_settings()), revision))
    typer.echo(f"upgraded to {revision}")


@db_app.command()
def downgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "-1") -> None:
    """Revert migrations down to REVISION (default: one step back; `base` removes everything)."""
    asyncio.run(migrations.downgrade(_database_url(_settings()), revision))
    typer.echo(f"downgraded to {revision}")


@db_app.command()
def current() -> None:
    """Print the revision the database is at."""
    revision = asyncio.run(migrations.current_revision(_database_url(_settings())))
    typer.echo(revision or "none (empty database)")


def _with_queue(
    settings: Settings, database_url: str, work: Callable[[AsyncSession], Awaitable[T]]
) -> T:
    """Run `work` on the job queue's tables, or explain what to do when they are missing."""
    try:
        return asyncio.run(_in_session(settings, database_url, work))
    except ProgrammingError as error:
        if "pgqueuer" not in str(error.orig):
            raise
        raise _fail(
            {"database": ["has no job queue yet: run `conduit db upgrade` to apply migrations"]}
        ) from None


async def _in_session(
    settings: Settings, database_url: str, work: Callable[[AsyncSession], Awaitable[T]]
) -> T:
    """Run `work` in one transaction, committed when it returns."""
    engine = create_engine(settings, database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            result = await work(session)
            await session.commit()
            return result
    finally:
        await engine.dispose()


def _fail(errors: Mapping[str, Sequence[str]]) -> typer.Exit:
    for field, messages in errors.items():
        for message in messages:
            typer.secho(f"{field} {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@users_app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="Email of the account to promote or create.")],
    username: Annotated[
        str | None, typer.Option(help="Username, needed only when the account is created.")
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            envvar="CONDUIT_ADMIN_PASSWORD",
            help=(
                "Password, needed only when the account is created; asked for when not given. "
                "Prefer the environment variable: other users can read command lines."
            ),
            show_default=False,
        ),
    ] = None,
) -> None:
    """Make the account with EMAIL an admin, reinstating it if suspended, or create it."""
    settings = _settings()
    database_url = _database_url(settings)

    async def find(session: AsyncSession) -> bool:
        return await users_repository.get_by_email(session, email) is not None

    new_user = None
    if not asyncio.run(_in_session(settings, database_url, find)):
        if username is None:
            raise _fail({"username": ["is needed to create an account for this email"]})
        if password is None:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        try:
            # Validated as the API validates a registration, so the messages are the same.
            new_user = NewUserEnvelope.model_validate(
                {"user": {"username": username, "email": email, "password": password}}
            ).user
        except pydantic.ValidationError as error:
            raise _fail(validation_errors(error.errors())) from None

    async def promote(session: AsyncSession) -> tuple[str, bool]:
        user, created = await users_service.ensure_admin(session, email=email, new_user=new_user)
        return user.username, created

    try:
        name, created = asyncio.run(_in_session(settings, database_url, promote))
    except ConduitError as error:
        raise _fail(error.errors) from None
    typer.echo(f"{'created' if created else 'promoted'} admin {name} <{email}>")


@app.command("worker")
def run_worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, help="Jobs run at once (default: WORKER_CONCURRENCY).", show_default=False
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Port serving Prometheus metrics, 0 for none (default: WORKER_METRICS_PORT).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run background jobs until SIGTERM or Ctrl-C: event handlers, emails, webhooks, feeds and
    periodic clean-ups. Any number may run, on any machine."""
    settings = _settings()
    if settings.redis_url is None:
        typer.secho(
            "refusing to start a separate worker without REDIS_URL: its live notifications "
            "and cache invalidations would not reach the server processes. Set REDIS_URL, or "
            "let `conduit serve` run the jobs itself (the default with the embedded database).",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    updates: dict[str, object] = {}
    if concurrency is not None:
        updates["worker_concurrency"] = concurrency
    if metrics_port is not None:
        updates["worker_metrics_port"] = metrics_port
    settings = settings.model_copy(update=updates)
    configure_logging(settings)
    database_url = _database_url(settings)
    if settings.should_migrate_on_start:
        asyncio.run(migrations.upgrade(database_url))
    # The loop the server processes run on (granian's uvloop): a job's statements and Redis
    # messages cost the worker less on it than on asyncio's own.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_worker_until_stopped(settings, database_url))


def _print_jobs(rows: Sequence[jobs_inspect.JobRow]) -> None:
    if not rows:
        typer.echo("no jobs")
        return
    for row in rows:
        error = f"  {row.last_error}" if row.last_error else ""
        typer.echo(
            f"{row.id:>8}  {row.job:<36} {row.status:<7} attempts={row.attempts:<3} "
            f"created={row.created:%Y-%m-%d %H:%M:%S}{error}"
        )


@jobs_app.command("list")
def list_jobs(
    name: Annotated[str | None, typer.Option("--job", help="Only jobs of this name.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Jobs listed at most.")] = 50,
) -> None:
    """Count jobs by name and status, then list the waiting and running ones, oldest first."""
    settings = _settings()
    database_url = _database_url(settings)

    async def read(
        session: AsyncSession,
    ) -> tuple[list[jobs_inspect.JobCount], list[jobs_inspect.JobRow]]:
        statuses = ["queued", "picked"]
        counted = await jobs_inspect.counts(session)
        return counted, await jobs_inspect.jobs(session, statuses=statuses, name=name, limit=limit)

    counted, rows = _with_queue(settings, database_url, read)
    for count in counted:
        typer.echo(
            f"{count.job:<36} {count.status:<7} {count.count:>7}  "
            f"oldest created {count.oldest:%Y-%m-%d %H:%M:%S}"
        )
    if counted:
        typer.echo("")
    _print_jobs(rows)


@jobs_app.command("dead")
def dead_jobs(
    name: Annotated[str | None, typer.Option("--job", help="Only jobs of this name.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Jobs listed at most.")] = 50,
) -> None:
    """List dead letters (jobs that failed every attempt) with their last error."""
    settings = _settings()
    database_url = _database_url(settings)

    async def read(session: AsyncSession) -> list[jobs_inspect.JobRow]:
        return await jobs_inspect.jobs(session, statuses=["failed"], name=name, limit=limit)

    _print_jobs(_with_queue(settings, database_url, read))


@jobs_app.command("retry")
def retry_jobs(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Ids of the dead letters to replay.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--job", help="Replay every dead letter of this job.")
    ] = None,
    every_job: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
) -> None:
    """Queue dead letters again, with a fresh set of attempts."""
    if not ids and name is None and not every_job:
        raise _fail({"jobs": ["name the ids to replay, or pass --job NAME or --all"]})
    settings = _settings()
    database_url = _database_url(settings)

    async def replay(session: AsyncSession) -> list[int]:
        return await jobs_inspect.retry_dead(session, ids=ids or None, name=name)

    replayed = _with_queue(settings, database_url, replay)
    typer.echo(f"queued again: {', '.join(map(str, replayed))}" if replayed else "nothing to retry")


SEED_PASSWORD = "conduit-password"  # noqa: S105 (the documented password of seeded accounts)


@app.command("seed")
def seed_command(
    users: Annotated[int, typer.Option(min=1, help="Users to create.")] = 10_000,
    articles: Annotated[int, typer.Option(min=0, help="Articles to create.")] = 10_000,
    follows_per_user: Annotated[
        float, typer.Option(min=0, help="Follows per user, on average (heavy-tailed).")
    ] = 20,
    favorites_per_article: Annotated[
        float, typer.Option(min=0, help="Favorites per article, on average (heavy-tailed).")
    ] = 5,
    comments_per_article: Annotated[
        float, typer.Option(min=0, help="Comments per article, on average (heavy-tailed).")
    ] = 2,
    tags: Annotated[int, typer.Option(min=0, help="Size of the tag vocabulary.")] = 500,
    days: Annotated[
        float, typer.Option(min=1, help="How far back the data set's history goes.")
    ] = 730,
    until: Annotated[
        datetime | None,
        typer.Option(help="When that history ends, in UTC (default: now).", show_default=False),
    ] = None,
    random_seed: Annotated[
        int, typer.Option("--seed", help="Random seed: the same one builds the same data.")
    ] = 1,
    password: Annotated[
        str,
        typer.Option(
            envvar="CONDUIT_SEED_PASSWORD", help="Password of every seeded user (8-128 chars)."
        ),
    ] = SEED_PASSWORD,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per COPY.")] = 20_000,
    append: Annotated[
        bool, typer.Option("--append", help="Add to a database that already has users.")
    ] = False,
    reset: Annotated[
        bool, typer.Option("--reset", help="Empty every table of the app first.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before --reset.")] = False,
) -> None:
    """Load a large, realistic data set fast (bulk COPY): users, follows, articles, tags,
    favorites, comments and the personal feed, as the app would have built them. No jobs or
    events are queued."""
    if append and reset:
        raise _refuse("pass --append or --reset, not both")
    if not 8 <= len(password) <= 128:
        raise _refuse("the password must have 8 to 128 characters, as the API requires")
    settings = _settings()
    database_url = _database_url(settings)
    if settings.should_migrate_on_start:
        asyncio.run(migrations.upgrade(database_url))
    if reset and not yes:
        typer.confirm(
            "--reset deletes every account, article, comment, session, notification, webhook "
            "and queued job in this database. Continue?",
            abort=True,
        )
    plan = Plan(
        users=users,
        articles=articles,
        follows_per_user=follows_per_user,
        favorites_per_article=favorites_per_article,
        comments_per_article=comments_per_article,
        tags=tags,
        seed=random_seed,
        until=until.replace(tzinfo=UTC) if until else datetime.now(UTC),
        days=days,
    )
    mode = Mode.reset if reset else Mode.append if append else Mode.empty
    options = Options(
        mode=mode,
        password=password,
        batch_size=batch_size,
        fanout_threshold=settings.feed_fanout_max_followers,
    )

    async def run() -> float:
        engine = create_engine(settings, database_url)
        try:
            with ProgressBars() as progress:
                report = await seed(engine, plan, options, progress)
            return sum(report.seconds.values())
        finally:
            await engine.dispose()

    try:
        seconds = asyncio.run(run())
    except SeedRefused as error:
        raise _refuse(f"the database {error}") from None
    typer.echo(f"seeded in {seconds:.1f} s; every user's password is the one given")


def _refuse(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(2)
