from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from exporter.auth.tokens import issue_token
from exporter.config import Settings, load_settings
from exporter.storage.embedded import EmbeddedPostgres, url_for
from exporter.storage.migrate import migrate
from tests.aio import run

TEST_SECRET = "test-secret-" + "x" * 40


def token_for(username: str = "alice", lifetime: timedelta = timedelta(minutes=10)) -> str:
    """A token signed with TEST_SECRET, as a login would issue it."""
    return issue_token(TEST_SECRET.encode(), username, lifetime).token


class FakeClock:
    """A monotonic clock the test advances by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ProcTree:
    """A directory laid out like /proc (or /sys) whose files a test rewrites between reads."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses PostgreSQL, so CI can rerun them on another server, and
    every test that drives Chromium (the database is only their backdrop: the rerun on
    another server leaves them out)."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "database_url" in names:
            item.add_marker(pytest.mark.db)
        if "browser" in names:
            item.add_marker(pytest.mark.browser)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def proc(tmp_path: Path) -> ProcTree:
    return ProcTree(tmp_path / "proc")


@pytest.fixture
def sys_tree(tmp_path: Path) -> ProcTree:
    tree = ProcTree(tmp_path / "sys")
    tree.root.mkdir()
    return tree


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server: PERFPULSE_TEST_DATABASE_URL's, or perfpulse's own embedded one."""
    url = os.environ.get("PERFPULSE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    embedded = EmbeddedPostgres(tmp_path_factory.mktemp("embedded"))
    database_url = run(embedded.start())
    yield url_for(database_url, "postgres")
    run(embedded.stop())


@pytest.fixture(scope="session")
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A database of this test run's own, migrated; dropped at the end."""
    name = f"perfpulse_test_{os.getpid()}_{secrets.token_hex(3)}"

    async def create() -> None:
        conn = await asyncpg.connect(postgres_admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(url_for(postgres_admin_url, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    run(create())
    yield url_for(postgres_admin_url, name)
    run(drop())


@pytest.fixture
def clean_database_url(database_url: str) -> str:
    """The test run's database with every table emptied and no partition left (a test's
    old partitions would be another test's retention to drop)."""

    async def truncate() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            children = await conn.fetch(
                "SELECT inhrelid::regclass::text AS name FROM pg_inherits "
                "JOIN pg_class parent ON parent.oid = inhparent WHERE parent.relkind = 'p'"
            )
            for child in children:
                await conn.execute(f"DROP TABLE IF EXISTS {child['name']}")
            tables = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'schema_migrations'"
            )
            if tables:
                names = ", ".join(f'"{t["tablename"]}"' for t in tables)
                await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()

    run(truncate())
    return database_url


@pytest.fixture
def make_settings(tmp_path: Path, clean_database_url: str) -> Callable[..., Settings]:
    """Settings on the test database, a private data dir and a fixed JWT secret."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "database_url": clean_database_url,
            "jwt_secret": TEST_SECRET,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def server_env(tmp_path: Path, clean_database_url: str) -> dict[str, str]:
    """Environment for a `perfpulse serve` subprocess on the test database."""
    return {
        "PERFPULSE_DATA_DIR": str(tmp_path / "data"),
        "PERFPULSE_DATABASE_URL": clean_database_url,
        "PERFPULSE_JWT_SECRET": TEST_SECRET,
    }
