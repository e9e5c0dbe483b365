"""Secrets never reach a log (at any level), a repr or an exception; SQLite's
files are private; the user's engine options cannot undo the package's."""

from __future__ import annotations

import logging
import os
import stat
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from orchestrator_db import Configuration, Database, ValueType
from orchestrator_db.errors import (
    DatabaseUnavailableError,
    DataLayerError,
    DuplicateKeyError,
    ReadOnlyError,
    ValidationError,
)

SECRET = "s3cr3t-never-to-be-seen"


class Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def every_log() -> Iterator[Collector]:
    """Every record of every logger at DEBUG, SQLAlchemy's and aiosqlite's included."""
    collector = Collector()
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in ("sqlalchemy.engine", "aiosqlite")]
    saved = [(root.level, root.handlers[:])] + [(lg.level, None) for lg in loggers]
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    try:
        yield collector
    finally:
        root.removeHandler(collector)
        root.setLevel(saved[0][0])
        for logger, (level, _) in zip(loggers, saved[1:], strict=True):
            logger.setLevel(level)


def told(error: BaseException) -> str:
    """Everything an exception says: message, repr and the whole chain."""
    return "".join(traceback.format_exception(error)) + repr(error)


@pytest.mark.parametrize("echo", [False, True], ids=["debug-logging", "echo"])
async def test_secret_values_reach_no_log_and_no_error(
    database_url: str, database_options: dict[str, Any], every_log: Collector, echo: bool
) -> None:
    db = Database(database_url, echo=echo, **database_options)
    try:
        async with db.unit_of_work() as uow:
            await uow.configurations.set("api.key", SECRET, is_secret=True)
            await uow.configurations.add(
                Configuration(
                    key="api.other", value=SECRET, value_type=ValueType.STRING, is_secret=True
                )
            )
            await uow.commit()
        async with db.unit_of_work() as uow:
            await uow.configurations.set("api.key", SECRET + "-rotated")  # secrecy kept
            await uow.commit()
        async with db.unit_of_work(read_only=True) as uow:
            assert await uow.configurations.get_value("api.other") == SECRET
            assert (await uow.configurations.get("api.key")).value == SECRET + "-rotated"
            assert len(await uow.configurations.list()) == 2
            assert len((await uow.configurations.page(limit=1)).items) == 1
            assert await uow.configurations.get_value_or("api.other", "x") == SECRET
            shown = repr(await uow.configurations.get("api.other"))
        with pytest.raises(DuplicateKeyError) as duplicate:
            async with db.unit_of_work() as uow:
                await uow.configurations.add(
                    Configuration(
                        key="api.other", value=SECRET, value_type=ValueType.STRING, is_secret=True
                    )
                )
    finally:
        await db.close()
    assert every_log.messages, "the loggers were on"
    assert any("configurations" in message for message in every_log.messages)
    for message in every_log.messages:
        assert SECRET not in message
    assert SECRET not in told(duplicate.value)
    assert SECRET not in shown


async def test_a_secret_string_read_back_keeps_its_repr_masked(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.configurations.set("token", SECRET, is_secret=True)
        await uow.configurations.set("colour", "blue", is_secret=False)
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        secret = await uow.configurations.get_value("token")
        public = await uow.configurations.get_value("colour")
    assert secret == SECRET and SECRET not in repr(secret)
    assert public == "blue" and type(public) is str


def test_url_passwords_are_never_repeated() -> None:
    for url in (
        "postgresql://user:hunter2@host:notaport/db",
        "not a url with hunter2 in it",
    ):
        with pytest.raises(ValidationError) as refused:
            Database(url)
        assert "hunter2" not in told(refused.value)
    db = Database(
        "postgresql+asyncpg://user:hunter2@localhost/db",
        extra_engine_options={"connect_args": {"password": "hunter2"}},
    )
    assert "hunter2" not in repr(db) and "hunter2" not in repr(db.settings)


async def test_a_connection_error_does_not_repeat_the_password() -> None:
    db = Database("postgresql+asyncpg://postgres:hunter2@127.0.0.1:1/test")
    try:
        with pytest.raises(DatabaseUnavailableError) as failed:
            async with db.unit_of_work():
                pass
        assert "hunter2" not in told(failed.value)
        report = await db.health_check()
        assert not report.ok and "hunter2" not in str(report)
    finally:
        await db.close()


@pytest.mark.parametrize("umask", [0o022, 0o000])
async def test_sqlite_files_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'private.db'}")
        await db.migrate()
        async with db.unit_of_work() as uow:
            await uow.configurations.set("k", "v")
            await uow.commit()
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        await db.close()
    finally:
        os.umask(previous)
    assert set(modes) >= {"private.db", "private.db-wal", "private.db-shm"}
    assert set(modes.values()) == {0o600}


async def test_user_engine_options_cannot_undo_read_only_units_or_timeouts(
    postgres_database_url: str,
) -> None:
    db = Database(
        postgres_database_url,
        statement_timeout=7,
        application_name="odb-merged",
        extra_engine_options={
            "connect_args": {
                "server_settings": {
                    "search_path": "public",
                    "default_transaction_read_only": "off",
                    "application_name": "overridden",
                },
                "command_timeout": 60,
            },
            "isolation_level": "SERIALIZABLE",
        },
    )
    try:
        async with db.unit_of_work(read_only=True) as uow:
            shown = {
                name: (await uow.session.execute(text(f"SHOW {name}"))).scalar_one()
                for name in ("application_name", "statement_timeout", "search_path")
            }
            with pytest.raises(ReadOnlyError):
                await uow.session.execute(text("CREATE TABLE odb_never (x int)"))
        async with db.unit_of_work() as uow:
            isolation = (await uow.session.execute(text("SHOW transaction_isolation"))).scalar()
    finally:
        await db.close()
    assert shown == {
        "application_name": "odb-merged",
        "statement_timeout": "7s",
        "search_path": "public",  # the user's own setting is kept
    }
    assert isolation == "serializable"  # write units take the user's choice


async def test_every_error_is_typed(db: Database) -> None:
    """A user's repository gets the boundary too: a bug in it is typed."""
    from orchestrator_db import Repository, Task

    class Broken(Repository[Task]):
        model_type = Task

        async def crash(self) -> None:
            raise AttributeError("a bug")

    async with db.unit_of_work() as uow:
        with pytest.raises(DataLayerError, match="a bug"):
            await uow.repository(Broken).crash()
        with pytest.raises(ValidationError):
            uow.repository(dict)  # type: ignore[type-var]
