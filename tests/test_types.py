"""Column types: timestamps, UUIDs and JSON behave the same on both engines."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from orchestrator_db import Database, Task, types
from orchestrator_db.errors import ValidationError
from orchestrator_db.types import (
    canonical_uuid,
    format_sqlite_timestamp,
    new_id,
    parse_sqlite_timestamp,
    truncate_to_millis,
    utc_now,
)
from tests.helpers import add_tasks, task


def test_sqlite_timestamp_format_is_fixed_width_utc() -> None:
    value = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert format_sqlite_timestamp(value) == "2026-01-02T03:04:05.000Z"
    value = datetime(2026, 11, 22, 23, 59, 59, 999999, tzinfo=UTC)
    assert format_sqlite_timestamp(truncate_to_millis(value)) == "2026-11-22T23:59:59.999Z"


def test_timestamps_parse_back_to_aware_utc() -> None:
    parsed = parse_sqlite_timestamp("2026-01-02T03:04:05.120Z")
    assert parsed == datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)
    assert parsed.tzinfo is UTC
    # written by hand with datetime('now'): no zone, read as UTC
    assert parse_sqlite_timestamp("2026-01-02 03:04:05") == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValidationError, match="naive datetime"):
        truncate_to_millis(datetime(2026, 1, 1))


def test_other_zones_are_converted_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    value = truncate_to_millis(datetime(2026, 1, 1, 12, 0, tzinfo=plus_two))
    assert value == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert value.tzinfo is UTC


def test_utc_now_has_millisecond_precision() -> None:
    now = utc_now()
    assert now.tzinfo is UTC
    assert now.microsecond % 1000 == 0


def test_new_ids_are_version_7_uuids_in_minting_order() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(20_000)]  # many share a millisecond
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    for value in ids[:: len(ids) // 200]:
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert str(parsed) == value
        assert before <= parsed.int >> 80 <= after


class SteppedClock:
    """Stands in for the ``time`` module inside ``orchestrator_db.types``."""

    def __init__(self, *milliseconds: int) -> None:
        self.readings = [ms * 1_000_000 for ms in milliseconds]

    def time_ns(self) -> int:
        return self.readings.pop(0)


def use_clock(monkeypatch: pytest.MonkeyPatch, *milliseconds: int) -> None:
    # The generator's state is saved too, so later ids do not carry on from
    # the stepped clock's future milliseconds.
    monkeypatch.setattr(types, "_last_millisecond", types._last_millisecond)
    monkeypatch.setattr(types, "_counter", types._counter)
    monkeypatch.setattr(types, "time", SteppedClock(*milliseconds))


def test_new_ids_stay_ordered_when_the_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = time.time_ns() // 1_000_000 + 10_000  # ahead of any id minted so far
    with monkeypatch.context() as patched:
        use_clock(patched, now, now, now - 5_000, now + 1)
        ids = [new_id() for _ in range(4)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert [uuid.UUID(value).int >> 80 for value in ids] == [now, now, now, now + 1]
    # Undoing the patch restored the generator's state as well as its clock.
    assert uuid.UUID(new_id()).int >> 80 <= time.time_ns() // 1_000_000


def test_a_full_millisecond_counter_moves_on_to_the_next_millisecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = time.time_ns() // 1_000_000 + 20_000
    use_clock(monkeypatch, now, now)
    first = new_id()
    monkeypatch.setattr(types, "_counter", (1 << 42) - 1)
    second = new_id()
    assert first < second
    assert uuid.UUID(second).int >> 80 == now + 1


def test_uuid_canonicalisation_and_rejection() -> None:
    value = str(uuid.uuid4())
    assert canonical_uuid(value.upper()) == value
    assert canonical_uuid(uuid.UUID(value)) == value
    with pytest.raises(ValidationError, match="must be a UUID"):
        canonical_uuid("not-a-uuid")


async def test_timestamp_round_trip(db: Database) -> None:
    started = datetime(2026, 3, 4, 5, 6, 7, 891234, tzinfo=timezone(timedelta(hours=-5)))
    (added,) = await add_tasks(db, task(started_at=started))
    async with db.unit_of_work() as uow:
        loaded = await uow.tasks.get(added.id)
    assert loaded.started_at == datetime(2026, 3, 4, 10, 6, 7, 891000, tzinfo=UTC)
    assert loaded.started_at is not None and loaded.started_at.tzinfo is UTC
    assert loaded.created_at.tzinfo is UTC


async def test_naive_datetime_is_rejected_before_the_database(db: Database) -> None:
    with pytest.raises(ValidationError, match="naive"):
        async with db.unit_of_work() as uow:
            await uow.tasks.add(task(started_at=datetime(2026, 1, 1)))
    async with db.unit_of_work() as uow:
        assert await uow.tasks.count() == 0


async def test_sqlite_stores_exactly_the_trigger_format(sqlite_db: Database) -> None:
    (added,) = await add_tasks(sqlite_db, task())
    async with sqlite_db.engine.connect() as connection:
        created, database_now = (
            await connection.execute(
                text(
                    "SELECT created_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                    "FROM tasks WHERE id = :id"
                ),
                {"id": added.id},
            )
        ).one()
    assert len(created) == len(database_now) == 24
    assert created[10] == "T" and created.endswith("Z") and database_now.endswith("Z")


async def test_python_and_database_timestamps_sort_together(db: Database) -> None:
    """Rows stamped by Python and by the database's clock order as instants."""
    early = utc_now() - timedelta(seconds=5)
    late = utc_now() + timedelta(seconds=5)
    async with db.unit_of_work() as uow:
        await uow.tasks.add(task(title="early", created_at=early))
        await uow.tasks.add(task(title="late", created_at=late))
        await uow.commit()
    # A row whose created_at comes from the server default (database clock).
    async with db.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO tasks (id, title, task_type, status, config) "
                "VALUES (:id, 'middle', 'code', 'pending', :config)"
            ),
            {"id": new_id(), "config": "{}"},
        )
    async with db.unit_of_work() as uow:
        titles = [t.title for t in await uow.tasks.list()]
        middle = await uow.tasks.list(title="middle")
    assert titles == ["early", "middle", "late"]
    assert early < middle[0].created_at < late
    assert middle[0].created_at.microsecond % 1000 == 0


async def test_json_documents_round_trip(db: Database) -> None:
    config = {"nested": {"list": [1, 2.5, "three", None, True]}, "unicode": "héllo ✓"}
    (added,) = await add_tasks(db, task(config=config, metadata_=[1, 2]))
    async with db.unit_of_work() as uow:
        loaded = await uow.tasks.get(added.id)
    assert loaded.config == config
    assert loaded.metadata_ == [1, 2]


async def test_json_none_is_sql_null(db: Database) -> None:
    (added,) = await add_tasks(db, task(metadata_=None))
    async with db.engine.connect() as connection:
        is_null = (
            await connection.execute(
                text("SELECT metadata IS NULL FROM tasks WHERE id = :id"), {"id": added.id}
            )
        ).scalar_one()
    assert bool(is_null) is True


@pytest.mark.parametrize("bad", ["a string", 42, 1.5])
async def test_json_scalars_are_rejected(db: Database, bad: object) -> None:
    with pytest.raises(ValidationError, match="JSON object"):
        async with db.unit_of_work() as uow:
            await uow.tasks.add(task(config=bad))


async def test_unserialisable_json_is_a_validation_error(db: Database) -> None:
    with pytest.raises(ValidationError):
        async with db.unit_of_work() as uow:
            await uow.tasks.add(task(config={"when": object()}))


async def test_malformed_id_is_a_validation_error(db: Database) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError, match="must be a UUID"):
            await uow.tasks.get("123")


async def test_ids_are_identical_strings_on_both_engines(db: Database) -> None:
    value = str(uuid.uuid4()).upper()
    (added,) = await add_tasks(db, Task(id=value, title="x", task_type="code", config={}))
    async with db.unit_of_work() as uow:
        loaded = await uow.tasks.get(value.lower())
    assert loaded.id == value.lower()
    assert isinstance(loaded.id, str)
    assert added.id == value.lower()  # the object holds what the database holds
