"""The generic Repository operations, exercised through the task repository."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, inspect, select
from sqlalchemy.orm import with_loader_criteria

from orchestrator_db import Database, Task, TaskStatus
from orchestrator_db.errors import NotFoundError, ValidationError
from orchestrator_db.models import ToolExecution
from orchestrator_db.types import new_id, utc_now
from tests.helpers import add_tasks, task

MS = timedelta(milliseconds=1)


async def test_add_flushes_and_fills_defaults(db: Database) -> None:
    async with db.unit_of_work() as uow:
        added = await uow.tasks.add(task())
        assert added.id and added.status is TaskStatus.PENDING
        assert added.created_at == added.updated_at
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert (await uow.tasks.get(added.id)).title == "a task"


async def test_nothing_is_saved_without_commit(db: Database) -> None:
    async with db.unit_of_work() as uow:
        added = await uow.tasks.add(task())
        assert await uow.tasks.exists(id=added.id)
    async with db.unit_of_work() as uow:
        assert not await uow.tasks.exists(id=added.id)


async def test_an_error_rolls_back_the_whole_unit(db: Database) -> None:
    first = task(title="first")
    with pytest.raises(RuntimeError):
        async with db.unit_of_work() as uow:
            await uow.tasks.add(first)
            raise RuntimeError("service failure")
    async with db.unit_of_work() as uow:
        assert await uow.tasks.count() == 0


async def test_add_rejects_other_models(db: Database) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError, match="stores Task"):
            await uow.tasks.add(ToolExecution(task_id=new_id(), tool_name="x", arguments={}))  # type: ignore[arg-type]


async def test_add_many_inserts_in_bulk_and_returns_detached_objects(db: Database) -> None:
    items = [task(title=f"t{i}") for i in range(250)]
    async with db.unit_of_work() as uow:
        added = await uow.tasks.add_many(items)
        assert added is not items and added == items
        assert len({t.id for t in added}) == 250
        assert all(t.status is TaskStatus.PENDING for t in added)
        state = inspect(added[0])
        assert state.detached and state.key is not None and not state.modified
        assert await uow.tasks.count() == 250
        await uow.commit()
    async with db.unit_of_work() as uow:
        loaded = await uow.tasks.get(added[17].id)
        assert loaded.title == "t17"
        assert loaded.created_at == added[17].created_at
        assert loaded.updated_at == loaded.created_at


@pytest.mark.parametrize("size", [10, 150])  # executemany, and COPY on PostgreSQL
async def test_add_many_writes_columns_set_in_some_rows_and_nulls_elsewhere(
    db: Database, size: int
) -> None:
    # description is set in every third row, workspace_path in none: the
    # batch leaves workspace_path out of its INSERT, and must still store NULL.
    items = [task(title=f"t{i}", description=f"d{i}" if i % 3 == 0 else None) for i in range(size)]
    async with db.unit_of_work() as uow:
        await uow.tasks.add_many(items)
        # A second batch binding other columns uses another INSERT.
        others = await uow.tasks.add_many([task(workspace_path="/w", priority=9)])
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        stored = {t.title: t for t in await uow.tasks.list(limit=size + 1)}
    for i in range(size):
        row = stored[f"t{i}"]
        assert row.description == (f"d{i}" if i % 3 == 0 else None)
        assert row.workspace_path is None and row.priority == 5
    assert (stored["a task"].workspace_path, stored["a task"].priority) == ("/w", 9)
    assert others[0].description is None


async def test_add_many_of_nothing(db: Database) -> None:
    async with db.unit_of_work() as uow:
        assert await uow.tasks.add_many([]) == []


async def test_add_many_writes_nothing_when_a_row_is_invalid(db: Database) -> None:
    items = [task(title=f"t{i}") for i in range(10)] + [task(config="not a document")]
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError):
            await uow.tasks.add_many(items)
        assert await uow.tasks.count() == 0


async def test_add_many_sees_parents_added_in_the_same_unit(db: Database) -> None:
    async with db.unit_of_work() as uow:
        parent = await uow.tasks.add(task())
        calls = [
            ToolExecution(task_id=parent.id, tool_name="shell", arguments={"i": i})
            for i in range(5)
        ]
        await uow.tool_executions.add_many(calls)
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.tool_executions.count(task_id=parent.id) == 5


async def test_get_missing_raises_not_found_with_entity_and_key(db: Database) -> None:
    missing = new_id()
    async with db.unit_of_work() as uow:
        with pytest.raises(NotFoundError) as raised:
            await uow.tasks.get(missing)
        assert await uow.tasks.get_or_none(missing) is None
    assert raised.value.entity == "Task"
    assert raised.value.key == missing


async def test_get_returns_a_tracked_object_equal_to_the_orm_load(db: Database) -> None:
    started = utc_now() - timedelta(minutes=3)
    (added,) = await add_tasks(
        db, task(config={"k": [1, "two"]}, metadata_=None, started_at=started, priority=7)
    )
    async with db.unit_of_work() as uow:
        got = await uow.tasks.get(added.id.upper())
        loaded = (
            await uow.session.execute(
                select(Task).where(Task.id == added.id).execution_options(populate_existing=True)
            )
        ).scalar_one()
        # One object per row in a unit of work, whichever way it was read.
        assert loaded is got
        assert await uow.tasks.get(added.id) is got
        assert inspect(got).persistent and not inspect(got).modified
        columns = [attr.key for attr in inspect(Task).column_attrs]
        assert {c: getattr(got, c) for c in columns} == {c: getattr(added, c) for c in columns}
        got.title = "renamed"
        assert list(uow.session.dirty) == [got]
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert (await uow.tasks.get(added.id)).title == "renamed"


async def test_get_leaves_a_loaded_object_and_its_pending_changes_alone(db: Database) -> None:
    (added,) = await add_tasks(db, task(title="stored"))
    async with db.unit_of_work() as uow:
        (listed,) = await uow.tasks.list(id=added.id)
        listed.title = "pending"
        assert await uow.tasks.get(added.id) is listed
        assert listed.title == "pending"


async def test_list_filters(db: Database) -> None:
    now = utc_now()  # distinct created_at: rows added in one millisecond tie
    await add_tasks(
        db,
        task(title="a", task_type="code", workspace_path="/w/1", created_at=now),
        task(title="b", task_type="review", workspace_path=None, created_at=now + MS),
        task(title="c", task_type="research", workspace_path="/w/2", created_at=now + 2 * MS),
    )
    async with db.unit_of_work() as uow:
        assert [t.title for t in await uow.tasks.list()] == ["a", "b", "c"]
        assert [t.title for t in await uow.tasks.list(task_type="review")] == ["b"]
        assert [t.title for t in await uow.tasks.list(workspace_path=None)] == ["b"]
        in_list = await uow.tasks.list(task_type=["code", "research"])
        assert [t.title for t in in_list] == ["a", "c"]
        criteria = await uow.tasks.list(Task.title > "a", task_type="research")
        assert [t.title for t in criteria] == ["c"]
        assert [t.title for t in await uow.tasks.list(limit=2)] == ["a", "b"]
        assert [t.title for t in await uow.tasks.list(limit=2, offset=2)] == ["c"]
        assert await uow.tasks.count(task_type=["code", "review"]) == 2
        assert await uow.tasks.exists(title="c")
        assert not await uow.tasks.exists(title="z")


async def test_count_and_exists_see_what_the_unit_holds_unflushed(db: Database) -> None:
    """count() and exists() with attribute filters run a statement built
    once per shape of filters: it sees, as the ORM's queries do, rows the
    unit added or changed and has not flushed, and NULL filters are IS NULL."""
    await add_tasks(db, task(title="stored", workspace_path=None))
    async with db.unit_of_work() as uow:
        uow.session.add(task(title="pending", workspace_path="/w"))
        assert await uow.tasks.count() == 2
        assert await uow.tasks.count(workspace_path=None) == 1
        assert await uow.tasks.count(workspace_path="/w") == 1
        assert await uow.tasks.exists(title="pending", workspace_path="/w")
        (stored,) = await uow.tasks.list(title="stored")
        stored.title = "renamed"
        assert not await uow.tasks.exists(title="stored")
        assert await uow.tasks.count(title="renamed", workspace_path=None) == 1
        with pytest.raises(ValidationError):
            await uow.tasks.count(title="nul\x00")
        assert await uow.tasks.count(title=None) == 0


async def test_count_and_exists_keep_to_the_sessions_query_hooks(db: Database) -> None:
    """A do_orm_execute hook (a soft-delete rule, say) sees count() and
    exists() as it sees list(): they go through the session when one is set."""
    await add_tasks(db, task(title="secret"), task(title="public"))

    def hide(state: Any) -> None:
        if state.is_select:
            rule = with_loader_criteria(Task, Task.title != "secret")
            state.statement = state.statement.options(rule)

    async with db.unit_of_work(read_only=True) as uow:
        event.listen(uow.session.sync_session, "do_orm_execute", hide)
        assert [t.title for t in await uow.tasks.list()] == ["public"]
        assert await uow.tasks.count() == 1
        assert not await uow.tasks.exists(title="secret")


async def test_unknown_filters_and_bad_paging_are_validation_errors(db: Database) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError, match="no attribute or filter 'stauts'") as raised:
            await uow.tasks.list(stauts="pending")
        assert "status" in str(raised.value)
        with pytest.raises(ValidationError):
            await uow.tasks.count(nope=1)
        with pytest.raises(ValidationError):
            await uow.tasks.list(offset=-1)
        with pytest.raises(ValidationError):
            await uow.tasks.list(limit=-5)
        with pytest.raises(ValidationError):
            await uow.tasks.page(limit=0)


async def test_keyset_pages_walk_every_row_once_in_order(db: Database) -> None:
    base = utc_now()
    # Shared created_at values force the tie-break on id.
    items = [task(title=f"t{i:03}", created_at=base + timedelta(seconds=i // 3)) for i in range(47)]
    async with db.unit_of_work() as uow:
        await uow.tasks.add_many(items)
        await uow.commit()
    seen: list[str] = []
    cursor = None
    pages = 0
    async with db.unit_of_work(read_only=True) as uow:
        expected = [t.id for t in await uow.tasks.list()]
        while pages < 10:  # a cursor bug must fail the test, not hang it
            page = await uow.tasks.page(limit=10, after=cursor)
            pages += 1
            seen.extend(t.id for t in page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert seen == expected
    assert len(seen) == 47 and pages == 5


async def test_pages_respect_filters_and_exact_fits(db: Database) -> None:
    await add_tasks(db, *[task(task_type="code" if i % 2 else "review") for i in range(8)])
    async with db.unit_of_work() as uow:
        page = await uow.tasks.page(limit=4, task_type="code")
        assert len(page.items) == 4 and page.next_cursor is None and not page.has_more
        first = await uow.tasks.page(limit=3, task_type="review")
        assert first.has_more
        rest = await uow.tasks.page(limit=3, after=first.next_cursor, task_type="review")
        assert len(rest.items) == 1


@pytest.mark.parametrize("cursor", ["garbage", "W10", "WyJ4Il0", "eyJhIjoxfQ"])
async def test_bad_cursors_are_validation_errors(db: Database, cursor: str) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError, match="invalid page cursor"):
            await uow.tasks.page(after=cursor)


async def test_update_sets_fields_and_returns_the_refreshed_row(db: Database) -> None:
    (added,) = await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        updated = await uow.tasks.update(added.id, title="renamed", description="d")
        await uow.commit()
    assert updated.title == "renamed"
    assert updated.updated_at >= added.updated_at
    async with db.unit_of_work() as uow:
        loaded = await uow.tasks.get(added.id)
        assert (loaded.title, loaded.description) == ("renamed", "d")
        assert loaded.updated_at == updated.updated_at


async def test_update_is_one_statement_whose_row_the_unit_holds(db: Database) -> None:
    """One UPDATE ... RETURNING: the object the unit held is the one
    returned, refreshed, and its updated_at (set by the statement, so that
    RETURNING shows it on SQLite too) is the one the row keeps."""
    (added,) = await add_tasks(db, task())
    sent: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement.split(None, 1)[0].upper())

    async with db.unit_of_work() as uow:
        held = await uow.tasks.get(added.id)
        event.listen(db.engine.sync_engine, "before_cursor_execute", count)
        try:
            updated = await uow.tasks.update(added.id, title="once")
        finally:
            event.remove(db.engine.sync_engine, "before_cursor_execute", count)
        assert updated is held and held.title == "once"
        assert [s for s in sent if s not in ("BEGIN", "SET")] == ["UPDATE"], sent
        assert held.updated_at > added.updated_at
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.tasks.get(added.id)).updated_at == updated.updated_at


async def test_update_keeps_what_the_unit_changed_directly(db: Database) -> None:
    (added,) = await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        held = await uow.tasks.get(added.id)
        held.description = "set on the object"
        await uow.tasks.update(added.id, title="set by update")
        assert (held.title, held.description) == ("set by update", "set on the object")
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        stored = await uow.tasks.get(added.id)
        assert (stored.title, stored.description) == ("set by update", "set on the object")


async def test_update_with_nothing_to_set_changes_nothing(db: Database) -> None:
    (added,) = await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        assert (await uow.tasks.update(added.id)).updated_at == added.updated_at
        with pytest.raises(NotFoundError):
            await uow.tasks.update(new_id())


async def test_update_refuses_keys_protected_and_unknown_fields(db: Database) -> None:
    (added,) = await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError, match="primary key"):
            await uow.tasks.update(added.id, id=new_id())
        with pytest.raises(ValidationError, match=r"update_status|domain methods"):
            await uow.tasks.update(added.id, status=TaskStatus.COMPLETED)
        with pytest.raises(ValidationError, match="no attribute"):
            await uow.tasks.update(added.id, colour="red")
        with pytest.raises(NotFoundError):
            await uow.tasks.update(new_id(), title="x")


async def test_a_held_task_deleted_on_its_own_is_gone_from_the_unit(db: Database) -> None:
    """A task without edges goes in one statement; the object the unit
    held goes with it, and its tool executions by the cascade."""
    (added,) = await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        await uow.tool_executions.start(added.id, "shell", {"cmd": "ls"})
        held = await uow.tasks.get(added.id)
        assert await uow.tasks.delete(added.id) is True
        assert await uow.tasks.get_or_none(added.id) is None
        assert held not in uow.session
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.tool_executions.count() == 0


async def test_a_pending_task_is_deleted_as_the_orm_would(db: Database) -> None:
    """Deleting an added, unflushed task flushes it first, as the ORM's
    delete would, then deletes it; the unit no longer holds it."""
    async with db.unit_of_work() as uow:
        pending = task(title="not flushed")
        uow.session.add(pending)
        assert await uow.tasks.delete(pending.id) is True
        assert pending not in uow.session
        assert await uow.tasks.get_or_none(pending.id) is None
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.tasks.count() == 0


async def test_a_held_task_deleted_then_rolled_back_is_held_again(db: Database) -> None:
    """As with the ORM's delete: the object is marked deleted, and a
    rollback gives it back to the unit."""
    (added,) = await add_tasks(db, task(title="kept"))
    async with db.unit_of_work() as uow:
        held = await uow.tasks.get(added.id)
        held.title = "changed, not flushed"
        assert await uow.tasks.delete(added.id) is True
        assert inspect(held).deleted
        await uow.rollback()
        assert inspect(held).persistent and held in uow.session
        assert await uow.tasks.get(added.id) is held
        assert held.title == "kept"


async def test_delete_reports_whether_a_row_went(db: Database) -> None:
    (added,) = await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        assert await uow.tasks.delete(added.id) is True
        assert await uow.tasks.delete(added.id) is False
        assert await uow.tasks.get_or_none(added.id) is None
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.tasks.count() == 0


async def test_update_keeps_a_direct_change_with_autoflush_off(db: Database) -> None:
    (added,) = await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        held = await uow.tasks.get(added.id)
        held.description = "direct"
        with uow.session.no_autoflush:
            updated = await uow.tasks.update(added.id, title="via update")
        assert (updated.description, updated.title) == ("direct", "via update")
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.tasks.get(added.id)).description == "direct"


async def test_update_returns_what_the_row_keeps(db: Database) -> None:
    """An updated_at given as it was (SQLite's trigger then moves it after
    RETURNING), and a REAL the statement computed, come back as stored."""
    async with db.unit_of_work() as uow:
        added = await uow.tasks.submit(task())  # a whole-number score: 20.0
        await uow.commit()
    async with db.unit_of_work() as uow:
        updated = await uow.tasks.update(added.id, title="x", updated_at=added.updated_at)
        assert isinstance(updated.calculated_priority, float)
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        stored = await uow.tasks.get(added.id)
    assert updated.updated_at == stored.updated_at
    assert isinstance(stored.calculated_priority, float)
