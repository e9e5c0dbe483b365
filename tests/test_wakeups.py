"""Waiting for work: workers and outbox consumers woken as work is committed
(``_execution/signals.py``). Polling is pushed far out (30 s) where a test
shows a wake-up: then only a wake-up can end the wait in time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import text

from orchestrator_db import Database, Project, Task, TaskStatus
from orchestrator_db._execution import signals
from orchestrator_db.errors import ValidationError
from tests.helpers import task

LONG = timedelta(seconds=20)
T = TypeVar("T")


@pytest.fixture
def no_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FIRST_POLL", "MAX_POLL", "SAFETY_POLL"):
        monkeypatch.setattr(signals, name, 30.0)


async def submitted(db: Database, item: Task, *, depends_on: list[str] | None = None) -> Task:
    async with db.unit_of_work() as uow:
        done = await uow.tasks.submit(item, depends_on=depends_on or [])
        await uow.commit()
    return done


async def started(coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """``coroutine`` running, past its first (empty) try."""
    running = asyncio.create_task(coroutine)
    await asyncio.sleep(0.3)
    assert not running.done()
    return running


async def test_a_submit_wakes_a_waiting_worker(db: Database, no_polling: None) -> None:
    async with db.queue_worker("w") as worker:
        waiting = await started(worker.claim(wait=LONG))
        item = await submitted(db, task())
        claimed = await asyncio.wait_for(waiting, 10)
    assert claimed is not None and claimed.id == item.id
    assert claimed.status is TaskStatus.RUNNING


async def test_a_release_wakes_a_waiting_worker(db: Database, no_polling: None) -> None:
    first = await submitted(db, task(title="first"))
    second = await submitted(db, task(title="second"), depends_on=[first.id])
    async with db.queue_worker("w") as worker, db.queue_worker("other") as other:
        assert (await worker.claim()) is not None  # first; second is blocked
        waiting = await started(other.claim_batch(5, wait=LONG))
        await worker.complete(first.id)  # releases second
        claimed = await asyncio.wait_for(waiting, 10)
    assert [t.id for t in claimed] == [second.id]


async def test_an_event_wakes_a_waiting_consumer(db: Database, no_polling: None) -> None:
    async with db.unit_of_work() as uow:
        await uow.projects.add(Project(repository_name="acme/app", path="/srv"))
        await uow.commit()

    async def consume() -> list[Any]:
        async with db.unit_of_work() as uow:
            events = await uow.events.claim_unprocessed(consumer="c", wait=LONG)
            await uow.commit()
        return events

    waiting = await started(consume())
    # The waiting consumer holds no transaction: this writer is not held up.
    async with db.unit_of_work() as uow:
        await uow.events.emit("worker_stopped", project_id="acme/app")
        await uow.commit()
    events = await asyncio.wait_for(waiting, 10)
    assert [e.event_type.value for e in events] == ["worker_stopped"]


async def test_work_rolled_back_wakes_nobody_and_the_wait_ends(
    db: Database, no_polling: None
) -> None:
    async with db.queue_worker("w") as worker:
        waiting = await started(worker.claim(wait=timedelta(seconds=1.5)))
        async with db.unit_of_work() as uow:
            await uow.tasks.submit(task())  # never committed
        assert await asyncio.wait_for(waiting, 10) is None


async def claimed_from_another(db: Database, other: Database) -> None:
    """A worker of ``db`` waits; ``other`` submits; the worker gets the task."""
    async with db.queue_worker("w") as worker:
        waiting = await started(worker.claim(wait=LONG))
        item = await submitted(other, task())
        claimed = await asyncio.wait_for(waiting, 15)
    assert claimed is not None and claimed.id == item.id


async def test_without_a_wake_up_waiters_poll(db: Database) -> None:
    """Another ``Database`` (as another process would) submits: on SQLite
    nobody tells the waiter, which finds the task by polling; on PostgreSQL
    NOTIFY does (or, behind PgBouncer, polling)."""
    other = Database(db.url, pgbouncer=db.settings.pgbouncer)
    try:
        await claimed_from_another(db, other)
    finally:
        await other.close()


async def test_notify_reaches_other_databases(postgres_database_url: str, no_polling: None) -> None:
    db, other = Database(postgres_database_url), Database(postgres_database_url)
    try:
        await claimed_from_another(db, other)
    finally:
        await db.close()
        await other.close()


async def test_a_lost_listener_is_opened_again(
    postgres_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, other = Database(postgres_database_url), Database(postgres_database_url)
    try:
        async with db.queue_worker("w") as worker:
            assert await worker.claim(wait=timedelta(seconds=0.3)) is None  # listening now
        async with other.engine.begin() as connection:
            killed = await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
            assert killed.scalars().all() == [True]
        await asyncio.sleep(0.3)  # the driver sees its connection closed
        for name in ("FIRST_POLL", "MAX_POLL", "SAFETY_POLL"):
            monkeypatch.setattr(signals, name, 30.0)
        await claimed_from_another(db, other)  # only a new listener can tell it
    finally:
        await db.close()
        await other.close()


async def test_behind_pgbouncer_waiters_poll_and_say_so_once(
    pgbouncer_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(pgbouncer_database_url, pgbouncer=True)
    try:
        with caplog.at_level(logging.INFO, logger="orchestrator_db"):
            async with db.queue_worker("w") as worker:
                for _ in range(2):
                    assert await worker.claim(wait=timedelta(seconds=0.2)) is None
        said = [r.getMessage() for r in caplog.records if "PgBouncer" in r.getMessage()]
        assert len(said) == 1 and "polling" in said[0]
    finally:
        await db.close()


async def test_a_waiting_consumer_must_come_first(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.tasks.count()
        with pytest.raises(ValidationError, match="must come first"):
            await uow.events.claim_unprocessed(wait=timedelta(seconds=1))
    item = await submitted(db, task())
    async with db.unit_of_work() as uow:
        loaded = await uow.tasks.get(item.id)
        await uow.commit()  # no transaction now, but an object a rollback would expire
        with pytest.raises(ValidationError, match="must come first"):
            await uow.events.claim_unprocessed(wait=timedelta(seconds=1))
        assert loaded.title == item.title


async def test_a_waiting_consumer_holds_its_unit(db: Database) -> None:
    """Another coroutine of the unit waits for the wait to end; its work is
    not rolled back with the consumer's empty tries."""
    async with db.unit_of_work() as uow:

        async def submit_meanwhile() -> None:
            await asyncio.sleep(0.2)
            await uow.tasks.submit(task())

        events, _ = await asyncio.gather(
            uow.events.claim_unprocessed(wait=timedelta(seconds=0.6)), submit_meanwhile()
        )
        await uow.commit()
    assert events == []
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.tasks.count() == 1


async def test_however_a_transaction_ends_its_announcements_follow(
    db: Database, no_polling: None
) -> None:
    """Rolled back: nobody is woken, and the next transaction of the unit
    announces afresh; committed through the session: waiters are woken."""
    async with db.queue_worker("w") as worker:
        waiting = await started(worker.claim(wait=LONG))
        async with db.unit_of_work() as uow:
            await uow.tasks.submit(task(title="rolled back"))
            await uow.rollback()
            await asyncio.sleep(0.3)
            assert not waiting.done()
            kept = await uow.tasks.submit(task(title="kept"))
            await uow.session.commit()
        claimed = await asyncio.wait_for(waiting, 10)
    assert claimed is not None and claimed.id == kept.id


@pytest.mark.parametrize("wait", [timedelta(seconds=-1), 5, "1s", float("nan")])
async def test_waits_are_checked(db: Database, wait: Any) -> None:
    async with db.queue_worker("w") as worker:
        with pytest.raises(ValidationError):
            await worker.claim(wait=wait)
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError):
            await uow.events.claim_unprocessed(wait=wait)
