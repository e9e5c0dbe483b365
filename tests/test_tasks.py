"""TaskRepository: domain filters and the status lifecycle."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from itertools import product

import pytest

from orchestrator_db import Database, TaskStatus
from orchestrator_db.errors import InvalidTransitionError, NotFoundError, ValidationError
from orchestrator_db.models import TASK_TRANSITIONS
from orchestrator_db.types import new_id, utc_now
from tests.helpers import add_tasks, task

ALLOWED = {(source, target) for target, sources in TASK_TRANSITIONS.items() for source in sources}


def test_the_lifecycle_is_the_documented_one() -> None:
    P, R, C, F, X = (
        TaskStatus.PENDING,
        TaskStatus.RUNNING,
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
    )
    assert ALLOWED == {(P, R), (R, C), (R, F), (P, X), (R, X)}


async def test_created_range_filters(db: Database) -> None:
    now = utc_now()
    await add_tasks(
        db,
        task(title="old", created_at=now - timedelta(days=2)),
        task(title="new", created_at=now),
    )
    async with db.unit_of_work() as uow:
        after = await uow.tasks.list(created_after=now - timedelta(days=1))
        before = await uow.tasks.list(created_before=now - timedelta(days=1))
        both = await uow.tasks.count(
            created_after=now - timedelta(days=3), created_before=now + timedelta(seconds=1)
        )
    assert [t.title for t in after] == ["new"]
    assert [t.title for t in before] == ["old"]
    assert both == 2


async def test_status_filter_accepts_enum_and_string(db: Database) -> None:
    await add_tasks(db, task(), task(status=TaskStatus.RUNNING))
    async with db.unit_of_work() as uow:
        assert await uow.tasks.count(status=TaskStatus.PENDING) == 1
        assert await uow.tasks.count(status="running") == 1


async def _task_in(db: Database, status: TaskStatus) -> str:
    (added,) = await add_tasks(db, task(status=status))
    return added.id


@pytest.mark.parametrize(("source", "target"), list(product(TaskStatus, TaskStatus)))
async def test_every_transition(db: Database, source: TaskStatus, target: TaskStatus) -> None:
    task_id = await _task_in(db, source)
    async with db.unit_of_work() as uow:
        if (source, target) in ALLOWED:
            moved = await uow.tasks.update_status(task_id, target)
            assert moved.status is target
            await uow.commit()
        else:
            with pytest.raises(InvalidTransitionError) as raised:
                await uow.tasks.update_status(task_id, target)
            assert (raised.value.current, raised.value.target) == (source.value, target.value)
    async with db.unit_of_work() as uow:
        expected = target if (source, target) in ALLOWED else source
        assert (await uow.tasks.get(task_id)).status is expected


async def test_transitions_stamp_times_and_errors(db: Database) -> None:
    task_id = await _task_in(db, TaskStatus.PENDING)
    async with db.unit_of_work() as uow:
        running = await uow.tasks.update_status(task_id, "running")
        assert running.started_at is not None and running.completed_at is None
        failed = await uow.tasks.update_status(task_id, TaskStatus.FAILED, error="boom")
        assert failed.completed_at is not None and failed.completed_at >= failed.started_at  # type: ignore[operator]
        assert failed.error == "boom"
        await uow.commit()
    async with db.unit_of_work() as uow:
        loaded = await uow.tasks.get(task_id)
    assert (loaded.status, loaded.error) == (TaskStatus.FAILED, "boom")


async def test_bad_status_input(db: Database) -> None:
    task_id = await _task_in(db, TaskStatus.PENDING)
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError, match="status must be one of"):
            await uow.tasks.update_status(task_id, "paused")
        with pytest.raises(ValidationError, match="error can be recorded"):
            await uow.tasks.update_status(task_id, TaskStatus.RUNNING, error="x")
        with pytest.raises(NotFoundError):
            await uow.tasks.update_status(new_id(), TaskStatus.RUNNING)


async def test_concurrent_moves_of_one_task_cannot_both_succeed(db: Database) -> None:
    task_id = await _task_in(db, TaskStatus.PENDING)

    async def start() -> str:
        try:
            async with db.unit_of_work() as uow:
                await uow.tasks.update_status(task_id, TaskStatus.RUNNING)
                await asyncio.sleep(0.05)  # hold the row while the other tries
                await uow.commit()
            return "moved"
        except InvalidTransitionError:
            return "refused"

    outcomes = sorted(await asyncio.gather(start(), start(), start()))
    assert outcomes == ["moved", "refused", "refused"]
