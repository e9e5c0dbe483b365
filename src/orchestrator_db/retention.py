"""Retention: ``db.prune(older_than=...)`` deletes what is old and done.

What goes, and what never does, is in :mod:`orchestrator_db.sql.retention`.
Here is how: table by table, in batches, each batch its own short write
transaction, so that other writers (workers claiming tasks) get the
database between batches. A batch is sized to take about
:data:`TARGET_SECONDS`: it starts at :data:`FIRST_BATCH` rows, doubles while
batches are quick and halves when one is slow, so that on SQLite no batch
holds the write lock much past 100 ms, on a fast disk or a slow one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from orchestrator_db.sql import IDS_PER_STATEMENT
from orchestrator_db.unit_of_work import UnitOfWork

#: What a batch should take, in seconds.
TARGET_SECONDS = 0.03
#: Rows of the first batch of each table.
FIRST_BATCH = 500
#: The smallest batch: below it, a batch's fixed cost (finding its rows)
#: outweighs what shrinking it saves.
MIN_BATCH = 100

#: The tables, in the order they are pruned.
TABLES = ("tasks", "tool_executions", "events", "sessions")

Progress = Callable[[str, int], None]
Step = Callable[[UnitOfWork, datetime, int], Awaitable[dict[str, int]]]


async def _tasks(uow: UnitOfWork, cutoff: datetime, limit: int) -> dict[str, int]:
    return await uow.tasks.prune(cutoff, limit=limit)


async def _events(uow: UnitOfWork, cutoff: datetime, limit: int) -> dict[str, int]:
    return {"events": await uow.events.prune(cutoff, limit=limit)}


async def _sessions(uow: UnitOfWork, cutoff: datetime, limit: int) -> dict[str, int]:
    return {"sessions": await uow.sessions.prune(cutoff, limit=limit)}


_STEPS: tuple[tuple[str, Step], ...] = (
    ("tasks", _tasks),
    ("events", _events),
    ("sessions", _sessions),
)


def next_batch(batch: int, elapsed: float) -> int:
    """The size of the batch after one of ``batch`` rows took ``elapsed`` seconds."""
    if elapsed < TARGET_SECONDS / 2:
        return min(batch * 2, IDS_PER_STATEMENT)
    if elapsed > TARGET_SECONDS * 2:
        return max(batch // 2, MIN_BATCH)
    return batch


async def prune(
    unit: Callable[[], UnitOfWork], cutoff: datetime, progress: Progress | None = None
) -> dict[str, int]:
    """Delete, in batches of units from ``unit``, what is older than
    ``cutoff``; the rows deleted per table. ``progress(table, rows so far)``
    is called after every batch."""
    deleted = dict.fromkeys(TABLES, 0)
    for table, step in _STEPS:
        batch = FIRST_BATCH
        while True:
            started = time.perf_counter()
            async with unit() as uow:
                counts = await step(uow, cutoff, batch)
                await uow.commit()
            for name, count in counts.items():
                deleted[name] += count
            if progress is not None:
                for name in counts:
                    progress(name, deleted[name])
            if counts[table] == 0:
                break
            batch = next_batch(batch, time.perf_counter() - started)
    return deleted


async def prunable(unit: Callable[[], UnitOfWork], cutoff: datetime) -> dict[str, int]:
    """What :func:`prune` would delete per table (a dry run: nothing is)."""
    async with unit() as uow:
        found = await uow.tasks.prunable(cutoff)
        found["events"] = await uow.events.prunable(cutoff)
        found["sessions"] = await uow.sessions.prunable(cutoff)
    return {table: found[table] for table in TABLES}
