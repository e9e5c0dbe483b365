"""Behind a real PgBouncer in transaction pooling mode (``tests/pgbouncer.py``).

The whole suite also runs through it as the ``pgbouncer`` engine; these are
the tests of what only a pooler shows: statements of many clients sharing
few server connections, and settings that cannot be startup parameters.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from orchestrator_db import Database
from orchestrator_db._execution.engines import create_engine
from orchestrator_db._execution.errors import Boundary
from orchestrator_db._execution.postgresql import POSTGRESQL
from orchestrator_db.errors import DatabaseConfigurationError, StatementTimeoutError
from orchestrator_db.settings import DatabaseSettings
from tests import pg
from tests.helpers import add_tasks, task

SETTINGS = (
    "SELECT current_setting('application_name'), current_setting('statement_timeout'), "
    "current_setting('transaction_read_only')"
)


async def _read_only_units(db: Database, units: int) -> list[BaseException | None]:
    async def one() -> BaseException | None:
        try:
            async with db.unit_of_work(read_only=True) as uow:
                await uow.tasks.count()
                await uow.session.execute(text("SELECT 1"))
        except Exception as error:
            return error
        return None

    return await asyncio.gather(*(one() for _ in range(units)))


async def test_many_clients_share_few_server_connections(pgbouncer_database_url: str) -> None:
    """The issue's case: ten coroutines of read-only units (500 in all),
    now with nothing prepared by name."""
    db = Database(pgbouncer_database_url, pgbouncer=True, pool_size=10)
    try:
        await add_tasks(db, task())
        outcomes = []
        for _ in range(50):
            outcomes += await _read_only_units(db, 10)
        assert outcomes == [None] * 500
        async with db.unit_of_work(read_only=True) as uow:
            named = await uow.session.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
        assert named == 0
    finally:
        await db.close()


async def test_without_the_setting_the_pooler_is_named(pgbouncer_database_url: str) -> None:
    """Units (which check the schema on the read-only pool first) need a
    startup parameter PgBouncer refuses; queue workers' statements clash by
    name on shared server connections. The error says what to do, and
    nothing raw escapes."""
    db = Database(pgbouncer_database_url)
    try:
        outcomes = await _read_only_units(db, 10)

        async def write() -> BaseException | None:
            try:
                async with db.unit_of_work() as uow:
                    await uow.tasks.count()
            except Exception as error:
                return error
            return None

        outcomes += await asyncio.gather(*(write() for _ in range(10)))
        assert all(isinstance(error, DatabaseConfigurationError) for error in outcomes), outcomes
        assert "pgbouncer=True" in str(outcomes[0])

        async def worker() -> BaseException | None:
            try:
                async with db.queue_worker("w") as queue:
                    await queue.claim()
            except Exception as error:
                return error
            return None

        assert isinstance(await worker(), DatabaseConfigurationError)
    finally:
        await db.close()


async def test_statements_named_by_another_client_are_a_configuration_error(
    pgbouncer_database_url: str,
) -> None:
    """Below the units' schema check: asyncpg's prepared statements, named
    per client connection, meet each other's on the shared server connections."""
    engine = create_engine(pgbouncer_database_url, DatabaseSettings(pool_size=10))

    async def statements(n: int) -> list[BaseException]:
        found: list[BaseException] = []
        for round_ in range(20):
            try:
                async with Boundary(POSTGRESQL), engine.begin() as connection:
                    await connection.execute(
                        text("SELECT CAST(:n AS integer) + CAST(:r AS integer)"),
                        {"n": n, "r": round_},
                    )
            except Exception as error:
                found.append(error)
        return found

    try:
        failures = [e for found in await asyncio.gather(*map(statements, range(10))) for e in found]
    finally:
        await engine.dispose()
    assert failures, "no statements clashed"
    assert all(isinstance(e, DatabaseConfigurationError) for e in failures), failures
    assert "pgbouncer=True" in str(failures[0])


async def test_settings_are_each_transactions_own(pgbouncer_database_url: str) -> None:
    timed = Database(
        pgbouncer_database_url, pgbouncer=True, statement_timeout=0.2, application_name="timed"
    )
    plain = Database(pgbouncer_database_url, pgbouncer=True, application_name="plain")
    try:
        async with timed.unit_of_work() as uow:
            assert tuple((await uow.session.execute(text(SETTINGS))).one()) == (
                "timed",
                "200ms",
                "off",
            )
        async with timed.unit_of_work(read_only=True) as uow:
            assert tuple((await uow.session.execute(text(SETTINGS))).one()) == (
                "timed",
                "200ms",
                "on",
            )
        with pytest.raises(StatementTimeoutError):
            async with timed.unit_of_work() as uow:
                await uow.session.execute(text("SELECT pg_sleep(5)"))
        # The server connections the timed units used are the plain ones' too.
        for _ in range(10):
            async with plain.unit_of_work() as uow:
                row = tuple((await uow.session.execute(text(SETTINGS))).one())
                assert row == ("plain", "0", "off")
    finally:
        await timed.close()
        await plain.close()


async def test_the_url_can_say_pgbouncer(pgbouncer_database_url: str) -> None:
    db = Database(pgbouncer_database_url + "?pgbouncer=true")
    try:
        assert db.settings.pgbouncer is True
        assert "pgbouncer" not in db.url.query
        outcomes = await _read_only_units(db, 10)
        assert outcomes == [None] * 10
    finally:
        await db.close()


async def test_a_replica_url_can_say_pgbouncer(pgbouncer_database_url: str) -> None:
    """A replica behind PgBouncer while the primary is not (here the
    primary itself, reached both ways: a server that is no standby lags 0)."""
    direct = pg.url_for(str(make_url(pgbouncer_database_url).database))
    db = Database(direct, replicas=[pgbouncer_database_url + "?pgbouncer=true"])
    try:
        async with db.unit_of_work(read_only=True) as uow:
            assert await uow.tasks.count() == 0
            read_only = await uow.session.scalar(text("SHOW transaction_read_only"))
        assert read_only == "on"  # a BEGIN READ ONLY transaction: the pooled kind
        (status,) = db.replica_status()
        assert status.failures == 0 and status.lag == 0.0
    finally:
        await db.close()
