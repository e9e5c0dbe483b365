"""The queue under real concurrency: workers in one process, in several
processes, and a worker killed with SIGKILL in the middle of a task."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from orchestrator_db import Database, Task, TaskStatus
from orchestrator_db.models import TaskDependency
from orchestrator_db.models.task import FINISHED_TASK_STATUSES
from tests.helpers import skip_back_off

#: Enough for every worker to meet the others at every step of the queue
#: (dense dependencies keep most tasks blocked); more only costs time.
TASKS = 3_000
UNFINISHED = [s for s in TaskStatus if s not in FINISHED_TASK_STATUSES]


async def populate(db: Database, count: int, seed: int = 7) -> dict[str, list[str]]:
    """``count`` tasks; each of the later ones waits for up to three earlier ones."""
    rng = random.Random(seed)
    tasks = [
        Task(
            title=f"t{i}",
            task_type=rng.choice(["code", "review"]),
            config={},
            priority=rng.randint(0, 10),
        )
        for i in range(count)
    ]
    edges: dict[str, list[str]] = {}
    for i, item in enumerate(tasks):
        if i >= 10 and rng.random() < 0.6:
            edges[item.id] = [
                tasks[j].id for j in rng.sample(range(max(0, i - 200), i), rng.randint(1, 3))
            ]
    for start in range(0, count, 1_000):
        chunk = tasks[start : start + 1_000]
        chunk_edges = {t.id: edges[t.id] for t in chunk if t.id in edges}
        async with db.unit_of_work() as uow:
            await uow.tasks.submit_many(chunk, dependencies=chunk_edges)
            await uow.commit()
    return edges


async def drain(db: Database, worker_id: str) -> list[str]:
    """Claim and complete until nothing is left unfinished; the ids it completed."""
    completed: list[str] = []
    while True:
        async with db.unit_of_work() as uow:
            claimed = await uow.tasks.claim_next(worker_id, lease=timedelta(minutes=5))
            await uow.commit()
        if claimed is None:
            async with db.unit_of_work(read_only=True) as uow:
                if not await uow.tasks.exists(status=UNFINISHED):
                    return completed
            await asyncio.sleep(0.005)
            continue
        async with db.unit_of_work() as uow:
            await uow.tasks.complete(claimed.id, worker_id, {"by": worker_id})
            await uow.commit()
        completed.append(claimed.id)


async def verify(db: Database, edges: dict[str, list[str]], completions: list[str]) -> None:
    assert len(completions) == TASKS, "some task was not completed, or completed twice"
    assert len(set(completions)) == TASKS, "a task was claimed and completed twice"
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.tasks.count(status=TaskStatus.COMPLETED) == TASKS
        rows = (
            await uow.session.execute(
                select(Task.id, Task.started_at, Task.completed_at, Task.retry_count)
            )
        ).all()
        stored_edges = (
            await uow.session.execute(select(TaskDependency.task_id, TaskDependency.depends_on_id))
        ).all()
    assert sorted(map(tuple, stored_edges)) == sorted(
        (task_id, p) for task_id, prereqs in edges.items() for p in prereqs
    )
    started = {row.id: row.started_at for row in rows}
    finished = {row.id: row.completed_at for row in rows}
    assert all(row.retry_count == 0 for row in rows)
    for task_id, prerequisites in edges.items():
        for prerequisite in prerequisites:
            # A dependent is claimed only after its prerequisite completed.
            assert started[task_id] >= finished[prerequisite], (task_id, prerequisite)


async def test_eight_workers_drain_three_thousand_tasks(db: Database) -> None:
    edges = await populate(db, TASKS)
    results = await asyncio.gather(*(drain(db, f"worker-{i}") for i in range(8)))
    assert all(results), "every worker should have found work"
    await verify(db, edges, [task_id for done in results for task_id in done])


async def drain_with_queue_worker(db: Database, worker_id: str) -> list[str]:
    """``drain`` through a QueueWorker's own connection, completing and
    claiming in one transaction as a busy worker would."""
    completed: list[str] = []
    async with db.queue_worker(worker_id) as worker:
        claimed = await worker.claim()
        while True:
            if claimed is None:
                async with db.unit_of_work(read_only=True) as uow:
                    if not await uow.tasks.exists(status=UNFINISHED):
                        return completed
                await asyncio.sleep(0.005)
                claimed = await worker.claim()
                continue
            completed.append(claimed.id)
            claimed = await worker.complete_and_claim(claimed.id, {"by": worker_id})


async def test_eight_queue_workers_drain_three_thousand_tasks(db: Database) -> None:
    edges = await populate(db, TASKS, seed=5)
    results = await asyncio.gather(*(drain_with_queue_worker(db, f"worker-{i}") for i in range(8)))
    assert all(results), "every worker should have found work"
    await verify(db, edges, [task_id for done in results for task_id in done])
    assert db.pool_status().checked_out == 0  # each worker gave its connection back


def _process_worker(url: str, options: dict[str, Any], worker_id: str) -> list[str]:
    async def run() -> list[str]:
        db = Database(url, **options)
        try:
            lists = await asyncio.gather(*(drain(db, f"{worker_id}.{i}") for i in range(2)))
            return [task_id for done in lists for task_id in done]
        finally:
            await db.close()

    return asyncio.run(run())


async def test_three_processes_drain_three_thousand_tasks(
    database_url: str, database_options: dict[str, Any]
) -> None:
    db = Database(database_url, **database_options)
    try:
        edges = await populate(db, TASKS, seed=11)
        context = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        with context.Pool(3) as pool:
            jobs: list[Any] = [
                pool.apply_async(_process_worker, (database_url, database_options, f"process-{p}"))
                for p in range(3)
            ]
            results = await loop.run_in_executor(None, lambda: [j.get(timeout=400) for j in jobs])
        assert sum(1 for done in results if done) >= 2, "the work should be shared"
        await verify(db, edges, [task_id for done in results for task_id in done])
    finally:
        await db.close()


def _claim_and_hang(url: str, options: dict[str, Any], claimed: Any) -> None:
    async def run() -> None:
        db = Database(url, **options)
        async with db.unit_of_work() as uow:
            task = await uow.tasks.claim_next("doomed", lease=timedelta(seconds=1))
            await uow.commit()
        assert task is not None
        claimed.set()
        await asyncio.sleep(3600)  # "working"; the parent kills us here

    asyncio.run(run())


async def test_a_killed_worker_loses_no_task(
    database_url: str, database_options: dict[str, Any]
) -> None:
    db = Database(database_url, **database_options)
    try:
        async with db.unit_of_work() as uow:
            task = await uow.tasks.submit(Task(title="survivor", task_type="code", config={}))
            await uow.commit()
        context = multiprocessing.get_context("spawn")
        claimed = context.Event()
        worker = context.Process(
            target=_claim_and_hang, args=(database_url, database_options, claimed)
        )
        worker.start()
        assert await asyncio.to_thread(claimed.wait, 60), "the worker never claimed"
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        await asyncio.to_thread(worker.join, 30)
        assert worker.exitcode == -signal.SIGKILL

        async with db.unit_of_work() as uow:
            held = await uow.tasks.get(task.id)
            assert held.status is TaskStatus.RUNNING
            assert held.worker_id == "doomed"
            assert await uow.tasks.claim_next("rescuer") is None  # still leased
        await asyncio.sleep(1.2)  # the lease runs out
        async with db.unit_of_work() as uow:
            # The claim rescues it: a failed attempt, waiting out its back-off.
            assert await uow.tasks.claim_next("rescuer") is None
            await uow.commit()
        async with db.unit_of_work(read_only=True) as uow:
            held = await uow.tasks.get(task.id)
            assert (held.status, held.error) == (TaskStatus.READY, "timed out")
        await skip_back_off(db)
        async with db.unit_of_work() as uow:
            rescued = await uow.tasks.claim_next("rescuer")
            assert rescued is not None
            assert rescued.id == task.id
            done = await uow.tasks.complete(task.id, "rescuer", "finished after all")
            await uow.commit()
        assert done.status is TaskStatus.COMPLETED
        assert done.retry_count == 1
        assert done.result == "finished after all"
    finally:
        await db.close()


async def test_tasks_of_a_dead_worker_are_rescued_and_completed_exactly_once(
    db: Database,
) -> None:
    """A worker claims tasks and dies; the others' claims rescue them (no one
    calls requeue_expired) and every task is completed exactly once."""
    await populate(db, 200, seed=11)
    async with db.unit_of_work() as uow:
        lost = await uow.tasks.claim_batch("dead", 5, lease=timedelta(milliseconds=100))
        await uow.commit()
    results = await asyncio.gather(*(drain(db, f"worker-{i}") for i in range(4)))
    completions = [task_id for done in results for task_id in done]
    assert len(completions) == len(set(completions)) == 200
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.tasks.count(status=TaskStatus.COMPLETED) == 200
        rescued = [await uow.tasks.get(t.id) for t in lost]
    assert all(t.retry_count == 1 and t.worker_id != "dead" for t in rescued)


async def test_a_dependency_added_while_its_prerequisite_completes_is_released(
    db: Database,
) -> None:
    """A completion that has run its release but not committed, and a unit
    that meanwhile makes a ready task wait for that prerequisite: either
    the new edge waits for the completion and sees it complete, or the
    completion's release sees the edge. The task never stays blocked on a
    completed prerequisite."""
    async with db.unit_of_work() as uow:
        prerequisite = await uow.tasks.submit(
            Task(title="p", task_type="code", config={}, priority=9)
        )
        dependent = await uow.tasks.submit(Task(title="d", task_type="code", config={}, priority=1))
        await uow.commit()
    async with db.unit_of_work() as uow:
        claimed = await uow.tasks.claim_next("w")
        assert claimed is not None and claimed.id == prerequisite.id
        await uow.commit()
    completing = db.unit_of_work()
    async with completing as uow:
        await uow.tasks.complete(prerequisite.id, "w")  # released, not committed

        async def add_edge() -> None:
            async with db.unit_of_work() as other:
                await other.tasks.add_dependency(dependent.id, prerequisite.id)
                await other.commit()

        adding = asyncio.ensure_future(add_edge())
        await asyncio.sleep(0.3)  # SQLite: waits for the write lock; PostgreSQL: for the row
        await uow.commit()
    await asyncio.wait_for(adding, 10)
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.tasks.get(prerequisite.id)).status is TaskStatus.COMPLETED
        assert (await uow.tasks.get(dependent.id)).status is TaskStatus.READY
