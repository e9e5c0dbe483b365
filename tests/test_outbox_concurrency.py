"""The event outbox with concurrent consumers: every event delivered once."""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

from orchestrator_db import Database, EventType, Project, WorkerType

EVENTS = 600
PROJECT = "acme/outbox"


async def emit_events(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.projects.add(Project(repository_name=PROJECT, path="/srv"))
        await uow.worker_types.add(
            WorkerType(project_id=PROJECT, worker_type="coder", system_prompt="x")
        )
        for i in range(EVENTS):
            await uow.events.emit(EventType.WORKER_STOPPED, project_id=PROJECT, reason=str(i))
        await uow.commit()


async def consume(db: Database, name: str) -> list[int]:
    """Claim in small batches, 'handle', mark processed, until none are left."""
    handled: list[int] = []
    while True:
        async with db.unit_of_work() as uow:
            batch = await uow.events.claim_unprocessed(7, consumer=name)
            await uow.commit()
        if not batch:
            async with db.unit_of_work(read_only=True) as uow:
                if not await uow.events.exists(processed=False):
                    return handled
            await asyncio.sleep(0.005)
            continue
        handled.extend(event.id for event in batch)
        async with db.unit_of_work() as uow:
            marked = await uow.events.mark_processed([e.id for e in batch], consumer=name)
            await uow.commit()
        assert marked == len(batch)


async def test_four_consumers_deliver_each_event_exactly_once(db: Database) -> None:
    await emit_events(db)
    results = await asyncio.gather(*(consume(db, f"consumer-{i}") for i in range(4)))
    delivered = [event_id for handled in results for event_id in handled]
    assert len(delivered) == EVENTS
    assert len(set(delivered)) == EVENTS
    assert sum(1 for handled in results if handled) >= 2
    async with db.unit_of_work() as uow:
        assert await uow.events.count(processed=True) == EVENTS


def _consumer_process(url: str, options: dict[str, Any], name: str) -> list[int]:
    async def run() -> list[int]:
        db = Database(url, **options)
        try:
            lists = await asyncio.gather(*(consume(db, f"{name}.{i}") for i in range(2)))
            return [event_id for handled in lists for event_id in handled]
        finally:
            await db.close()

    return asyncio.run(run())


async def test_consumers_in_two_processes(
    database_url: str, database_options: dict[str, Any]
) -> None:
    db = Database(database_url, **database_options)
    try:
        await emit_events(db)
        context = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        with context.Pool(2) as pool:
            jobs: list[Any] = [
                pool.apply_async(_consumer_process, (database_url, database_options, f"p{p}"))
                for p in range(2)
            ]
            results = await loop.run_in_executor(
                None, lambda: [job.get(timeout=240) for job in jobs]
            )
        delivered = [event_id for handled in results for event_id in handled]
        assert sorted(delivered) == sorted(set(delivered))
        assert len(delivered) == EVENTS
    finally:
        await db.close()
