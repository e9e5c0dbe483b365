"""ToolExecutionRepository: start, finish, listing and statistics."""

from __future__ import annotations

import math

import pytest

from orchestrator_db import Database, ToolExecution, ToolExecutionStatus
from orchestrator_db.errors import (
    ForeignKeyViolationError,
    InvalidTransitionError,
    ValidationError,
)
from orchestrator_db.types import new_id
from tests.helpers import add_tasks, task


async def test_start_and_finish_record_timing(db: Database) -> None:
    (parent,) = await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        call = await uow.tool_executions.start(parent.id, "shell", {"cmd": "ls"})
        assert call.status is ToolExecutionStatus.RUNNING
        assert call.completed_at is None and call.duration_ms is None
        done = await uow.tool_executions.finish(
            call.id, ToolExecutionStatus.COMPLETED, output={"stdout": "a\nb"}
        )
        await uow.commit()
    assert done.completed_at is not None and done.completed_at >= done.created_at
    expected = round((done.completed_at - done.created_at).total_seconds() * 1000)
    assert done.duration_ms == expected
    async with db.unit_of_work() as uow:
        loaded = await uow.tool_executions.get(call.id)
    assert loaded.output == {"stdout": "a\nb"} and loaded.arguments == {"cmd": "ls"}


async def test_finish_only_once_and_only_to_an_end_state(db: Database) -> None:
    (parent,) = await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        call = await uow.tool_executions.start(parent.id, "http", {})
        with pytest.raises(ValidationError, match="finish\\(\\) takes"):
            await uow.tool_executions.finish(call.id, "running")
        with pytest.raises(ValidationError):
            await uow.tool_executions.finish(call.id, "exploded")
        await uow.tool_executions.finish(call.id, "timeout", error="30s")
        with pytest.raises(InvalidTransitionError):
            await uow.tool_executions.finish(call.id, "completed")


async def test_start_for_a_missing_task_names_the_foreign_key(db: Database) -> None:
    with pytest.raises(ForeignKeyViolationError) as raised:
        async with db.unit_of_work() as uow:
            await uow.tool_executions.start(new_id(), "shell", {})
    assert raised.value.constraint == "fk_tool_executions_task_id_tasks"


async def test_list_by_task_tool_and_status(db: Database) -> None:
    first, second = await add_tasks(db, task(), task())
    async with db.unit_of_work() as uow:
        a = await uow.tool_executions.start(first.id, "shell", {})
        await uow.tool_executions.start(first.id, "http", {})
        await uow.tool_executions.start(second.id, "shell", {})
        await uow.tool_executions.finish(a.id, "failed", error="exit 1")
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.tool_executions.count(task_id=first.id) == 2
        assert await uow.tool_executions.count(tool_name="shell") == 2
        failed = await uow.tool_executions.list(status=ToolExecutionStatus.FAILED)
        assert [c.id for c in failed] == [a.id]
        both = await uow.tool_executions.list(task_id=first.id, tool_name="shell")
        assert [c.id for c in both] == [a.id]


def nearest_rank_p95(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


async def test_stats_by_tool(db: Database) -> None:
    (parent,) = await add_tasks(db, task())
    shell = [5, 1, 9, 3, 7, 120, 4, 8, 2, 6, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]
    http = [100, 200]
    rows = [
        ToolExecution(
            task_id=parent.id,
            tool_name="shell",
            arguments={},
            status=ToolExecutionStatus.FAILED if d in (9, 120) else ToolExecutionStatus.COMPLETED,
            duration_ms=d,
        )
        for d in shell
    ]
    rows += [
        ToolExecution(
            task_id=parent.id,
            tool_name="http",
            arguments={},
            status=ToolExecutionStatus.TIMEOUT,
            duration_ms=d,
        )
        for d in http
    ]
    rows.append(ToolExecution(task_id=parent.id, tool_name="http", arguments={}))  # unfinished
    async with db.unit_of_work() as uow:
        await uow.tool_executions.add_many(rows)
        await uow.commit()
    async with db.unit_of_work() as uow:
        stats = {s.tool_name: s for s in await uow.tool_executions.stats_by_tool()}
    assert set(stats) == {"http", "shell"}
    assert stats["shell"].count == len(shell)
    assert stats["shell"].failures == 2
    assert stats["shell"].mean_duration_ms == pytest.approx(sum(shell) / len(shell))
    assert stats["shell"].p95_duration_ms == nearest_rank_p95(shell) == 47
    assert stats["http"].count == 3
    assert stats["http"].failures == 2
    assert stats["http"].mean_duration_ms == pytest.approx(150)
    assert stats["http"].p95_duration_ms == 200


async def test_stats_of_an_empty_log(db: Database) -> None:
    async with db.unit_of_work() as uow:
        assert await uow.tool_executions.stats_by_tool() == []


async def test_deleting_a_task_deletes_its_log(db: Database) -> None:
    (parent,) = await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        await uow.tool_executions.start(parent.id, "shell", {})
        await uow.commit()
    async with db.unit_of_work() as uow:
        await uow.tasks.delete(parent.id)
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.tool_executions.count() == 0
