"""ConfigurationRepository: typed values and secrets."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from orchestrator_db import Database, ValueType
from orchestrator_db.errors import NotFoundError, ValidationError
from orchestrator_db.models import Configuration


@pytest.mark.parametrize(
    ("value", "value_type"),
    [
        ("plain text", ValueType.STRING),
        ("", ValueType.STRING),
        (42, ValueType.INTEGER),
        (-(2**70), ValueType.INTEGER),
        (0.1, ValueType.FLOAT),
        (1e300, ValueType.FLOAT),
        (True, ValueType.BOOLEAN),
        (False, ValueType.BOOLEAN),
        ({"a": [1, {"b": None}]}, ValueType.JSON),
        ([1, "two"], ValueType.JSON),
    ],
)
async def test_values_round_trip_with_their_type(
    db: Database, value: Any, value_type: ValueType
) -> None:
    async with db.unit_of_work() as uow:
        entry = await uow.configurations.set("k", value)
        assert entry.value_type is value_type
        await uow.commit()
    async with db.unit_of_work() as uow:
        loaded = await uow.configurations.get_value("k")
    assert loaded == value
    assert type(loaded) is type(value)


async def test_set_replaces_and_keeps_what_is_not_given(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.configurations.set("pool", 4, description="workers", is_secret=True)
        await uow.commit()
    async with db.unit_of_work() as uow:
        entry = await uow.configurations.set("pool", "eight")
        assert (entry.value, entry.value_type) == ("eight", ValueType.STRING)
        assert entry.description == "workers" and entry.is_secret
        public = await uow.configurations.set("pool", 8, is_secret=False, description="size")
        assert (public.is_secret, public.description) == (False, "size")
        assert entry.created_at == public.created_at
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.configurations.get_value("pool") == 8
        assert await uow.configurations.count() == 1
        assert await uow.configurations.get_value_or("missing", 3) == 3
        with pytest.raises(NotFoundError):
            await uow.configurations.get_value("missing")


@pytest.mark.parametrize("bad", [None, object(), {1, 2}, b"bytes", {"x": object()}, float("nan")])
async def test_unsupported_values_are_rejected(db: Database, bad: Any) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError):
            await uow.configurations.set("k", bad)


async def test_keys_must_be_strings(db: Database) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError):
            await uow.configurations.set("", 1)


async def test_value_and_type_change_only_through_set(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.configurations.set("k", 1)
        with pytest.raises(ValidationError):
            await uow.configurations.update("k", value="x")
        described = await uow.configurations.update("k", description="now described")
        assert described.description == "now described"


async def test_configurations_page_by_key(db: Database) -> None:
    async with db.unit_of_work() as uow:
        for key in ["c", "a", "d", "b"]:
            await uow.configurations.set(key, key)
        await uow.commit()
    async with db.unit_of_work() as uow:
        first = await uow.configurations.page(limit=3)
        rest = await uow.configurations.page(limit=3, after=first.next_cursor)
    assert [c.key for c in first.items] == ["a", "b", "c"]
    assert [c.key for c in rest.items] == ["d"]


SECRET = "sk-live-5ecret-value"


async def test_secrets_stay_out_of_repr_str_and_logs(
    database_url: str, database_options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(database_url, echo=True, **database_options)
    try:
        with caplog.at_level(logging.INFO, logger="sqlalchemy.engine"):
            async with db.unit_of_work() as uow:
                entry = await uow.configurations.set("api.key", SECRET, is_secret=True)
                again = await uow.configurations.set("api.key", SECRET + "2")  # secrecy kept
                await uow.commit()
            async with db.unit_of_work() as uow:
                loaded = await uow.configurations.get("api.key")
                value = await uow.configurations.get_value("api.key")
        assert caplog.records, "statement logging was not captured"
    finally:
        await db.close()
    assert value == SECRET + "2"  # the caller asking for it gets it
    for shown in (repr(entry), str(entry), repr(again), repr(loaded), str(loaded)):
        assert SECRET not in shown
        assert "'***'" in shown
    assert SECRET not in caplog.text


async def test_public_values_show_in_repr(db: Database) -> None:
    async with db.unit_of_work() as uow:
        entry = await uow.configurations.set("name", "visible", is_secret=False)
    assert "visible" in repr(entry)
    assert "<not loaded>" in repr(Configuration(key="k"))
