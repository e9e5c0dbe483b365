"""The work queue: submit, claim, heartbeat, complete, fail, cancel, requeue."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from orchestrator_db import Database, Task, TaskStatus
from orchestrator_db.errors import (
    DependencyCycleError,
    InvalidTransitionError,
    LeaseLostError,
    NotFoundError,
    ValidationError,
)
from orchestrator_db.models.task import RETRY_MAX_DELAY
from orchestrator_db.repositories.task import TaskRepository
from orchestrator_db.types import new_id, utc_now
from tests.helpers import skip_back_off, task

MS = timedelta(milliseconds=1)


async def submit(
    db: Database, *tasks: Task, depends_on: dict[int, list[int]] | None = None
) -> list[Task]:
    """Submit ``tasks``; ``depends_on`` maps a position to prerequisite positions."""
    done: list[Task] = []
    async with db.unit_of_work() as uow:
        for position, item in enumerate(tasks):
            prerequisites = [done[p].id for p in (depends_on or {}).get(position, [])]
            done.append(await uow.tasks.submit(item, depends_on=prerequisites))
        await uow.commit()
    return done


async def statuses(db: Database, *tasks: Task) -> list[TaskStatus]:
    async with db.unit_of_work() as uow:
        return [(await uow.tasks.get(t.id)).status for t in tasks]


async def claim(db: Database, worker: str = "w", **kwargs: object) -> Task | None:
    async with db.unit_of_work() as uow:
        claimed = await uow.tasks.claim_next(worker, **kwargs)  # type: ignore[arg-type]
        await uow.commit()
    return claimed


# --------------------------------------------------------------------- submit


async def test_submit_without_prerequisites_is_ready(db: Database) -> None:
    (a,) = await submit(db, task())
    assert a.status is TaskStatus.READY
    assert await statuses(db, a) == [TaskStatus.READY]


async def test_submit_waits_for_unfinished_prerequisites(db: Database) -> None:
    a, b, c = await submit(db, task(), task(), task(), depends_on={1: [0], 2: [0, 1]})
    assert [a.status, b.status, c.status] == [
        TaskStatus.READY,
        TaskStatus.BLOCKED,
        TaskStatus.BLOCKED,
    ]
    async with db.unit_of_work() as uow:
        assert [t.id for t in await uow.tasks.dependencies_of(c.id)] == [a.id, b.id]
        assert {t.id for t in await uow.tasks.dependents_of(a.id)} == {b.id, c.id}


async def test_submit_rejects_missing_and_self_prerequisites(db: Database) -> None:
    missing = new_id()
    with pytest.raises(NotFoundError) as raised:
        await submit_with(db, task(), [missing])
    assert raised.value.key == missing
    item = task()
    with pytest.raises(DependencyCycleError):
        await submit_with(db, item, [item.id])
    async with db.unit_of_work() as uow:
        assert await uow.tasks.count() == 0


async def submit_with(db: Database, item: Task, prerequisites: list[str]) -> Task:
    async with db.unit_of_work() as uow:
        submitted = await uow.tasks.submit(item, depends_on=prerequisites)
        await uow.commit()
    return submitted


async def test_submit_after_completed_prerequisites_is_ready(db: Database) -> None:
    (a,) = await submit(db, task())
    await drain_one(db, a.id)
    b = await submit_with(db, task(), [a.id])
    assert b.status is TaskStatus.READY


async def test_submit_after_a_failed_prerequisite_is_cancelled(db: Database) -> None:
    (a,) = await submit(db, task(max_retries=0))
    claimed = await claim(db)
    assert claimed is not None
    async with db.unit_of_work() as uow:
        await uow.tasks.fail(a.id, "w", "broken")
        await uow.commit()
    b = await submit_with(db, task(), [a.id])
    assert b.status is TaskStatus.CANCELLED
    assert a.id in (b.error or "")


async def test_a_stored_pending_task_can_be_submitted(db: Database) -> None:
    async with db.unit_of_work() as uow:
        stored = await uow.tasks.add(task())
        assert stored.status is TaskStatus.PENDING
        queued = await uow.tasks.submit(stored)
        assert queued.status is TaskStatus.READY
        with pytest.raises(InvalidTransitionError):
            await uow.tasks.submit(stored)
        await uow.commit()


async def test_submit_many_orders_a_batch_and_rejects_cycles(db: Database) -> None:
    a, b, c = task(), task(), task()
    async with db.unit_of_work() as uow:
        done = await uow.tasks.submit_many([c, b, a], dependencies={c.id: [b.id], b.id: [a.id]})
        await uow.commit()
    assert [t.status for t in done] == [TaskStatus.BLOCKED, TaskStatus.BLOCKED, TaskStatus.READY]
    x, y = task(), task()
    with pytest.raises(DependencyCycleError):
        async with db.unit_of_work() as uow:
            await uow.tasks.submit_many([x, y], dependencies={x.id: [y.id], y.id: [x.id]})
    async with db.unit_of_work() as uow:
        assert await uow.tasks.count() == 3


async def test_submitting_a_stored_task_refuses_a_cycle(db: Database) -> None:
    pending = task()
    async with db.unit_of_work() as uow:
        await uow.tasks.add(pending)
        await uow.commit()
    (waiter,) = await submit(db, task())
    async with db.unit_of_work() as uow:
        await uow.tasks.add_dependency(waiter.id, pending.id)
        await uow.commit()
    async with db.unit_of_work() as uow:
        stored = await uow.tasks.get(pending.id)
        with pytest.raises(DependencyCycleError):
            await uow.tasks.submit(stored, depends_on=[waiter.id])
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.tasks.get(pending.id)).status is TaskStatus.PENDING
        assert await uow.tasks.dependencies_of(pending.id) == []


# ----------------------------------------------------------- dependency edges


async def test_add_dependency_blocks_and_refuses_cycles(db: Database) -> None:
    a, _b, c = await submit(db, task(), task(), task(), depends_on={1: [0], 2: [1]})
    async with db.unit_of_work() as uow:
        with pytest.raises(DependencyCycleError):
            await uow.tasks.add_dependency(a.id, c.id)  # c -> b -> a already
        with pytest.raises(DependencyCycleError):
            await uow.tasks.add_dependency(a.id, a.id)
        with pytest.raises(NotFoundError):
            await uow.tasks.add_dependency(a.id, new_id())
    (d,) = await submit(db, task())
    async with db.unit_of_work() as uow:
        assert await uow.tasks.add_dependency(d.id, c.id) is True
        assert await uow.tasks.add_dependency(d.id, c.id) is False
        assert (await uow.tasks.get(d.id)).status is TaskStatus.BLOCKED
        await uow.commit()


async def test_add_dependency_to_running_or_finished_tasks_is_refused(db: Database) -> None:
    a, b = await submit(db, task(), task())
    await claim(db)
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidTransitionError):
            await uow.tasks.add_dependency(a.id, b.id)


# ---------------------------------------------------------------------- claim


async def test_claims_follow_priority_then_age(db: Database) -> None:
    now = utc_now()
    items = [
        task(title="old low", priority=1, created_at=now),
        task(title="new high", priority=9, created_at=now + 3 * MS),
        task(title="old high", priority=9, created_at=now + MS),
        task(title="mid", priority=5, created_at=now + 2 * MS),
    ]
    await submit(db, *items)
    async with db.unit_of_work() as uow:
        assert [t.title for t in await uow.tasks.ready()] == [
            "old high",
            "new high",
            "mid",
            "old low",
        ]
    order = []
    while (claimed := await claim(db)) is not None:
        order.append(claimed.title)
    assert order == ["old high", "new high", "mid", "old low"]


async def test_equal_priority_tasks_submitted_together_come_out_in_order(db: Database) -> None:
    """Tasks created in one millisecond share ``created_at``; the time-ordered
    ids keep such ties in creation order."""
    now = utc_now()
    submitted = await submit(db, *[task(created_at=now) for _ in range(40)])
    async with db.unit_of_work() as uow:
        batch = await uow.tasks.claim_batch("w", 20)
        await uow.commit()
    one_by_one = [await claim(db) for _ in range(20)]
    claimed = [t.id for t in batch] + [t.id for t in one_by_one if t is not None]
    assert claimed == [t.id for t in submitted]


async def test_a_claim_marks_the_task_running_under_a_lease(db: Database) -> None:
    (a,) = await submit(db, task())
    before = utc_now()
    claimed = await claim(db, "worker-1", lease=timedelta(seconds=30))
    assert claimed is not None and claimed.id == a.id
    assert claimed.status is TaskStatus.RUNNING
    assert claimed.worker_id == "worker-1"
    assert claimed.lease_expires_at is not None
    assert (
        before + timedelta(seconds=29)
        < claimed.lease_expires_at
        <= utc_now() + timedelta(seconds=30)
    )
    assert claimed.started_at is not None
    assert await claim(db) is None


async def test_claim_by_task_type_and_in_batches(db: Database) -> None:
    await submit(
        db,
        *[task(task_type="code") for _ in range(3)],
        task(task_type="review"),
        *[task(task_type=kind) for kind in ("docs", "test", "other")],
    )
    async with db.unit_of_work() as uow:
        reviews = await uow.tasks.claim_batch("w", 5, task_types=["review"])
        code = await uow.tasks.claim_batch("w", 2, task_types={"code"})
        several = await uow.tasks.claim_batch("w", 5, task_types=["docs", "test", "review"])
        rest = await uow.tasks.claim_batch("w", 10)
        await uow.commit()
    assert [t.task_type for t in reviews] == ["review"]
    assert len(code) == 2
    assert sorted(t.task_type for t in several) == ["docs", "test"]
    assert sorted(t.task_type for t in rest) == ["code", "other"]


async def test_bad_claim_arguments(db: Database) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError):
            await uow.tasks.claim_next("")
        with pytest.raises(ValidationError):
            await uow.tasks.claim_batch("w", 0)
        with pytest.raises(ValidationError):
            await uow.tasks.claim_next("w", lease=timedelta(0))


async def test_concurrent_claimers_never_share_a_task(db: Database) -> None:
    await submit(db, *[task() for _ in range(60)])

    async def worker(name: str) -> list[str]:
        mine = []
        while (claimed := await claim(db, name)) is not None:
            mine.append(claimed.id)
        return mine

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(6)))
    claimed = [task_id for ids in results for task_id in ids]
    assert len(claimed) == 60
    assert len(set(claimed)) == 60


# ------------------------------------------------------------ owner's actions


async def test_complete_releases_dependents_whose_prerequisites_are_done(db: Database) -> None:
    a, b, c = await submit(db, task(), task(), task(), depends_on={2: [0, 1]})
    await drain_one(db, a.id, result={"answer": 42})
    assert await statuses(db, c) == [TaskStatus.BLOCKED]
    await drain_one(db, b.id)
    assert await statuses(db, c) == [TaskStatus.READY]
    async with db.unit_of_work() as uow:
        done = await uow.tasks.get(a.id)
    assert done.result == {"answer": 42}
    assert done.completed_at is not None


async def drain_one(db: Database, task_id: str, *, result: object = None) -> Task:
    """Claim ``task_id`` (it must be the next one) and complete it."""
    claimed = await claim(db, "drainer")
    assert claimed is not None and claimed.id == task_id
    async with db.unit_of_work() as uow:
        done = await uow.tasks.complete(task_id, "drainer", result)
        await uow.commit()
    return done


async def test_two_prerequisites_completing_at_once_release_the_dependent(db: Database) -> None:
    """The dangerous interleaving: each completion checks "are all of c's
    prerequisites done?" while the other completion is not yet committed."""
    a, b, c = await submit(db, task(), task(), task(), depends_on={2: [0, 1]})
    async with db.unit_of_work() as uow:
        claimed = await uow.tasks.claim_batch("w", 2)
        await uow.commit()
    assert {t.id for t in claimed} == {a.id, b.id}

    async def complete_b() -> None:
        async with db.unit_of_work() as uow:
            await uow.tasks.complete(b.id, "w")
            await uow.commit()

    async with db.unit_of_work() as first:
        await first.tasks.complete(a.id, "w")  # sees b unfinished: c stays blocked
        second = asyncio.create_task(complete_b())
        await asyncio.sleep(0.3)  # b's completion runs up to its check of c
        assert not second.done()
        await first.commit()
    await asyncio.wait_for(second, timeout=10)
    assert await statuses(db, c) == [TaskStatus.READY]


async def test_only_the_lease_holder_may_act(db: Database) -> None:
    (a,) = await submit(db, task())
    await claim(db, "owner", lease=timedelta(seconds=30))
    async with db.unit_of_work() as uow:
        for action in (
            uow.tasks.heartbeat(a.id, "intruder"),
            uow.tasks.complete(a.id, "intruder"),
            uow.tasks.fail(a.id, "intruder", "x"),
        ):
            with pytest.raises(LeaseLostError, match="held by 'owner'"):
                await action
        with pytest.raises(NotFoundError):
            await uow.tasks.complete(new_id(), "owner")
        extended = await uow.tasks.heartbeat(a.id, "owner", lease=timedelta(minutes=10))
        assert extended.lease_expires_at is not None
        assert extended.lease_expires_at > utc_now() + timedelta(minutes=9)
        await uow.commit()


async def test_a_worker_whose_lease_expired_cannot_complete(db: Database) -> None:
    (a,) = await submit(db, task())
    await claim(db, "slow", lease=timedelta(milliseconds=50))
    await asyncio.sleep(0.1)
    async with db.unit_of_work() as uow:
        with pytest.raises(LeaseLostError, match="lease expired"):
            await uow.tasks.complete(a.id, "slow")
        with pytest.raises(LeaseLostError):
            await uow.tasks.heartbeat(a.id, "slow")
    async with db.unit_of_work() as uow:
        assert await uow.tasks.requeue_expired() == 1
        await uow.commit()
    async with db.unit_of_work() as uow:
        requeued = await uow.tasks.get(a.id)
        assert (requeued.status, requeued.error) == (TaskStatus.READY, "timed out")
        assert requeued.run_after is not None and requeued.run_after > utc_now()  # back-off
    await skip_back_off(db)
    taken = await claim(db, "fast")
    assert taken is not None and taken.id == a.id
    assert taken.retry_count == 1
    async with db.unit_of_work() as uow:
        with pytest.raises(LeaseLostError, match="held by 'fast'"):
            await uow.tasks.complete(a.id, "slow")
        await uow.tasks.complete(a.id, "fast")
        await uow.commit()


async def test_fail_retries_with_exponential_back_off_then_fails(db: Database) -> None:
    (a,) = await submit(db, task(max_retries=2))
    delays = []
    for attempt in (1, 2):
        claimed = await claim(db)
        assert claimed is not None and claimed.id == a.id
        before = utc_now()
        async with db.unit_of_work() as uow:
            retried = await uow.tasks.fail(a.id, "w", f"attempt {attempt}")
            await uow.commit()
        assert retried.status is TaskStatus.READY
        assert retried.retry_count == attempt
        assert retried.run_after is not None
        delays.append(retried.run_after - before)
        async with db.unit_of_work() as uow:  # not claimable while backing off
            assert await uow.tasks.claim_next("w") is None
            await uow.tasks.update(a.id, run_after=utc_now() - MS)  # skip the wait
            await uow.commit()
    assert delays[0] == pytest.approx(TaskRepository.backoff(1), abs=timedelta(seconds=1))
    assert delays[1] == pytest.approx(TaskRepository.backoff(2), abs=timedelta(seconds=1))
    assert TaskRepository.backoff(2) == 2 * TaskRepository.backoff(1)
    await claim(db)
    async with db.unit_of_work() as uow:
        final = await uow.tasks.fail(a.id, "w", "last straw")
        await uow.commit()
    assert final.status is TaskStatus.FAILED
    assert final.error == "last straw"
    assert TaskRepository.backoff(40) == RETRY_MAX_DELAY


async def test_a_final_failure_cancels_the_dependents(db: Database) -> None:
    a, b, c, d = await submit(
        db, task(max_retries=0), task(), task(), task(), depends_on={1: [0], 2: [1], 3: []}
    )
    await claim(db)
    async with db.unit_of_work() as uow:
        await uow.tasks.fail(a.id, "w", "broken")
        await uow.commit()
    assert await statuses(db, a, b, c, d) == [
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
        TaskStatus.CANCELLED,
        TaskStatus.READY,
    ]
    async with db.unit_of_work() as uow:
        assert a.id in ((await uow.tasks.get(c.id)).error or "") or a.id in (
            (await uow.tasks.get(b.id)).error or ""
        )


# ----------------------------------------------------------- cancel, requeue


async def test_cancel_takes_dependents_and_children_along(db: Database) -> None:
    a, b = await submit(db, task(), task(), depends_on={1: [0]})
    async with db.unit_of_work() as uow:
        child = await uow.tasks.submit(task(parent_task_id=a.id))
        grandchild = await uow.tasks.submit(task(parent_task_id=child.id))
        other = await uow.tasks.submit(task())
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.tasks.cancel(a.id, reason="operator said so") == 4
        await uow.commit()
    assert await statuses(db, a, b, child, grandchild, other) == [
        TaskStatus.CANCELLED,
        TaskStatus.CANCELLED,
        TaskStatus.CANCELLED,
        TaskStatus.CANCELLED,
        TaskStatus.READY,
    ]
    async with db.unit_of_work() as uow:
        assert (await uow.tasks.get(b.id)).error == "operator said so"
        with pytest.raises(InvalidTransitionError):
            await uow.tasks.cancel(a.id)


async def test_cancelling_a_running_task_takes_the_lease_away(db: Database) -> None:
    (a,) = await submit(db, task())
    await claim(db, "w")
    async with db.unit_of_work() as uow:
        assert await uow.tasks.cancel(a.id) == 1
        await uow.commit()
    async with db.unit_of_work() as uow:
        with pytest.raises(LeaseLostError, match="cancelled"):
            await uow.tasks.complete(a.id, "w")


async def test_requeue_expired_fails_tasks_out_of_retries(db: Database) -> None:
    a, b, c = await submit(
        db, task(max_retries=0), task(max_retries=1), task(), depends_on={2: [0]}
    )
    async with db.unit_of_work() as uow:
        await uow.tasks.claim_batch("dead worker", 2, lease=timedelta(milliseconds=20))
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.tasks.requeue_expired() == 0  # not expired yet... or nearly
        await uow.commit()
    await asyncio.sleep(0.05)
    async with db.unit_of_work() as uow:
        assert await uow.tasks.requeue_expired() == 2
        await uow.commit()
    assert await statuses(db, a, b, c) == [
        TaskStatus.FAILED,
        TaskStatus.READY,
        TaskStatus.CANCELLED,
    ]


# -------------------------------------------------------------- manual paths


async def test_manual_completion_releases_dependents_too(db: Database) -> None:
    async with db.unit_of_work() as uow:
        a = await uow.tasks.add(task())
        b = await uow.tasks.submit(task(), depends_on=[a.id])
        await uow.tasks.update_status(a.id, TaskStatus.RUNNING)
        await uow.tasks.update_status(a.id, TaskStatus.COMPLETED)
        await uow.commit()
    assert await statuses(db, b) == [TaskStatus.READY]


async def test_deleting_the_last_prerequisite_releases_the_dependent(db: Database) -> None:
    a, b = await submit(db, task(), task(), depends_on={1: [0]})
    async with db.unit_of_work() as uow:
        assert await uow.tasks.delete(a.id)
        await uow.commit()
    assert await statuses(db, b) == [TaskStatus.READY]


async def test_stats_count_per_status_and_type(db: Database) -> None:
    await submit(
        db,
        task(task_type="code"),
        task(task_type="code"),
        task(task_type="review"),
        depends_on={1: [0]},
    )
    async with db.unit_of_work() as uow:
        await uow.tasks.add(task(task_type="review"))
        stats = await uow.tasks.stats()
    assert stats.by_status == {TaskStatus.READY: 2, TaskStatus.BLOCKED: 1, TaskStatus.PENDING: 1}
    assert stats.by_type["code"] == {TaskStatus.READY: 1, TaskStatus.BLOCKED: 1}
    assert stats.by_type["review"] == {TaskStatus.READY: 1, TaskStatus.PENDING: 1}
    assert stats.total == 4


async def test_queue_columns_are_checked(db: Database) -> None:
    from orchestrator_db.errors import CheckViolationError

    for bad in ({"priority": 11}, {"priority": -1}, {"max_retries": -1}, {"timeout_seconds": 0}):
        with pytest.raises(CheckViolationError):
            async with db.unit_of_work() as uow:
                await uow.tasks.add(task(**bad))


async def test_complete_and_claim_moves_to_the_next_task_in_one_unit(db: Database) -> None:
    a, b, c = await submit(db, task(priority=9), task(priority=5), task(), depends_on={2: [0]})
    first = await claim(db, "w")
    assert first is not None and first.id == a.id
    async with db.unit_of_work() as uow:
        following = await uow.tasks.complete_and_claim(a.id, "w", {"ok": 1})
        await uow.commit()
    # c became ready when a completed; b and c have the same priority, but c
    # is deeper (it waited for a): its calculated priority is higher.
    assert following is not None and following.id == c.id
    async with db.unit_of_work() as uow:
        last = await uow.tasks.complete_and_claim(c.id, "w")
        assert last is not None and last.id == b.id
        assert await uow.tasks.complete_and_claim(b.id, "w") is None
        await uow.commit()
    assert await statuses(db, a, b, c) == [TaskStatus.COMPLETED] * 3


async def test_complete_and_claim_stores_the_result_and_refreshes_a_loaded_task(
    db: Database,
) -> None:
    (a,) = await submit(db, task())
    await claim(db, "w")
    async with db.unit_of_work() as uow:
        loaded = await uow.tasks.get(a.id)
        assert await uow.tasks.complete_and_claim(a.id, "w", {"ok": 1}) is None
        assert loaded.status is TaskStatus.COMPLETED and loaded.result == {"ok": 1}
        assert loaded.completed_at is not None and loaded.lease_expires_at is None
        await uow.commit()
    async with db.unit_of_work() as uow:
        stored = await uow.tasks.get(a.id)
        assert (stored.status, stored.result) == (TaskStatus.COMPLETED, {"ok": 1})


async def test_complete_and_claim_by_a_stranger_claims_nothing(db: Database) -> None:
    a, b = await submit(db, task(priority=9), task())
    await claim(db, "owner")
    async with db.unit_of_work() as uow:
        with pytest.raises(LeaseLostError, match="held by 'owner'"):
            await uow.tasks.complete_and_claim(a.id, "stranger")
        await uow.commit()
    assert await statuses(db, a, b) == [TaskStatus.RUNNING, TaskStatus.READY]
