"""Read replicas, against a real streaming replica (``tests/clusters.py``):
a primary and its standby made for these tests, stopped, paused and
restarted by them. The tests share one worker (``xdist_group``) and one pair
of clusters."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from sqlalchemy import text

from orchestrator_db import Database, UnitOfWork
from orchestrator_db._execution import replicas
from orchestrator_db.errors import ReadOnlyError, ValidationError
from tests import clusters
from tests.helpers import add_tasks, silent_server, task
from tests.support import selected_engines

pytestmark = [
    pytest.mark.xdist_group("clusters"),
    pytest.mark.skipif(
        "postgresql" not in selected_engines(), reason="PostgreSQL is not among the engines"
    ),
]

#: Long enough for anything these tests wait for to have happened.
PATIENCE = 60
PORT = text("SELECT inet_server_port()")


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[clusters.Cluster, clusters.Cluster]]:
    yield from clusters.for_tests(f"odb{os.getpid()}")


@pytest.fixture
async def primary_db(pair: tuple[clusters.Cluster, clusters.Cluster]) -> AsyncIterator[str]:
    """A migrated, empty database on the primary (and so on the replica)."""
    primary, _replica = pair
    name = f"odb_{os.getpid()}_{time.monotonic_ns()}"
    await primary.sql(f'CREATE DATABASE "{name}"')
    db = Database(primary.url(name))
    await db.migrate()
    await db.close()
    try:
        yield name
    finally:
        await primary.sql(f'DROP DATABASE "{name}" WITH (FORCE)')


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not await check():
        assert time.monotonic() < deadline, "it never happened"
        await asyncio.sleep(0.1)


async def until_served_by(db: Database, port: int) -> None:
    async def served() -> bool:
        return await served_by(db) == port

    await eventually(served)


async def served_by(db: Database) -> int:
    """The port of the server a read-only unit read from (retried past a
    replica that went away under it)."""

    async def port(uow: UnitOfWork) -> int:
        return int((await uow.session.execute(PORT)).scalar_one())

    return await db.run(port, read_only=True, retries=3)


async def test_reads_go_to_the_replica_and_fresh_ones_to_the_primary(
    pair: tuple[clusters.Cluster, clusters.Cluster], primary_db: str
) -> None:
    primary, replica = pair
    db = Database(primary.url(primary_db), replicas=[replica.url(primary_db)])
    try:
        (added,) = await add_tasks(db, task(title="written"))
        async with db.unit_of_work(read_only=True, fresh=True) as uow:  # read your writes
            assert (await uow.tasks.get(added.id)).title == "written"
            assert (await uow.session.execute(PORT)).scalar_one() == primary.port

        async def replicated() -> bool:
            async with db.unit_of_work(read_only=True) as uow:
                assert (await uow.session.execute(PORT)).scalar_one() == replica.port
                return await uow.tasks.count() == 1

        await eventually(replicated)
        with pytest.raises(ReadOnlyError):
            async with db.unit_of_work(read_only=True) as uow:
                await uow.tasks.add(task())
        async with db.unit_of_work() as uow:  # writes go to the primary
            assert (await uow.session.execute(PORT)).scalar_one() == primary.port
    finally:
        await db.close()


async def test_a_stopped_replica_is_passed_over_until_it_is_back(
    pair: tuple[clusters.Cluster, clusters.Cluster], primary_db: str
) -> None:
    primary, replica = pair
    db = Database(primary.url(primary_db), replicas=[replica.url(primary_db)])
    try:
        assert await served_by(db) == replica.port
        await asyncio.to_thread(replica.stop)
        try:
            for _ in range(5):  # the first may find the pooled connection dead
                assert await served_by(db) == primary.port
        finally:
            await asyncio.to_thread(replica.start)

        await until_served_by(db, replica.port)
    finally:
        await db.close()


async def test_a_lagging_replica_is_passed_over(
    pair: tuple[clusters.Cluster, clusters.Cluster], primary_db: str
) -> None:
    primary, replica = pair
    db = Database(primary.url(primary_db), replicas=[replica.url(primary_db)], max_replica_lag=0.5)
    try:
        assert await served_by(db) == replica.port
        await replica.sql("SELECT pg_wal_replay_pause()")
        try:
            await add_tasks(db, task())
            await asyncio.sleep(1.5)  # past max_replica_lag and the last check

            async def lagging() -> bool:
                await add_tasks(db, task())  # what the replica does not replay
                return await served_by(db) == primary.port

            await eventually(lagging)
        finally:
            await replica.sql("SELECT pg_wal_replay_resume()")

        await until_served_by(db, replica.port)
        async with db.unit_of_work(read_only=True) as uow:
            assert await uow.tasks.count() == 2
    finally:
        await db.close()


async def test_units_at_once_ask_a_silent_replica_once(
    pair: tuple[clusters.Cluster, clusters.Cluster], primary_db: str
) -> None:
    primary, _replica = pair
    async with silent_server() as port:
        silent = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{primary_db}"
        db = Database(primary.url(primary_db), replicas=[silent])
        try:
            ports = await asyncio.gather(*(served_by(db) for _ in range(20)))
            (status,) = db.replica_status()
        finally:
            await db.close()
    assert set(ports) == {primary.port}
    assert status.failures == 1  # one outage, however many units saw it
    assert 0 < status.passed_over_for <= replicas.FIRST_BACK_OFF
    assert status.lag is None


async def test_units_at_once_all_find_the_live_replica(
    pair: tuple[clusters.Cluster, clusters.Cluster], primary_db: str
) -> None:
    primary, replica = pair
    refused = f"postgresql+asyncpg://postgres@127.0.0.1:1/{primary_db}"
    db = Database(primary.url(primary_db), replicas=[refused, replica.url(primary_db)])
    try:
        ports = await asyncio.gather(*(served_by(db) for _ in range(20)))
        statuses = db.replica_status()
    finally:
        await db.close()
    assert set(ports) == {replica.port}
    assert [s.failures for s in statuses] == [1, 0]


async def test_a_busy_replica_is_not_a_dead_one(
    pair: tuple[clusters.Cluster, clusters.Cluster], primary_db: str
) -> None:
    """Lag checks use connections of their own: a replica whose pool is in
    use keeps its reads."""
    primary, replica = pair
    db = Database(
        primary.url(primary_db), replicas=[replica.url(primary_db)], pool_size=1, max_overflow=0
    )
    try:
        assert await served_by(db) == replica.port

        async def hold() -> None:
            async with db.unit_of_work(read_only=True) as uow:
                await uow.session.execute(text("SELECT pg_sleep(2)"))

        holding = asyncio.ensure_future(hold())
        await asyncio.sleep(replicas.CHECK_EVERY + 0.2)  # the next unit asks again
        assert await served_by(db) == replica.port
        await holding
        assert db.replica_status()[0].failures == 0
    finally:
        await db.close()


def test_replicas_are_checked() -> None:
    with pytest.raises(ValidationError):
        Database("sqlite+aiosqlite://", replicas=["postgresql://x@localhost/y"])
    with pytest.raises(ValidationError):
        Database("postgresql://x@localhost/y", replicas="postgresql://x@localhost/z")
    with pytest.raises(ValidationError):
        Database("postgresql://x@localhost/y", replicas=["mysql://x@localhost/z"])
    with pytest.raises(ValidationError):
        Database("postgresql://x@localhost/y", replicas=["sqlite:///z.db"])
    with pytest.raises(ValidationError):
        Database("postgresql://x@localhost/y", max_replica_lag=None)  # type: ignore[arg-type]
    db = Database("postgresql://u:secret@localhost/y", replicas=["postgresql://u:hush@r/y"])
    assert "hush" not in repr(db.settings) and "secret" not in repr(db)
