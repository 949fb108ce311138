import asyncio

import pytest
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

from conduit.cli import app
from conduit.platform.db import migrations
from conduit.platform.settings import get_settings
from tests.conftest import database_name, drop_database, recreate_database

runner = CliRunner()


def test_help_explains_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "db"):
        assert command in result.output
    db_help = runner.invoke(app, ["db", "--help"])
    for command in ("upgrade", "downgrade", "current"):
        assert command in db_help.output


def test_db_commands_move_the_schema(server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = database_name("conduit_cli")
    url = asyncio.run(recreate_database(server_url, name))
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    head = ScriptDirectory.from_config(migrations.alembic_config()).get_current_head()
    try:
        assert runner.invoke(app, ["db", "current"]).output.startswith("none")
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        assert runner.invoke(app, ["db", "current"]).output.strip() == head
        assert runner.invoke(app, ["db", "downgrade", "base"]).exit_code == 0
        assert runner.invoke(app, ["db", "current"]).output.startswith("none")
    finally:
        get_settings.cache_clear()
        asyncio.run(drop_database(server_url, name))


def test_production_without_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.invalid/conduit")
    monkeypatch.delenv("JWT_SECRET", raising=False)
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["db", "current"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "JWT_SECRET" in result.output
