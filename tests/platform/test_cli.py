import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

from conduit.cli import app
from conduit.platform import security
from conduit.platform.db import migrations
from conduit.platform.settings import get_settings, to_async_database_url
from tests.conftest import database_name, drop_database, recreate_database

runner = CliRunner()


def test_help_explains_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "worker", "jobs", "db", "users"):
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
        assert runner.invoke(app, ["db", "current"]).stdout.startswith("none")
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        assert runner.invoke(app, ["db", "current"]).stdout.strip() == head
        assert runner.invoke(app, ["db", "downgrade", "base"]).exit_code == 0
        assert runner.invoke(app, ["db", "current"]).stdout.startswith("none")
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


@pytest.fixture
def migrated_database(server_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated database that the CLI uses through DATABASE_URL."""
    name = database_name("conduit_cli_users")
    url = asyncio.run(recreate_database(server_url, name))
    asyncio.run(migrations.upgrade(url))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("CONDUIT_ADMIN_PASSWORD", raising=False)
    get_settings.cache_clear()
    try:
        yield url
    finally:
        get_settings.cache_clear()
        asyncio.run(drop_database(server_url, name))


def _query(url: str, sql: str, *args: object) -> list[Any]:
    async def run() -> list[Any]:
        connection = await asyncpg.connect(to_async_database_url(url).replace("+asyncpg", ""))
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()

    return asyncio.run(run())


def _account(url: str, email: str) -> Any:
    rows = _query(
        url,
        "SELECT username, role, suspended_at, password_hash FROM user_account WHERE email = $1",
        email,
    )
    assert len(rows) == 1
    return rows[0]


def _password_matches(password: str, password_hash: str) -> bool:
    return asyncio.run(security.verify_password(password, password_hash))[0]


def test_create_admin_creates_the_account(
    migrated_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONDUIT_ADMIN_PASSWORD", "a strong admin password")
    result = runner.invoke(
        app, ["users", "create-admin", "--email", "boss@example.com", "--username", "boss"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "created admin boss <boss@example.com>"
    account = _account(migrated_database, "boss@example.com")
    assert account["role"] == "admin"
    assert _password_matches("a strong admin password", account["password_hash"])


def test_create_admin_asks_for_the_password(migrated_database: str) -> None:
    result = runner.invoke(
        app,
        ["users", "create-admin", "--email", "boss@example.com", "--username", "boss"],
        input="a strong admin password\na strong admin password\n",
    )
    assert result.exit_code == 0, result.output
    assert "Password" in result.output
    assert "a strong admin password" not in result.output
    account = _account(migrated_database, "boss@example.com")
    assert _password_matches("a strong admin password", account["password_hash"])


def test_create_admin_promotes_and_reinstates_an_existing_account(migrated_database: str) -> None:
    _query(
        migrated_database,
        "INSERT INTO user_account (username, email, password_hash, suspended_at) "
        "VALUES ('jake', 'jake@example.com', 'unchanged', now())",
    )
    # No password is asked for: the account has one.
    result = runner.invoke(app, ["users", "create-admin", "--email", "JAKE@example.com"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "promoted admin jake <JAKE@example.com>"
    account = _account(migrated_database, "jake@example.com")
    assert account["role"] == "admin"
    assert account["suspended_at"] is None
    assert account["password_hash"] == "unchanged"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--email", "new@example.com"], "username is needed to create an account"),
        (
            ["--email", "new@example.com", "--username", "new", "--password", "short"],
            "password is too short (minimum is 8 characters)",
        ),
        (
            ["--email", "new@example.com", "--username", "a/b", "--password", "long enough"],
            "username is invalid",
        ),
        (
            ["--email", "new@example.com", "--username", "JAKE", "--password", "long enough"],
            "username has already been taken",
        ),
    ],
)
def test_create_admin_refuses_bad_input(
    migrated_database: str, arguments: list[str], message: str
) -> None:
    _query(
        migrated_database,
        "INSERT INTO user_account (username, email, password_hash) "
        "VALUES ('jake', 'jake@example.com', 'x')",
    )
    result = runner.invoke(app, ["users", "create-admin", *arguments])
    assert result.exit_code == 1
    assert message in result.output
    assert _query(migrated_database, "SELECT 1 FROM user_account WHERE role = 'admin'") == []


def test_a_separate_worker_without_redis_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.invalid/conduit")
    monkeypatch.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["worker"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "REDIS_URL" in result.output


def test_job_commands_on_a_database_without_the_queue_say_what_to_do(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = database_name("conduit_cli_jobs")
    url = asyncio.run(recreate_database(server_url, name))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("MIGRATE_ON_START", "false")
    get_settings.cache_clear()
    try:
        for command in (["jobs", "list"], ["jobs", "dead"], ["jobs", "retry", "--all"]):
            result = runner.invoke(app, command)
            assert result.exit_code == 1, result.output
            assert "conduit db upgrade" in result.output
    finally:
        get_settings.cache_clear()
        asyncio.run(drop_database(server_url, name))
