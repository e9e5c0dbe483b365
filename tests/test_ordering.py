"""``order_by`` on list() and page(): any column order, NULLs last, keyset
pagination that agrees with the full listing, cursors tied to their order;
and filters on the agent task columns. On every engine configuration."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator_db import Database, Task, TaskSource
from orchestrator_db.errors import ValidationError
from orchestrator_db.repositories import listing
from orchestrator_db.values import encode_cursor
from tests.helpers import task

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def python_order(rows: list[Task], spec: list[str]) -> list[str]:
    """Ids of ``rows`` sorted the documented way: NULLs last, then id."""
    ordered = sorted(rows, key=lambda t: t.id)
    for name in reversed(spec):
        attribute = name.lstrip("-")
        descending = name.startswith("-")
        present = [t for t in ordered if getattr(t, attribute) is not None]
        missing = [t for t in ordered if getattr(t, attribute) is None]
        present.sort(key=lambda t: getattr(t, attribute), reverse=descending)
        ordered = present + missing
    return [t.id for t in ordered]


async def store(db: Database, *items: Task) -> list[Task]:
    async with db.unit_of_work() as uow:
        await uow.tasks.add_many(list(items))
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        return await uow.tasks.list()


async def all_pages(db: Database, limit: int, **kwargs: Any) -> list[str]:
    seen: list[str] = []
    after = None
    async with db.unit_of_work(read_only=True) as uow:
        while True:
            page = await uow.tasks.page(limit=limit, after=after, **kwargs)
            seen += [t.id for t in page.items]
            if page.next_cursor is None:
                return seen
            after = page.next_cursor


async def test_newest_first(db: Database) -> None:
    stored = await store(
        db, *[task(title=str(n), created_at=BASE + timedelta(minutes=n)) for n in range(5)]
    )
    async with db.unit_of_work(read_only=True) as uow:
        newest = await uow.tasks.list(order_by="-created_at")
    assert [t.title for t in newest] == ["4", "3", "2", "1", "0"]
    assert await all_pages(db, 2, order_by="-created_at") == [t.id for t in reversed(stored)]


async def test_several_keys_nulls_last_and_pages_agree(db: Database) -> None:
    rows = await store(
        db,
        *[
            task(
                title=["b", "a", "é", "A"][n % 4],
                priority=n % 3,
                deadline=None if n % 2 else BASE + timedelta(hours=n % 5),
            )
            for n in range(13)
        ],
    )
    for spec in (["deadline"], ["-deadline"], ["-priority", "title"], ["title", "-deadline"]):
        expected = python_order(rows, spec)
        async with db.unit_of_work(read_only=True) as uow:
            listed = [t.id for t in await uow.tasks.list(order_by=spec)]
        assert listed == expected, spec
        for limit in (1, 3, 13):
            assert await all_pages(db, limit, order_by=spec) == expected, (spec, limit)


async def test_a_cursor_serves_only_its_own_order(db: Database) -> None:
    await store(db, *[task(priority=n) for n in range(4)])
    async with db.unit_of_work(read_only=True) as uow:
        by_priority = await uow.tasks.page(limit=1, order_by="-priority")
        default = await uow.tasks.page(limit=1)
        assert by_priority.next_cursor is not None and default.next_cursor is not None
        with pytest.raises(ValidationError, match="order_by='-priority,id'"):
            await uow.tasks.page(after=by_priority.next_cursor, order_by="priority")
        with pytest.raises(ValidationError, match="made for order_by"):
            await uow.tasks.page(after=by_priority.next_cursor)
        with pytest.raises(ValidationError, match="default order"):
            await uow.tasks.page(after=default.next_cursor, order_by="-priority")
        following = await uow.tasks.page(after=by_priority.next_cursor, order_by="-priority")
        assert following.items[0].priority == 2


@pytest.mark.parametrize(
    "order_by",
    ["nope", "--priority", ["priority", "-priority"], [], [3], {"priority": 1}, "named:x", 7],
)
async def test_bad_orders_are_refused(db: Database, order_by: Any) -> None:
    async with db.unit_of_work(read_only=True) as uow:
        with pytest.raises(ValidationError) as raised:
            await uow.tasks.list(order_by=order_by)
        assert raised.value.field == "order_by"
        with pytest.raises(ValidationError):
            await uow.tasks.page(order_by=order_by)


async def test_filters_on_the_agent_task_columns(db: Database) -> None:
    await store(
        db,
        task(title="a", agent_type="coder", feature_branch="f1", source=TaskSource.AGENT_PLANNER),
        task(title="b", agent_type="coder", feature_branch="f2"),
        task(title="c", agent_type="planner", created_by="alice"),
    )
    async with db.unit_of_work(read_only=True) as uow:
        assert [t.title for t in await uow.tasks.list(agent_type="coder")] == ["a", "b"]
        assert [t.title for t in await uow.tasks.list(feature_branch="f2")] == ["b"]
        assert [t.title for t in await uow.tasks.list(source="agent_planner")] == ["a"]
        assert [t.title for t in await uow.tasks.list(created_by=["alice", "bob"])] == ["c"]
        assert await uow.tasks.count(feature_branch=None) == 1
        with pytest.raises(ValidationError):
            await uow.tasks.list(source="robot")


ORDERABLE = ["title", "priority", "deadline", "agent_type", "created_at", "dependency_depth"]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tasks=st.lists(
        st.fixed_dictionaries(
            {
                "title": st.text(min_size=1, max_size=3).filter(lambda s: "\x00" not in s),
                "priority": st.integers(0, 10),
                "deadline": st.none() | st.integers(0, 3).map(lambda h: BASE + timedelta(hours=h)),
                "agent_type": st.none() | st.sampled_from(["a", "B", "ä"]),
            }
        ),
        max_size=12,
    ),
    spec=st.lists(
        st.sampled_from(ORDERABLE).flatmap(lambda n: st.sampled_from([n, f"-{n}"])),
        min_size=1,
        max_size=3,
        unique_by=lambda n: n.lstrip("-"),
    ),
    limit=st.integers(1, 5),
)
def test_any_order_pages_like_it_lists(
    database_url: str,
    database_options: dict[str, Any],
    tasks: list[dict[str, Any]],
    spec: list[str],
    limit: int,
) -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        db = Database(database_url, **database_options)
        try:
            async with db.unit_of_work() as uow:
                for stored in await uow.tasks.list():
                    await uow.tasks.delete(stored.id)
                await uow.commit()
            rows = await store(db, *[task(**values) for values in tasks])
            async with db.unit_of_work(read_only=True) as uow:
                listed = [t.id for t in await uow.tasks.list(order_by=spec)]
            return python_order(rows, spec), listed, await all_pages(db, limit, order_by=spec)
        finally:
            await db.close()

    expected, listed, paged = asyncio.run(scenario())
    assert listed == expected
    assert paged == expected


async def test_tampered_float_cursors_and_json_orders_are_refused(db: Database) -> None:
    await store(db, *[task(priority=n) for n in range(3)])
    async with db.unit_of_work(read_only=True) as uow:
        with pytest.raises(ValidationError, match="JSON"):
            await uow.tasks.list(order_by="config")
        page = await uow.tasks.page(limit=1, order_by="calculated_priority")
        assert page.next_cursor is not None
        for bad in (float("nan"), float("inf"), "1.5", True, 10**400):
            cursor = encode_cursor([bad, page.items[0].id], order="calculated_priority,id")
            with pytest.raises(ValidationError, match="invalid page cursor"):
                await uow.tasks.page(after=cursor, order_by="calculated_priority")
        following = await uow.tasks.page(after=page.next_cursor, order_by="calculated_priority")
        assert len(following.items) == 2


async def test_listings_built_once_per_shape_agree_with_listings_built_per_call(
    db: Database,
) -> None:
    """A listing on attribute values runs the statement built once for its
    shape, its values bound; the same listing written as SQL criteria is
    built per call. Both give the same rows, pages and cursors, whatever
    the values (NULLs included), and a new value makes no new shape."""
    await store(
        db,
        *[
            task(
                title=["b", "a", "é"][n % 3],
                priority=n % 4,
                deadline=None if n % 2 else BASE + timedelta(hours=n % 5),
                parent_task_id=None,
            )
            for n in range(17)
        ],
    )
    shapes = len(listing._built)
    async with db.unit_of_work(read_only=True) as uow:
        for title in ("a", "b", "é", "none such"):
            for limit, offset in ((None, 0), (4, 0), (4, 3)):
                shaped = await uow.tasks.list(
                    title=title,
                    parent_task_id=None,
                    limit=limit,
                    offset=offset,
                    order_by=["deadline", "-priority"],
                )
                built = await uow.tasks.list(
                    Task.title == title,
                    Task.parent_task_id.is_(None),
                    limit=limit,
                    offset=offset,
                    order_by=["deadline", "-priority"],
                )
                assert [t.id for t in shaped] == [t.id for t in built], (title, limit, offset)
    for spec in (None, ["-deadline", "title"]):
        walked = await all_pages(db, 3, order_by=spec, priority=1)
        async with db.unit_of_work(read_only=True) as uow:
            listed = await uow.tasks.list(Task.priority == 1, order_by=spec)
        assert walked == [t.id for t in listed] and walked
    grown = len(listing._built) - shapes
    async with db.unit_of_work(read_only=True) as uow:
        for title in ("x", "y", "z"):
            await uow.tasks.list(title=title, parent_task_id=None, limit=2, order_by="deadline")
    assert len(listing._built) - shapes <= grown + 1  # the values made no new shapes


async def test_listing_shapes_are_bounded_and_sql_values_still_work(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_SHAPES the least recently used shape goes; a filter whose
    value is a SQL expression is built per call, as before."""
    await store(db, *[task(title=str(n % 3), priority=n % 4) for n in range(9)])
    monkeypatch.setattr(listing._built, "size", 2)
    listing._built.clear()
    async with db.unit_of_work(read_only=True) as uow:
        for spec in ("title", "-title", "priority", "title"):
            listed = await uow.tasks.list(order_by=spec, title="1")
            assert [t.title for t in listed] == ["1"] * 3, spec
            assert len(listing._built) <= 2
        # A column equal to itself (a float column: its check lets SQL through).
        same = await uow.tasks.list(calculated_priority=Task.calculated_priority)
        assert len(same) == 9
