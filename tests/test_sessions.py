"""SessionRepository: the life of a client connection."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from orchestrator_db import ConnectionType, Database
from orchestrator_db.errors import InvalidTransitionError, ValidationError
from orchestrator_db.types import utc_now


async def test_open_heartbeat_close(db: Database) -> None:
    async with db.unit_of_work() as uow:
        opened = await uow.sessions.open(
            "client-1", ConnectionType.WEBSOCKET, user_id="u1", metadata={"ip": "10.0.0.1"}
        )
        assert opened.is_active and opened.user_id == "u1"
        first_beat = opened.last_heartbeat
        await uow.commit()
    await asyncio.sleep(0.01)
    async with db.unit_of_work() as uow:
        beaten = await uow.sessions.heartbeat(opened.id)
        assert beaten.last_heartbeat > first_beat
        closed = await uow.sessions.close(opened.id)
        assert not closed.is_active
        again = await uow.sessions.close(opened.id)  # closing twice changes nothing
        assert not again.is_active
        with pytest.raises(InvalidTransitionError):
            await uow.sessions.heartbeat(opened.id)
        await uow.commit()
    async with db.unit_of_work() as uow:
        loaded = await uow.sessions.get(opened.id)
    assert loaded.metadata_ == {"ip": "10.0.0.1"} and not loaded.is_active


async def test_connection_type_is_checked(db: Database) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError):
            await uow.sessions.open("c", "carrier-pigeon")


async def test_list_active_and_expire_stale(db: Database) -> None:
    now = utc_now()
    async with db.unit_of_work() as uow:
        fresh = await uow.sessions.open("fresh", "http")
        stale = await uow.sessions.open("stale", "grpc")
        closed = await uow.sessions.open("closed", "http")
        await uow.sessions.close(closed.id)
        await uow.commit()
    async with db.unit_of_work() as uow:
        # A client silent for ten minutes.
        await uow.sessions.update(stale.id, last_heartbeat=now - timedelta(minutes=10))
        await uow.commit()
    async with db.unit_of_work() as uow:
        active = {s.client_id for s in await uow.sessions.list_active()}
        assert active == {"fresh", "stale"}
        assert await uow.sessions.expire_stale(timedelta(minutes=5)) == 1
        assert await uow.sessions.expire_stale(timedelta(minutes=5)) == 0
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert [s.id for s in await uow.sessions.list_active()] == [fresh.id]
        assert not (await uow.sessions.get(stale.id)).is_active
        with pytest.raises(ValidationError):
            await uow.sessions.expire_stale(timedelta(minutes=-1))
        # An instant works too: everything silent since "in one minute".
        assert await uow.sessions.expire_stale(utc_now() + timedelta(minutes=1)) == 1
