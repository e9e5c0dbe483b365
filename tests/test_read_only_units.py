"""Read-only SQLite units that check their connection out themselves stay
read-only when SQLAlchemy reconnects it, and give it back when cancelled
while it is made read-only."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy import text

from orchestrator_db import Database
from orchestrator_db.errors import ReadOnlyError
from tests.helpers import add_tasks, task

SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 5000000) "
    "SELECT count(*) FROM c"
)


async def test_invalidated_read_only_connection_stays_read_only(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("SQLite")
    (added,) = await add_tasks(db, task(title="orig"))
    async with db.unit_of_work(read_only=True) as uow:
        await uow.tasks.get(added.id)  # the unit checks its connection out
        await (await uow.session.connection()).invalidate()
        await uow.rollback()
        with pytest.raises(ReadOnlyError):
            await uow.tasks.update(added.id, title="written")
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.tasks.get(added.id)).title == "orig"


async def test_timed_out_read_only_unit_stays_read_only(db: Database) -> None:
    if db.dialect != "sqlite" or db.settings.sqlite_execution != "thread":
        pytest.skip("SQLite, thread mode")
    (added,) = await add_tasks(db, task(title="orig"))
    async with db.unit_of_work(read_only=True) as uow:
        await uow.tasks.get(added.id)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(uow.session.execute(text(SLOW)), 0.05)
        await uow.rollback()
        with pytest.raises(ReadOnlyError):
            await uow.tasks.update(added.id, title="written")


async def test_cancelled_checkout_gives_the_connection_back(db: Database) -> None:
    (added,) = await add_tasks(db, task(title="orig"))
    for k in range(1, 6):
        async with db.unit_of_work() as w:  # the pooled connection was a writer's
            await w.tasks.count()
            await w.commit()
        async with db.unit_of_work(read_only=True) as uow:
            job = asyncio.ensure_future(uow.tasks.get(added.id))
            for _ in range(k):
                await asyncio.sleep(0)
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        assert db.pool_status().checked_out == 0, k
