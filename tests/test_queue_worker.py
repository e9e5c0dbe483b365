"""QueueWorker: the queue's operations on a worker's own connection behave as
the unit-of-work path does: same statuses, releases, errors and leases."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import inspect, text

from orchestrator_db import Database, Task, TaskStatus, queue_worker
from orchestrator_db.errors import (
    DatabaseUnavailableError,
    LeaseLostError,
    NotFoundError,
    ValidationError,
)
from orchestrator_db.types import new_id, utc_now
from tests.helpers import task
from tests.test_queue import statuses, submit


async def test_claim_complete_and_release_dependents(db: Database) -> None:
    a, b, c = await submit(db, task(priority=9), task(priority=1), task(), depends_on={2: [0, 1]})
    async with db.queue_worker("w", lease=timedelta(minutes=2)) as worker:
        first = await worker.claim()
        assert first is not None
        assert first.id == a.id  # highest priority first
        assert first.status is TaskStatus.RUNNING
        assert first.worker_id == "w"
        assert first.lease_expires_at is not None
        assert first.lease_expires_at > utc_now() + timedelta(minutes=1)
        assert inspect(first).detached
        second = await worker.complete_and_claim(first.id, {"out": 1})
        assert second is not None
        assert second.id == b.id
        assert await statuses(db, a, b, c) == [
            TaskStatus.COMPLETED,
            TaskStatus.RUNNING,
            TaskStatus.BLOCKED,
        ]
        finished = await worker.complete(second.id)
        assert finished.status is TaskStatus.COMPLETED
        assert finished.completed_at is not None
        # Both prerequisites complete: c is ready, and the next claim takes it.
        third = await worker.claim()
        assert third is not None
        assert third.id == c.id
        assert await worker.claim() is None
    async with db.unit_of_work() as uow:
        assert (await uow.tasks.get(a.id)).result == {"out": 1}
    assert db.pool_status().checked_out == 0


async def test_task_types_filter_the_claims(db: Database) -> None:
    await submit(db, task(task_type="code"), task(task_type="review"))
    async with db.queue_worker("w", task_types={"review"}) as worker:
        claimed = await worker.claim_batch(5)
        assert [t.task_type for t in claimed] == ["review"]


async def test_a_worker_that_lost_its_lease_is_refused(db: Database) -> None:
    (a,) = await submit(db, task())
    async with db.queue_worker("w1") as w1, db.queue_worker("w2") as w2:
        claimed = await w1.claim()
        assert claimed is not None
        with pytest.raises(LeaseLostError, match="held by 'w1'"):
            await w2.complete(claimed.id)
        with pytest.raises(LeaseLostError):
            await w2.heartbeat(claimed.id)
        with pytest.raises(NotFoundError):
            await w1.complete(new_id())
        # A refused operation leaves nothing behind; the owner carries on.
        beat = await w1.heartbeat(claimed.id.upper())
        assert beat.lease_expires_at is not None
        assert (await w1.complete(claimed.id)).status is TaskStatus.COMPLETED
        with pytest.raises(LeaseLostError, match="is completed"):
            await w1.complete(claimed.id)
    assert await statuses(db, a) == [TaskStatus.COMPLETED]


async def test_fail_retries_then_fails_and_cancels_dependents(db: Database) -> None:
    a, b = await submit(db, task(max_retries=1), task(), depends_on={1: [0]})
    async with db.queue_worker("w") as worker:
        claimed = await worker.claim()
        assert claimed is not None
        retried = await worker.fail(claimed.id, "flaky")
        assert retried.status is TaskStatus.READY
        assert retried.retry_count == 1
    async with db.unit_of_work() as uow:  # skip the back-off
        await uow.tasks.update(a.id, run_after=None)
        await uow.commit()
    async with db.queue_worker("w") as worker:
        claimed = await worker.claim()
        assert claimed is not None
        failed = await worker.fail(claimed.id, "broken")
        assert failed.status is TaskStatus.FAILED
    assert await statuses(db, a, b) == [TaskStatus.FAILED, TaskStatus.CANCELLED]


async def test_bad_arguments_are_validation_errors(db: Database) -> None:
    with pytest.raises(ValidationError, match="worker_id"):
        db.queue_worker("")
    with pytest.raises(ValidationError, match="lease"):
        db.queue_worker("w", lease=timedelta(0))
    async with db.queue_worker("w") as worker:
        with pytest.raises(ValidationError, match="limit"):
            await worker.claim_batch(0)
        with pytest.raises(ValidationError, match="task_id"):
            await worker.complete("not-a-uuid")


async def test_a_worker_must_be_entered(db: Database) -> None:
    worker = db.queue_worker("w")
    with pytest.raises(ValidationError, match="async with"):
        await worker.claim()


async def test_a_worker_reconnects_after_losing_its_connection(
    postgres_database_url: str,
) -> None:
    db = Database(postgres_database_url)
    killer = Database(postgres_database_url)
    try:
        await submit(db, task(), task())
        async with db.queue_worker("w") as worker:
            first = await worker.claim()
            assert first is not None
            async with killer.engine.begin() as connection:
                await connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            with pytest.raises(DatabaseUnavailableError):
                await worker.complete_and_claim(first.id)
            # Nothing was half-done; the next call gets a new connection.
            second = await worker.complete_and_claim(first.id)
            assert second is not None
            assert second.id != first.id
    finally:
        await db.close()
        await killer.close()


async def test_a_watchdog_heartbeat_waits_for_the_main_loop(db: Database) -> None:
    """Heartbeats from another coroutine share the worker's one connection:
    its operations take turns instead of colliding."""
    await submit(db, task(), task())
    async with db.queue_worker("w") as worker:
        first = await worker.claim()
        assert first is not None
        # Without the turn-taking, asyncpg refuses a second operation in
        # progress and SQLAlchemy a second transaction on the connection.
        *beats, following = await asyncio.gather(
            *(worker.heartbeat(first.id) for _ in range(5)),
            worker.complete_and_claim(first.id),
        )
        assert [b.id if b else None for b in beats] == [first.id] * 5
        assert following is not None
        assert following.id != first.id


async def test_fail_needs_no_second_connection() -> None:
    """An in-memory database has one connection, and the worker holds it."""
    db = Database("sqlite+aiosqlite://", pool_timeout=2)
    try:
        await db.migrate()
        (a,) = await submit(db, task(max_retries=0))
        async with db.queue_worker("w") as worker:
            claimed = await worker.claim()
            assert claimed is not None
            failed = await worker.fail(claimed.id, "broken")
            assert failed.status is TaskStatus.FAILED
            assert failed.error == "broken"
        assert await statuses(db, a) == [TaskStatus.FAILED]
    finally:
        await db.close()


async def test_a_held_connection_is_recycled_like_pooled_ones(db: Database) -> None:
    await submit(db, task(), task())
    async with db.queue_worker("w") as worker:
        first = await worker.claim()
        assert first is not None
        assert worker._executor is not None
        before = worker._executor.connection.sync_connection
        worker._recycle = 0  # every operation now finds the connection too old
        second = await worker.complete_and_claim(first.id)
        assert second is not None
        assert worker._executor.connection.sync_connection is not before
    assert db.pool_status().checked_out == 0


# ------------------------------------------------------------ batches and run()


async def test_run_drains_the_queue_in_batches_releasing_dependents(db: Database) -> None:
    """Twelve tasks, the last waiting for the first: run() with prefetch
    and concurrency completes each exactly once, stores each result, and
    the dependent, released in a batch's transaction, is claimed too."""
    tasks = await submit(db, *[task(title=f"t{i}") for i in range(11)], task(title="last"),
                         depends_on={11: [0]})  # fmt: skip
    seen: list[str] = []
    at_once = 0
    most = 0

    async def handler(item: Task) -> dict[str, str]:
        nonlocal at_once, most
        at_once += 1
        most = max(most, at_once)
        await asyncio.sleep(0.01)
        seen.append(item.id)
        at_once -= 1
        return {"title": item.title}

    async with db.queue_worker("w") as worker:
        summary = await worker.run(handler, concurrency=3, prefetch=5)
    assert summary.completed == 12 and summary.failed == 0 and not summary.lost
    assert sorted(seen) == sorted(t.id for t in tasks)  # each once
    assert 1 < most <= 3
    assert seen.index(tasks[11].id) > seen.index(tasks[0].id)
    async with db.unit_of_work(read_only=True) as uow:
        stored = await uow.tasks.get(tasks[11].id)
        assert stored.status is TaskStatus.COMPLETED and stored.result == {"title": "last"}


async def test_run_records_a_handler_that_raised_as_a_failed_attempt(db: Database) -> None:
    (a,) = await submit(db, task(max_retries=0))

    async def handler(item: Task) -> None:
        raise RuntimeError("tool crashed")

    async with db.queue_worker("w") as worker:
        summary = await worker.run(handler)
    assert (summary.completed, summary.failed) == (0, 1)
    async with db.unit_of_work(read_only=True) as uow:
        failed = await uow.tasks.get(a.id)
        assert failed.status is TaskStatus.FAILED
        assert failed.error == "RuntimeError: tool crashed"


async def test_two_running_workers_complete_each_task_once(db: Database) -> None:
    tasks = await submit(db, *[task(title=f"t{i}") for i in range(40)])
    ran: list[str] = []

    async def handler(item: Task) -> None:
        ran.append(item.id)
        await asyncio.sleep(0)

    async def work(name: str) -> int:
        async with db.queue_worker(name) as worker:
            return (await worker.run(handler, concurrency=2, prefetch=4)).completed

    done = await asyncio.gather(work("a"), work("b"))
    assert sum(done) == 40
    assert sorted(ran) == sorted(t.id for t in tasks)


async def test_complete_many_leaves_a_task_it_no_longer_holds(db: Database) -> None:
    a, b = await submit(db, task(), task())
    async with db.queue_worker("w") as worker:
        first, second = await worker.claim_batch(2)
        async with db.unit_of_work() as uow:  # taken away meanwhile
            await uow.tasks.cancel(second.id)
            await uow.commit()
        completed, lost, claimed = await worker.complete_many(
            {first.id: {"ok": True}, second.id: None}, claim=5
        )
        assert completed == [first.id]
        assert lost == [second.id] and claimed == []
        assert await worker.heartbeat_many([first.id, second.id]) == [first.id, second.id]
    assert await statuses(db, a, b) == [TaskStatus.COMPLETED, TaskStatus.CANCELLED]


BATCH_RESULTS: list[Any] = [
    {"nested": [1, 0.30000000000000004, {"deep": [None, True]}]},
    2**63 - 1,
    -0.0,
    1.2345678901234e15,
    5e-324,
    "é 😀 \u2028 \"quoted\" \\ 'single'",
    '{"looks": "like json"}',
    "",
    0,
    False,
    [],
    {},
    None,
]


async def test_complete_many_stores_each_result_as_complete_does(db: Database) -> None:
    """One statement completes the batch, each task with its own result,
    stored and read back exactly as one complete() of that result would."""
    batch = [t.id for t in await submit(db, *(task() for _ in BATCH_RESULTS))]
    single = [t.id for t in await submit(db, *(task() for _ in BATCH_RESULTS))]
    async with db.queue_worker("w") as worker:
        claimed = await worker.claim_batch(2 * len(BATCH_RESULTS))
        assert {t.id for t in claimed} == {*batch, *single}
        # Ids as the caller may spell them: upper case is the same task.
        results = dict(zip([key.upper() for key in batch], BATCH_RESULTS, strict=True))
        completed, lost, _ = await worker.complete_many(results)
        assert lost == [] and completed == list(results)  # as the caller named them
        for key, result in zip(single, BATCH_RESULTS, strict=True):
            await worker.complete(key, result)
    async with db.unit_of_work(read_only=True) as uow:
        stored = [(await uow.tasks.get(key)).result for key in batch]
        alone = [(await uow.tasks.get(key)).result for key in single]
    assert stored == alone == BATCH_RESULTS
    assert [type(value) for value in stored] == [type(value) for value in alone]


async def test_run_keeps_the_leases_of_what_it_holds(db: Database) -> None:
    """A handler that outlasts the lease: run() extends the leases of the
    task it runs and of those it holds, so no other worker's claim takes
    them meanwhile."""
    await submit(db, task(), task())

    async def slow(item: Task) -> None:
        await asyncio.sleep(1.6)

    async with db.queue_worker("w", lease=timedelta(seconds=1)) as worker:
        running = asyncio.ensure_future(worker.run(slow, prefetch=2))
        await asyncio.sleep(1.2)  # past the first lease
        async with db.queue_worker("thief") as thief:
            assert await thief.claim() is None
        summary = await running
    assert summary.completed == 2 and not summary.lost


async def test_run_fails_only_the_task_whose_outcome_cannot_be_kept(db: Database) -> None:
    """A result that is not JSON, an error text with a NUL, a handler whose
    own work was cancelled: each is its task's failed attempt; the others
    of the batch complete."""
    tasks = await submit(db, *[task(title=f"t{i}", max_retries=0) for i in range(4)])

    async def handler(item: Task) -> Any:
        if item.title == "t0":
            return {1, 2}
        if item.title == "t1":
            raise RuntimeError("bad\x00byte \ud800")
        if item.title == "t2":
            raise asyncio.CancelledError
        return {"ok": True}

    async with db.queue_worker("w") as worker:
        summary = await worker.run(handler, concurrency=2, prefetch=4)
    assert (summary.completed, summary.failed, summary.lost) == (1, 3, set())
    async with db.unit_of_work(read_only=True) as uow:
        stored = [await uow.tasks.get(t.id) for t in tasks]
    assert [t.status for t in stored] == [TaskStatus.FAILED] * 3 + [TaskStatus.COMPLETED]
    assert (stored[0].error or "").startswith("ValidationError: result")
    assert stored[1].error == "RuntimeError: bad\\0byte ?"


async def test_run_commits_a_finished_task_without_waiting_for_its_batch(db: Database) -> None:
    first, _ = await submit(db, task(title="quick", priority=9), task(title="slow"))
    seen_completed = asyncio.Event()

    async def handler(item: Task) -> None:
        if item.title == "slow":
            await asyncio.wait_for(seen_completed.wait(), 10)

    async def watch() -> None:
        # Polls the database (what another process would see): no event to wait on.
        for _ in range(500):
            if (await statuses(db, first))[0] is TaskStatus.COMPLETED:
                seen_completed.set()
                return
            await asyncio.sleep(0.02)

    async with db.queue_worker("w") as worker:
        watching = asyncio.ensure_future(watch())
        summary = await worker.run(handler, prefetch=2)
        await watching
    assert summary.completed == 2


async def test_run_gives_back_tasks_with_a_timeout_it_cannot_start(db: Database) -> None:
    """A timeout runs from the claim: prefetched tasks that have one and
    must wait are given back, not held, and still run in time."""
    await submit(db, *[task(title=f"t{i}", timeout_seconds=2, max_retries=0) for i in range(3)])

    async def handler(item: Task) -> None:
        await asyncio.sleep(0.8)

    async with db.queue_worker("w") as worker:
        summary = await worker.run(handler, prefetch=3)
    assert (summary.completed, summary.failed, summary.lost) == (3, 0, set())


async def test_a_cancelled_run_settles_what_it_held(db: Database) -> None:
    """Cancelled mid-batch: its handlers are cancelled and awaited, what
    finished is completed, what never started is ready again with no
    attempt counted."""
    tasks = await submit(
        db, *[task(title=f"t{i}", priority=9 - i, max_retries=0) for i in range(4)]
    )
    cleaned: list[str] = []

    async def handler(item: Task) -> None:
        if item.title == "t0":
            return
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(item.title)

    async with db.queue_worker("w") as worker:
        running = asyncio.ensure_future(worker.run(handler, prefetch=4))
        await asyncio.sleep(0.5)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert cleaned == ["t1"]  # awaited before run() returned
    async with db.unit_of_work(read_only=True) as uow:
        stored = [await uow.tasks.get(t.id) for t in tasks]
    assert stored[0].status is TaskStatus.COMPLETED
    assert [t.status for t in stored[2:]] == [TaskStatus.READY] * 2
    assert all(t.retry_count == 0 and t.worker_id is None for t in stored[2:])
    assert stored[1].status is TaskStatus.RUNNING  # cut short: its lease will tell


async def test_complete_many_refuses_one_task_named_twice(db: Database) -> None:
    (only,) = await submit(db, task())
    async with db.queue_worker("w") as worker:
        (claimed,) = await worker.claim_batch(1)
        with pytest.raises(ValidationError, match="twice"):
            await worker.complete_many({claimed.id: "a", claimed.id.upper(): "b"})
        assert await worker.heartbeat_many([claimed.id]) == []  # still held, nothing written
    assert await statuses(db, only) == [TaskStatus.RUNNING]


def test_batch_results_reach_postgresql_as_one_jsonb_parameter() -> None:
    """Bound as text and cast, the batch would be parsed again for every row
    once PostgreSQL plans the prepared statement generically."""
    from sqlalchemy.engine import make_url

    from orchestrator_db.sql import queue as q

    dialect = make_url("postgresql+asyncpg://").get_dialect()()
    sql = str(q.complete_many_statement("postgresql").compile(dialect=dialect))
    assert "::JSONB ->> CAST(tasks.id AS TEXT)" in sql
    assert "VARCHAR AS JSONB" not in sql


async def test_run_does_not_start_a_held_task_cancelled_meanwhile(db: Database) -> None:
    """A task held past CONFIRM_SECONDS is confirmed still the worker's as it
    starts: one cancelled meanwhile is reported lost, its handler never run."""
    first, second = await submit(db, task(priority=9), task(priority=1))
    started: list[str] = []

    async def slow(item: Task) -> None:
        started.append(item.id)
        if item.id == first.id:
            async with db.unit_of_work() as uow:  # taken away while held
                await uow.tasks.cancel(second.id)
                await uow.commit()
            await asyncio.sleep(queue_worker.CONFIRM_SECONDS + 0.2)

    async with db.queue_worker("w") as worker:
        summary = await worker.run(slow, concurrency=1, prefetch=2)
    assert started == [first.id]
    assert summary.completed == 1 and summary.lost == {second.id}
    assert await statuses(db, first, second) == [TaskStatus.COMPLETED, TaskStatus.CANCELLED]
