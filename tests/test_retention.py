"""Retention: ``db.prune`` and the repositories' ``prune``, on every engine
configuration; the CLI's ``prune``."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from orchestrator_db import Database, Task, TaskStatus, retention
from orchestrator_db.cli import main as cli
from orchestrator_db.errors import ValidationError
from orchestrator_db.models import Project
from orchestrator_db.types import utc_now
from tests.helpers import assert_facts_hold, client_session, task


async def submit(
    db: Database, *items: Task, depends_on: dict[int, list[int]] | None = None
) -> list[Task]:
    done: list[Task] = []
    async with db.unit_of_work() as uow:
        for position, item in enumerate(items):
            prerequisites = [done[p].id for p in (depends_on or {}).get(position, [])]
            done.append(await uow.tasks.submit(item, depends_on=prerequisites))
        await uow.commit()
    return done


async def finish_all(db: Database) -> None:
    """Complete every task that can run, until none can."""
    while True:
        async with db.unit_of_work() as uow:
            claimed = await uow.tasks.claim_next("w")
            if claimed is None:
                return
            await uow.tasks.complete(claimed.id, "w")
            await uow.commit()


async def history(db: Database) -> dict[str, Any]:
    """Finished tasks with tool executions, a processed event, a closed
    session; then a moment, and the same again (the recent half)."""
    made: dict[str, Any] = {}
    for age in ("old", "new"):
        async with db.unit_of_work() as uow:
            if age == "old":
                await uow.projects.add(Project(repository_name="p", path="/srv/p"))
            event = await uow.events.emit("worker_stopped", project_id="p")
            unprocessed = await uow.events.emit("worker_stopped", project_id="p")
            session = await uow.sessions.open("client", "http")
            await uow.sessions.close(session.id)
            active = await uow.sessions.open("client", "http")
            done = await uow.tasks.submit(task(title=f"{age} done"))
            await uow.tool_executions.start(done.id, "grep", {"q": 1})
            await uow.tool_executions.start(done.id, "ls", {})
            await uow.commit()
        await finish_all(db)
        async with db.unit_of_work() as uow:
            await uow.events.mark_processed([event.id])
            await uow.commit()
        made[age] = {"event": event, "unprocessed": unprocessed, "session": session}
        made[f"{age} active"] = active
        made[f"{age} done"] = done
        await asyncio.sleep(0.01)
        if age == "old":
            made["cutoff"] = utc_now()
            await asyncio.sleep(0.01)
    return made


async def test_prune_deletes_what_is_old_and_done_and_nothing_else(db: Database) -> None:
    made = await history(db)
    (waiting,) = await submit(db, task(title="still queued"))
    cutoff = made["cutoff"]
    expected = {"tasks": 1, "tool_executions": 2, "events": 1, "sessions": 1}
    assert await db.prune(older_than=cutoff, dry_run=True) == expected
    seen: list[tuple[str, int]] = []
    deleted = await db.prune(older_than=cutoff, progress=lambda t, n: seen.append((t, n)))
    assert deleted == expected
    assert ("tasks", 1) in seen and ("sessions", 1) in seen
    async with db.unit_of_work(read_only=True) as uow:
        assert {t.title for t in await uow.tasks.list()} == {"new done", "still queued"}
        assert await uow.tool_executions.count() == 2
        assert {e.id for e in await uow.events.list()} == {
            made["old"]["unprocessed"].id,
            made["new"]["event"].id,
            made["new"]["unprocessed"].id,
        }
        kept = {s.id for s in await uow.sessions.list()}
    assert kept == {made["old active"].id, made["new active"].id, made["new"]["session"].id}
    assert await db.prune(older_than=cutoff) == dict.fromkeys(expected, 0)
    assert waiting.status is TaskStatus.READY


async def test_prerequisites_go_only_after_what_waits_on_them(db: Database) -> None:
    # a <- b <- c: all old; x <- y: y unfinished; p <- q: q finished after the cut-off.
    _, _, _, x, p = await submit(
        db, task(), task(), task(), task(), task(), depends_on={1: [0], 2: [1]}
    )
    await finish_all(db)
    (y,) = await submit(db, task(title="y", priority=0), depends_on={})
    async with db.unit_of_work() as uow:
        await uow.tasks.add_dependency(y.id, x.id)  # x completed: y stays ready
        await uow.commit()
    cutoff = utc_now()
    await asyncio.sleep(0.01)
    async with db.unit_of_work() as uow:
        q = await uow.tasks.submit(task(title="q", priority=10), depends_on=[p.id])
        assert (await uow.tasks.claim_next("w") or q).id == q.id
        await uow.tasks.complete(q.id, "w")
        await uow.commit()

    assert (await db.prune(older_than=cutoff, dry_run=True))["tasks"] == 3
    async with db.unit_of_work() as uow:  # one batch: only the leaf of the chain
        assert await uow.tasks.prune(cutoff, limit=10) == {"tasks": 1, "tool_executions": 0}
        await uow.commit()
    assert (await db.prune(older_than=cutoff))["tasks"] == 2  # b, then a
    async with db.unit_of_work(read_only=True) as uow:
        left = {t.id for t in await uow.tasks.list()}
    assert left == {x.id, y.id, p.id, q.id}
    await assert_facts_hold(db)


async def test_bad_arguments_are_refused(db: Database) -> None:
    for bad in ("30d", -1, None, timedelta.max):
        with pytest.raises(ValidationError):
            await db.prune(older_than=bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await db.prune(older_than=timedelta(days=1), dry_run="yes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await db.prune(older_than=timedelta(days=1), progress=3)  # type: ignore[arg-type]
    async with db.unit_of_work() as uow:
        for limit in (0, -1, 10**9, "7"):
            with pytest.raises(ValidationError):
                await uow.tasks.prune(timedelta(days=1), limit=limit)  # type: ignore[arg-type]
            with pytest.raises(ValidationError):
                await uow.events.prune(timedelta(days=1), limit=limit)  # type: ignore[arg-type]


async def test_many_rows_go_in_growing_batches(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.tasks.add_many(
            [task(status=TaskStatus.COMPLETED) for _ in range(1_200)]
            + [task(status=TaskStatus.CANCELLED) for _ in range(3)]
        )
        await uow.commit()
    sizes: list[int] = []
    deleted = await db.prune(
        older_than=utc_now() + timedelta(seconds=1),
        progress=lambda table, n: sizes.append(n) if table == "tasks" else None,
    )
    assert deleted["tasks"] == 1_203
    assert sizes[0] == retention.FIRST_BATCH and sizes[-1] == 1_203
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.tasks.count() == 0


def test_batches_grow_when_quick_and_shrink_when_slow() -> None:
    quick, slow = retention.TARGET_SECONDS / 10, retention.TARGET_SECONDS * 10
    assert retention.next_batch(500, quick) == 1_000
    assert retention.next_batch(500, slow) == 250
    assert retention.next_batch(500, retention.TARGET_SECONDS) == 500
    assert retention.next_batch(retention.MIN_BATCH, slow) == retention.MIN_BATCH
    assert retention.next_batch(10_000, quick) == 10_000


def test_the_cli_prunes_and_dry_runs(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def fill() -> None:
        async with Database(sqlite_url) as db, db.unit_of_work() as uow:
            await uow.tasks.add_many([task(status=TaskStatus.FAILED) for _ in range(3)])
            await uow.sessions.add(client_session(is_active=False))
            await uow.commit()

    asyncio.run(fill())
    url = sqlite_url
    assert cli(["--url", url, "prune", "--older-than", "0s", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tasks: 3 would be deleted" in out and "sessions: 1 would be deleted" in out
    assert cli(["--url", url, "prune", "--older-than", "0s"]) == 0
    out = capsys.readouterr().out
    assert "tasks: 3 deleted" in out and "events: 0 deleted" in out
    with pytest.raises(SystemExit) as refused:
        cli(["--url", url, "prune", "--older-than", "30 days"])
    assert refused.value.code == 2
    assert "not an age" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        cli(["--url", url, "prune", "--older-than", "999999999w"])
    assert refused.value.code == 2
    assert "too far" in capsys.readouterr().err
