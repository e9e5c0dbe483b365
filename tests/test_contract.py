"""The contract at its edges, case by case: every failure is a typed error from
``orchestrator_db.errors``, the same on both engines, with nothing written;
each case here is one an attacker found raising something else."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, text

from orchestrator_db import Database, Task, TaskStatus
from orchestrator_db.errors import (
    DatabaseConfigurationError,
    DatabaseUnavailableError,
    DuplicateKeyError,
    TransactionAbortedError,
    ValidationError,
)
from orchestrator_db.values import MAX_IN_VALUES, MAX_JSON_DEPTH, encode_cursor
from tests.helpers import add_tasks, task

PLUS_14 = timezone(timedelta(hours=14))
#: A page cursor that decodes to JSON nested 1,500 deep (no longer than the
#: longest cursor accepted).
NESTED_CURSOR = base64.urlsafe_b64encode(b"[" * 1500 + b"]" * 1500).decode().rstrip("=")
MINUS_14 = timezone(timedelta(hours=-14))


async def task_count(db: Database) -> int:
    async with db.unit_of_work(read_only=True) as uow:
        return await uow.tasks.count()


def nested(depth: int) -> Any:
    doc: Any = "leaf"
    for _ in range(depth):
        doc = [doc]
    return doc


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"title": "a\x00b"}, "title"),
        ({"title": "lone \udc80"}, "title"),
        ({"task_type": "\ud800"}, "task_type"),
        ({"config": {"x": "a\x00b"}}, "config"),
        ({"config": {"x\x00": 1}}, "config"),
        ({"config": {"x": "\udfff"}}, "config"),
        ({"priority": 2**31}, "priority"),
        ({"priority": 2**63}, "priority"),
        ({"priority": Decimal("5")}, "priority"),
        ({"priority": 5.0}, "priority"),
        ({"priority": "5"}, "priority"),
        ({"priority": True}, "priority"),
        ({"config": nested(1_000)}, "config"),
        ({"config": {"x": float("nan")}}, "config"),
        ({"config": {"x": float("inf")}}, "config"),
        ({"config": {"x": 1e300}}, "config"),
        ({"config": {"x": 2**64}}, "config"),
        ({"config": {1: "non-string key"}}, "config"),
        ({"config": {"x": (1, 2)}}, "config"),
        ({"config": "not a document"}, "config"),
        ({"deadline": datetime(1, 1, 1, tzinfo=PLUS_14)}, "deadline"),
        ({"deadline": datetime(9999, 12, 31, 23, tzinfo=MINUS_14)}, "deadline"),
        ({"deadline": datetime(1, 1, 1, tzinfo=UTC)}, "deadline"),
        ({"deadline": datetime(2030, 1, 1)}, "deadline"),
        ({"workspace_path": "x" * 301}, "workspace_path"),
        ({"task_type": "🚀" * 301}, "task_type"),
        ({"status": "paused"}, "status"),
    ],
)
async def test_a_value_neither_engine_keeps_is_refused_before_sql(
    db: Database, values: dict[str, Any], field: str
) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError) as refused:
            await uow.tasks.add(task(**values))
        assert refused.value.field == field
        # Refused before the flush: the unit goes on and commits what it did.
        kept = await uow.tasks.add(task(title="kept"))
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert [t.id for t in await uow.tasks.list()] == [kept.id]


@pytest.mark.parametrize(
    "instant",
    [
        datetime(1, 1, 1, 0, 0, 0, 1000, tzinfo=UTC),
        datetime(1, 1, 1, 14, 0, 1, tzinfo=PLUS_14),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
    ids=["first-millisecond", "year-1-at-plus-14", "last-millisecond"],
)
async def test_the_first_and_last_instants_round_trip(db: Database, instant: datetime) -> None:
    (added,) = await add_tasks(db, task(deadline=instant))
    expected = instant.astimezone(UTC).replace(microsecond=instant.microsecond // 1000 * 1000)
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.tasks.get(added.id)).deadline == expected
        assert [t.id for t in await uow.tasks.list()] == [added.id]  # the table stays readable
        page = await uow.tasks.page(limit=10)
        assert [t.id for t in page.items] == [added.id]


async def test_json_at_the_depth_limit_round_trips(db: Database) -> None:
    deep = nested(MAX_JSON_DEPTH)
    (added,) = await add_tasks(db, task(config=deep))
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.tasks.get(added.id)).config == deep
    with pytest.raises(ValidationError, match="nests deeper"):
        await add_tasks(db, task(config=nested(MAX_JSON_DEPTH + 1)))


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda uow: uow.tasks.ready(-1), "limit"),
        (lambda uow: uow.tasks.ready("5"), "limit"),
        (lambda uow: uow.tasks.claim_batch("w", 5.5), "limit"),
        (lambda uow: uow.tasks.claim_batch("w", 2**40), "limit"),
        (lambda uow: uow.tasks.claim_next("w", lease=timedelta(days=3_000_000)), "lease"),
        (lambda uow: uow.tasks.claim_next("w", lease=timedelta(0)), "lease"),
        (lambda uow: uow.tasks.claim_next("w", lease=30), "lease"),
        (lambda uow: uow.tasks.claim_next("w", task_types="code"), "task_types"),
        (lambda uow: uow.tasks.claim_next(""), "worker_id"),
        (lambda uow: uow.tasks.claim_next("w\x00"), "worker_id"),
        (lambda uow: uow.tasks.list(limit="5"), "limit"),
        (lambda uow: uow.tasks.list(offset=-1), "offset"),
        (lambda uow: uow.tasks.list(config={"a": 1}), "config"),
        (lambda uow: uow.tasks.list(priority="5"), "priority"),
        (lambda uow: uow.tasks.list(created_after=datetime(2020, 1, 1)), "created_after"),
        (lambda uow: uow.tasks.list(Task.title == "a\x00"), "title"),
        (lambda uow: uow.tasks.count(id=[f"{i:032x}" for i in range(MAX_IN_VALUES + 1)]), "id"),
        (lambda uow: uow.tasks.page(limit=0), "limit"),
        (lambda uow: uow.workers.stale(1600000000), "older_than"),
        (lambda uow: uow.workers.stale(timedelta(days=-1)), "older_than"),
        (lambda uow: uow.workers.stale(timedelta(days=10**6)), "older_than"),
        (lambda uow: uow.sessions.expire_stale(datetime(2020, 1, 1)), "older_than"),
        (lambda uow: uow.events.claim_unprocessed(0), "limit"),
        (lambda uow: uow.events.mark_processed(["1"]), "ids"),
        (lambda uow: uow.tool_executions.stats_by_tool(since="yesterday"), "since"),
        (lambda uow: uow.configurations.set("", 1), "key"),
        (lambda uow: uow.configurations.set("k", 10**5000), "value"),
        (lambda uow: uow.tasks.get(5), "key"),
        (lambda uow: uow.projects.get(5), "key"),
    ],
)
async def test_an_argument_neither_engine_takes_is_refused_before_sql(
    db: Database, call: Any, field: str
) -> None:
    await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError) as refused:
            await call(uow)
        assert refused.value.field == field
        assert uow.failure is None  # nothing was sent: the unit goes on
        assert await uow.tasks.count() == 1


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64 at all!",
        encode_cursor(["a"]),  # wrong arity
        encode_cursor(["2020-01-01", "not-a-uuid"]),
        encode_cursor([{"dt": "yesterday"}, "00000000-0000-4000-8000-000000000000"]),
        encode_cursor([{"dt": "2020-01-01T00:00:00"}, "00000000-0000-4000-8000-000000000000"]),
        NESTED_CURSOR,
        "x" * 10_000,
    ],
    ids=["empty", "garbage", "arity", "types", "bad-instant", "naive", "nested", "huge"],
)
async def test_a_tampered_page_cursor_is_refused(db: Database, cursor: str) -> None:
    await add_tasks(db, task())
    async with db.unit_of_work(read_only=True) as uow:
        with pytest.raises(ValidationError, match="invalid page cursor") as refused:
            await uow.tasks.page(after=cursor)
        assert refused.value.field == "after"


def test_the_nested_cursor_is_too_deep_for_json() -> None:
    """The nested cursor above really decodes to JSON too deep to load."""
    decoded = base64.urlsafe_b64decode(NESTED_CURSOR + "=" * (-len(NESTED_CURSOR) % 4))
    with pytest.raises(RecursionError):
        json.loads(decoded)


async def test_a_database_error_fails_the_unit_until_rollback(db: Database) -> None:
    (existing,) = await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        await uow.tasks.add(task(title="first half"))
        with pytest.raises(DuplicateKeyError):
            await uow.tasks.add(task(id=existing.id))
        for attempt in (
            uow.tasks.add(task(title="second half")),
            uow.tasks.count(),
            uow.tasks.claim_next("w"),
            uow.session.execute(select(Task.id)),
            uow.commit(),
        ):
            with pytest.raises(TransactionAbortedError):
                await attempt
    assert await task_count(db) == 1  # neither half was committed


async def test_a_missing_database_is_a_configuration_error(postgres_database_url: str) -> None:
    url = postgres_database_url.rsplit("/", 1)[0] + "/odb_no_such_database"
    db = Database(url)
    try:
        with pytest.raises(DatabaseConfigurationError, match="does not exist"):
            async with db.unit_of_work() as uow:
                await uow.tasks.count()
        with pytest.raises(DatabaseConfigurationError):
            async with db.unit_of_work() as uow:
                await uow.session.execute(text("SELECT 1"))
        report = await db.health_check()
        assert not report.ok and report.error is not None
    finally:
        await db.close()


async def test_an_unknown_role_is_a_configuration_error(postgres_database_url: str) -> None:
    url = postgres_database_url.replace("postgres@", "odb_no_such_role@", 1)
    db = Database(url)
    try:
        with pytest.raises(DatabaseConfigurationError, match="odb_no_such_role"):
            async with db.unit_of_work(read_only=True) as uow:
                await uow.tasks.count()
        with pytest.raises(DatabaseConfigurationError):
            await db.migrate()
    finally:
        await db.close()


async def test_a_refused_port_is_unavailable_through_the_session() -> None:
    db = Database("postgresql+asyncpg://postgres@127.0.0.1:1/test")
    try:
        with pytest.raises(DatabaseUnavailableError):
            async with db.unit_of_work():  # its schema check connects
                pass
        db._schema_known = True  # as if checked before the outage: the session connects
        async with db.unit_of_work() as uow:
            with pytest.raises(DatabaseUnavailableError):
                await uow.session.execute(text("SELECT 1"))
        with pytest.raises(DatabaseUnavailableError):
            async with db.queue_worker("w"):
                pass
        with pytest.raises(DatabaseUnavailableError):
            await db.current_revision()
    finally:
        await db.close()


async def test_a_long_id_list_is_a_caller_mistake_not_an_outage(db: Database) -> None:
    """40,000 ids: PostgreSQL takes at most 32,767 arguments per statement."""
    ids = [f"{i:032x}" for i in range(40_000)]
    async with db.unit_of_work(read_only=True) as uow:
        with pytest.raises(ValidationError, match="at most 30000"):
            await uow.tasks.list(id=ids)
        # A statement of the caller's is checked the same way, on both engines.
        with pytest.raises(ValidationError, match="at most 30000"):
            await uow.session.execute(select(Task.id).where(Task.id.in_(ids)))
        assert uow.failure is None


async def test_long_internal_id_lists_are_split(db: Database) -> None:
    """Lists the package builds itself are sent in pieces, whatever their size."""
    async with db.unit_of_work() as uow:
        prerequisite = await uow.tasks.submit(task())
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.events.mark_processed(range(35_000)) == 0
        batch = [task(title=f"t{i}") for i in range(3)]
        dependencies = {t.id: [prerequisite.id] for t in batch}
        added = await uow.tasks.submit_many(batch, dependencies=dependencies)
        assert {t.status for t in added} == {TaskStatus.BLOCKED}


async def test_a_bad_value_set_directly_is_refused_before_the_flush(db: Database) -> None:
    (added,) = await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        loaded = await uow.tasks.get(added.id)
        loaded.priority = "high"  # type: ignore[assignment]
        with pytest.raises(ValidationError, match=r"Task\.priority must be an integer"):
            await uow.flush()
        assert uow.failure is None  # nothing was sent: the unit goes on
        loaded.priority = 9
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.tasks.get(added.id)).priority == 9
