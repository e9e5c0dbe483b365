"""Restarts and failovers of a real primary (``tests/clusters.py``): the same
``Database`` recovers, and units caught in the gap fail typed, with nothing
half-written. Run once (not per engine), on one worker."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from orchestrator_db import Database, ToolExecution, UnitOfWork
from orchestrator_db.errors import DatabaseUnavailableError, DataLayerError
from tests import clusters
from tests.helpers import task
from tests.support import selected_engines

pytestmark = [
    pytest.mark.xdist_group("clusters"),
    pytest.mark.skipif(
        "postgresql" not in selected_engines(), reason="PostgreSQL is not among the engines"
    ),
]

NAME = "odb"


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[clusters.Cluster, clusters.Cluster]]:
    yield from clusters.for_tests(f"odbf{os.getpid()}")


@pytest.fixture(scope="module")
def migrated(pair: tuple[clusters.Cluster, clusters.Cluster]) -> None:
    primary, _replica = pair

    async def migrate() -> None:
        await primary.sql(f'CREATE DATABASE "{NAME}"')
        db = Database(primary.url(NAME))
        await db.migrate()
        await db.close()

    asyncio.run(migrate())


Outcomes = dict[str, BaseException | None]


async def write_pairs(db: Database, stop: asyncio.Event, outcomes: Outcomes) -> None:
    """Units that each write a task and a tool execution of it, until
    ``stop``; the outcome of each into ``outcomes``, by task id."""
    while not stop.is_set():
        item = task()
        try:
            async with db.unit_of_work() as uow:
                await uow.tasks.add(item)
                await uow.tool_executions.add(
                    ToolExecution(task_id=item.id, tool_name="sh", arguments={})
                )
                await uow.commit()
            outcomes[item.id] = None
        except DataLayerError as error:
            outcomes[item.id] = error
            await asyncio.sleep(0.05)


async def written_again(outcomes: Outcomes) -> None:
    """Wait until a unit commits after those recorded so far."""
    seen = len(outcomes)
    deadline = time.monotonic() + 60
    while not any(error is None for error in list(outcomes.values())[seen:]):
        assert time.monotonic() < deadline, "no unit committed again"
        await asyncio.sleep(0.1)


async def assert_whole_or_absent(db: Database, outcomes: Outcomes) -> None:
    async def stored(uow: UnitOfWork) -> tuple[set[str], set[str]]:
        tasks = set((await uow.session.execute(text("SELECT id::text FROM tasks"))).scalars())
        executions = set(
            (await uow.session.execute(text("SELECT task_id::text FROM tool_executions")))
            .scalars()
            .all()
        )
        return tasks, executions

    tasks, executions = await db.run(stored, read_only=True, retries=10)
    assert tasks == executions  # no unit half-written
    committed = {task_id for task_id, error in outcomes.items() if error is None}
    assert committed <= tasks  # nothing reported committed was lost
    for error in outcomes.values():
        assert error is None or isinstance(error, DataLayerError), error


async def test_a_primary_restart_is_survived(
    pair: tuple[clusters.Cluster, clusters.Cluster], migrated: None
) -> None:
    primary, _replica = pair
    db = Database(primary.url(NAME))
    stop, outcomes = asyncio.Event(), Outcomes()
    writing = asyncio.create_task(write_pairs(db, stop, outcomes))
    try:
        await written_again(outcomes)
        await asyncio.to_thread(primary.ctl, "restart")
        await written_again(outcomes)  # the same Database writes again
        stop.set()
        await writing
        failed = [e for e in outcomes.values() if e is not None]
        assert any(isinstance(e, DatabaseUnavailableError) for e in failed), failed
        await assert_whole_or_absent(db, outcomes)
    finally:
        stop.set()
        await writing
        await db.close()


async def test_a_failover_to_the_promoted_replica(
    pair: tuple[clusters.Cluster, clusters.Cluster], migrated: None
) -> None:
    """A multi-host URL: asyncpg tries each host and keeps the one that
    takes writes (``target_session_attrs=read-write``)."""
    primary, replica = pair
    url = (
        f"postgresql+asyncpg://postgres@/{NAME}?host=127.0.0.1:{primary.port}"
        f"&host=127.0.0.1:{replica.port}&target_session_attrs=read-write"
    )
    db = Database(url)
    stop, outcomes = asyncio.Event(), Outcomes()
    writing = asyncio.create_task(write_pairs(db, stop, outcomes))
    try:
        await written_again(outcomes)
        # Asynchronous replication: what the primary commits while its
        # standby is not streaming (since the restart above, say) is lost
        # with the primary. A clean stop sends the standby everything first.
        deadline = time.monotonic() + 60
        while await replica.sql("SELECT status FROM pg_stat_wal_receiver") != "streaming":
            assert time.monotonic() < deadline, "the standby never streamed"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(primary.stop)

        async def add(uow: UnitOfWork) -> str:
            added = await uow.tasks.add(task(title="rode the gap"))
            await uow.tool_executions.add(
                ToolExecution(task_id=added.id, tool_name="sh", arguments={})
            )
            return added.id

        riding = asyncio.create_task(db.run(add, retries=8))
        await asyncio.sleep(0.5)  # the gap: no server takes writes
        await asyncio.to_thread(replica.ctl, "promote")
        await written_again(outcomes)  # to the promoted replica
        rode = await riding  # db.run retried across the gap
        stop.set()
        await writing
        assert any(e is not None for e in outcomes.values()), "no unit was caught by the gap"

        async def port(uow: UnitOfWork) -> int:
            return int((await uow.session.execute(text("SELECT inet_server_port()"))).scalar_one())

        assert await db.run(port, retries=5) == replica.port

        async def title(uow: UnitOfWork) -> str:
            return (await uow.tasks.get(rode)).title

        assert await db.run(title, read_only=True, retries=5) == "rode the gap"
        await assert_whole_or_absent(db, outcomes)
    finally:
        stop.set()
        await writing
        await db.close()
