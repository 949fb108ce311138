import os
import stat
from pathlib import Path

import pytest

from conduit.platform.settings import Environment, Settings, SettingsError, to_async_database_url

STRONG_SECRET = "x" * 48


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


class TestProductionSafety:
    def test_refuses_missing_secret(self) -> None:
        with pytest.raises(SettingsError, match="JWT_SECRET"):
            make(environment=Environment.production, database_url="postgresql://db/conduit")

    @pytest.mark.parametrize("secret", ["short", "changethis", "secret"])
    def test_refuses_weak_secret(self, secret: str) -> None:
        with pytest.raises(SettingsError, match="JWT_SECRET"):
            make(
                environment=Environment.production,
                database_url="postgresql://db/conduit",
                jwt_secret=secret,
            )

    def test_refuses_embedded_database(self) -> None:
        with pytest.raises(SettingsError, match="DATABASE_URL"):
            make(environment=Environment.production, jwt_secret=STRONG_SECRET)

    def test_accepts_real_configuration(self) -> None:
        settings = make(
            environment=Environment.production,
            database_url="postgresql://db/conduit",
            jwt_secret=STRONG_SECRET,
        )
        assert not settings.should_migrate_on_start


class TestJwtSecret:
    def test_generated_once_and_kept_private(self, tmp_path: Path) -> None:
        settings = make(data_dir=tmp_path / "data")
        first = settings.jwt_signing_key()
        assert len(first) >= 32
        assert make(data_dir=tmp_path / "data").jwt_signing_key() == first
        mode = (tmp_path / "data" / "jwt-secret").stat().st_mode
        assert stat.S_IMODE(mode) == 0o600

    def test_configured_secret_wins(self, tmp_path: Path) -> None:
        settings = make(data_dir=tmp_path, jwt_secret=STRONG_SECRET)
        assert settings.jwt_signing_key() == STRONG_SECRET
        assert not (tmp_path / "jwt-secret").exists()


class TestEnvironment:
    def test_reads_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db:5432/conduit")
        monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
        monkeypatch.setenv("DB_POOL_SIZE", "7")
        settings = make()
        assert settings.database_url == "postgres://u:p@db:5432/conduit"
        assert settings.cors_origins == ["https://a.example", "https://b.example"]
        assert settings.db_pool_size == 7

    def test_blank_database_url_means_embedded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DATABASE_URL", "")
        assert make().uses_embedded_database

    def test_pool_size_follows_cpu_count(self) -> None:
        assert make().db_pool_size == 2 * (os.cpu_count() or 1) + 1


class TestDatabaseUrl:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("postgres://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
            ("postgresql://u:p@h/d", "postgresql+asyncpg://u:p@h/d"),
            ("postgresql://u@h/d?sslmode=require", "postgresql+asyncpg://u@h/d?ssl=require"),
            ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d"),
        ],
    )
    def test_normalises_provider_urls(self, given: str, expected: str) -> None:
        assert to_async_database_url(given) == expected

    def test_rejects_other_databases(self) -> None:
        with pytest.raises(SettingsError, match="postgresql"):
            to_async_database_url("mysql://u@h/d")


@pytest.mark.parametrize(
    ("database_url", "worker_in_process", "runs"),
    [
        (None, None, True),
        ("postgresql://db.example/conduit", None, False),
        ("postgresql://db.example/conduit", True, True),
        (None, False, False),
    ],
)
def test_the_embedded_default_runs_jobs_in_the_server_unless_told(
    database_url: str | None, worker_in_process: bool | None, runs: bool
) -> None:
    settings = Settings(
        _env_file=None, database_url=database_url, worker_in_process=worker_in_process
    )
    assert settings.runs_worker_in_process is runs


def test_an_unusable_smtp_url_stops_the_start_without_showing_its_password() -> None:
    with pytest.raises(SettingsError, match="smtp://") as refused:
        make(smtp_url="http://user:hunter2@mail.example.com")
    assert "hunter2" not in str(refused.value)
    assert make(smtp_url="smtps://user:hunter2@mail.example.com").smtp_url is not None
