"""The `conduit` command line: serve the API, manage the database schema and user accounts."""

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, TypeVar

import pydantic
import typer
import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.app import resolve_database_url
from conduit.platform.db import migrations
from conduit.platform.db.engine import create_engine, create_sessionmaker
from conduit.platform.errors import ConduitError, validation_errors
from conduit.platform.observability.logging import configure_logging, logging_config
from conduit.platform.observability.metrics import MULTIPROC_DIR, clear_multiprocess_directory
from conduit.platform.settings import Settings, SettingsError, get_settings
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
    workers: Annotated[int, typer.Option(min=1, help="Number of server processes.")] = 1,
    reload: Annotated[
        bool, typer.Option(help="Restart when the code changes (development).")
    ] = False,
) -> None:
    """Serve the API (docs at /docs), applying migrations first unless MIGRATE_ON_START=false."""
    settings = _settings()
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
    # Server processes inherit the resolved database and must not start or migrate it again.
    os.environ["DATABASE_URL"] = database_url
    os.environ["MIGRATE_ON_START"] = "false"
    get_settings.cache_clear()
    # uvicorn re-raises SIGTERM once it has drained; exiting through SystemExit instead of the
    # default handler lets exit hooks run, which is what stops the embedded PostgreSQL.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with _metrics_shared_by(workers):
        uvicorn.run(
            "conduit.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            reload=reload,
            # Scheme and client address from X-Forwarded-* only when the peer is a trusted
            # proxy, so HSTS follows the client's TLS and rate limits its address.
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=[str(network) for network in settings.trusted_proxies],
            log_config=logging_config(settings),
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        )


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    sys.exit(128 + signum)


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
