"""The agent task model of seed 003: its columns, the calculated priority as
the claim key, the dependency facts the package keeps, timeouts, deadlines
and agent types, on every engine configuration."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from orchestrator_db import Database, DependencyType, Task, TaskSource, TaskStatus, task_graph
from orchestrator_db.errors import CheckViolationError, LeaseLostError, ValidationError
from orchestrator_db.models import priority
from orchestrator_db.models.task import backoff
from orchestrator_db.types import in_uuid_set, utc_now
from tests.helpers import assert_facts_hold, skip_back_off, task


async def submit(
    db: Database, *tasks: Task, depends_on: dict[int, list[int]] | None = None
) -> list[Task]:
    """Submit ``tasks``, one unit each; ``depends_on`` maps a position to
    prerequisite positions."""
    done: list[Task] = []
    for position, item in enumerate(tasks):
        async with db.unit_of_work() as uow:
            prerequisites = [done[p].id for p in (depends_on or {}).get(position, [])]
            done.append(await uow.tasks.submit(item, depends_on=prerequisites))
            await uow.commit()
    return done


async def fetch(db: Database, *tasks: Task) -> list[Task]:
    async with db.unit_of_work(read_only=True) as uow:
        return [await uow.tasks.get(t.id) for t in tasks]


async def claim(db: Database, worker: str = "w", **kwargs: Any) -> Task | None:
    async with db.unit_of_work() as uow:
        claimed = await uow.tasks.claim_next(worker, **kwargs)
        await uow.commit()
    return claimed


async def finish(db: Database, item: Task) -> None:
    claimed = await claim(db, "finisher")
    assert claimed is not None and claimed.id == item.id, claimed
    async with db.unit_of_work() as uow:
        await uow.tasks.complete(item.id, "finisher")
        await uow.commit()


# ------------------------------------------------------------------ columns


async def test_the_seed_columns_round_trip(db: Database) -> None:
    given = task(
        summary="s" * 140,
        agent_type="planner",
        source=TaskSource.AGENT_PLANNER,
        created_by="agent-7",
        estimated_duration_seconds=90,
        feature_branch="feature/x",
        task_branch="task/x-1",
        worktree_path="/work/x-1",
        timeout_seconds=30,
        deadline=utc_now() + timedelta(days=1),
    )
    (stored,) = await submit(db, given)
    (loaded,) = await fetch(db, stored)
    for name in (
        "summary",
        "agent_type",
        "source",
        "created_by",
        "estimated_duration_seconds",
        "feature_branch",
        "task_branch",
        "worktree_path",
        "timeout_seconds",
        "deadline",
    ):
        assert getattr(loaded, name) == getattr(given, name), name
    assert loaded.source is TaskSource.AGENT_PLANNER
    assert loaded.dependency_depth == 0
    assert loaded.dependency_type is DependencyType.SEQUENTIAL
    assert 0.0 < loaded.calculated_priority <= 100.0


async def test_defaults_of_the_seed_columns(db: Database) -> None:
    (stored,) = await submit(db, task())
    (loaded,) = await fetch(db, stored)
    assert loaded.source is TaskSource.HUMAN
    assert (loaded.dependency_depth, loaded.blocking_count) == (0, 0)
    assert loaded.calculated_priority == priority.score_of(loaded, utc_now())
    assert loaded.reprioritize_at is None


async def test_bulk_inserts_score_each_row_by_its_own_values(db: Database) -> None:
    soon = utc_now() + timedelta(hours=1)
    mixed = [
        task(title="late", deadline=soon, estimated_duration_seconds=60),
        task(title="plain", priority=2),
        task(title="agent", source=TaskSource.AGENT_IMPLEMENTATION),
    ]
    async with db.unit_of_work() as uow:
        await uow.tasks.submit_many(mixed[:2])
        await uow.tasks.add_many(mixed[2:])
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        stored = {t.title: t for t in await uow.tasks.list()}
    for item in stored.values():
        expected = priority.score_of(item, item.created_at)
        # Scored as of the insert (its clock may differ from created_at by a ms).
        assert item.calculated_priority == pytest.approx(expected, abs=1e-3), item.title
    late = stored["late"]
    due = priority.reprioritize_at(soon, 60, late.created_at)
    assert late.reprioritize_at is not None and due is not None
    assert abs((late.reprioritize_at - due).total_seconds()) < 0.05
    assert late.reprioritize_at > late.created_at + timedelta(seconds=1)
    assert stored["plain"].reprioritize_at is None and stored["agent"].reprioritize_at is None


@pytest.mark.parametrize(
    "values",
    [
        {"summary": "s" * 141},
        {"source": "robot"},
        {"dependency_type": "circular"},
    ],
    ids=["summary", "source", "dependency_type"],
)
async def test_bad_seed_values_are_refused_before_sql(db: Database, values: dict[str, Any]) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError):
            await uow.tasks.add(task(**values))
        assert await uow.tasks.count() == 0


async def test_an_estimate_must_be_positive(db: Database) -> None:
    with pytest.raises(CheckViolationError) as raised:
        await submit(db, task(estimated_duration_seconds=0))
    assert raised.value.constraint == "ck_tasks_estimated_duration_positive"
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.tasks.count() == 0


@pytest.mark.parametrize(
    "name", ["dependency_depth", "blocking_count", "calculated_priority", "dependency_type"]
)
async def test_maintained_facts_cannot_be_set_by_hand(db: Database, name: str) -> None:
    value: Any = DependencyType.PARALLEL if name == "dependency_type" else 3
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError, match="kept by the package"):
            await uow.tasks.add(task(**{name: value}))
        with pytest.raises(ValidationError, match="kept by the package"):
            await uow.tasks.submit_many([task(**{name: value})])
        stored = await uow.tasks.submit(task())
        with pytest.raises(ValidationError, match="kept by the package"):
            await uow.tasks.update(stored.id, **{name: value})
        await uow.commit()
    (loaded,) = await fetch(db, stored)
    assert (loaded.dependency_depth, loaded.blocking_count) == (0, 0)


# --------------------------------------------------------------- claim key


async def test_claims_follow_the_calculated_priority(db: Database) -> None:
    soon = utc_now() + timedelta(minutes=30)
    await submit(
        db,
        task(title="agent", source=TaskSource.AGENT_IMPLEMENTATION),
        task(title="human"),
        task(title="urgent", source=TaskSource.AGENT_IMPLEMENTATION, deadline=soon),
        task(title="important", priority=9, source=TaskSource.AGENT_IMPLEMENTATION),
    )
    claimed = [await claim(db) for _ in range(4)]
    assert [t.title for t in claimed if t] == ["important", "urgent", "human", "agent"]
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.tasks.ready() == []


async def test_the_deeper_task_and_the_one_blocking_more_go_first(db: Database) -> None:
    # lone and root are equal but for root holding back two tasks.
    lone, root, middle, _leaf = await submit(
        db, task(title="lone"), task(title="root"), task(), task(), depends_on={2: [1], 3: [2]}
    )
    lone, root = await fetch(db, lone, root)
    assert root.blocking_count == 2 and lone.blocking_count == 0
    assert root.calculated_priority > lone.calculated_priority
    async with db.unit_of_work(read_only=True) as uow:
        assert [t.title for t in await uow.tasks.ready()] == ["root", "lone"]
    await finish(db, root)
    (middle,) = await fetch(db, middle)
    assert middle.status is TaskStatus.READY and middle.dependency_depth == 1
    assert middle.calculated_priority > lone.calculated_priority
    assert (await claim(db) or lone).id == middle.id


async def test_changing_what_the_score_is_made_of_rescores(db: Database) -> None:
    a, b, c = await submit(db, task(title="a"), task(title="b"), task(title="c"))
    async with db.unit_of_work() as uow:
        raised = await uow.tasks.update(b.id, priority=8)
        assert raised.calculated_priority == priority.score_of(raised, utc_now())
        due = await uow.tasks.update(c.id, deadline=utc_now() + timedelta(hours=1))
        assert due.reprioritize_at is not None
        assert due.calculated_priority > (await uow.tasks.get(a.id)).calculated_priority
        await uow.commit()
    claimed = [await claim(db) for _ in range(3)]
    assert [t.title for t in claimed if t] == ["b", "c", "a"]


# ----------------------------------------------------------- dependency facts


async def test_depth_and_type_of_chains_and_diamonds(db: Database) -> None:
    # a <- b <- d, a <- c <- d: d waits on b and c, which are independent.
    a, b, c, d, e = await submit(
        db, *[task(title=t) for t in "abcde"], depends_on={1: [0], 2: [0], 3: [1, 2], 4: [0, 3]}
    )
    a, b, c, d, e = await fetch(db, a, b, c, d, e)
    assert [t.dependency_depth for t in (a, b, c, d, e)] == [0, 1, 1, 2, 3]
    assert d.dependency_type is DependencyType.PARALLEL
    assert e.dependency_type is DependencyType.SEQUENTIAL  # d waits on a
    assert a.blocking_count == 4 and b.blocking_count == 2 and d.blocking_count == 1
    await assert_facts_hold(db)


async def test_submit_many_sets_the_same_facts(db: Database) -> None:
    items = [task(title=t) for t in "abcde"]
    a, b, c, d, e = items
    graph = {b.id: [a.id], c.id: [a.id], d.id: [b.id, c.id], e.id: [a.id, d.id]}
    async with db.unit_of_work() as uow:
        await uow.tasks.submit_many(list(reversed(items)), dependencies=graph)
        await uow.commit()
    a, b, c, d, e = await fetch(db, a, b, c, d, e)
    assert [t.dependency_depth for t in (a, b, c, d, e)] == [0, 1, 1, 2, 3]
    assert d.dependency_type is DependencyType.PARALLEL
    assert a.blocking_count == 4
    await assert_facts_hold(db)


async def test_added_edges_deepen_every_task_downstream(db: Database) -> None:
    a, b, x, y = await submit(db, task(), task(), task(), task(), depends_on={1: [0], 3: [2]})
    async with db.unit_of_work() as uow:
        await uow.tasks.add_dependency(x.id, b.id)
        await uow.tasks.add_dependency(y.id, a.id)  # a is reached through x already
        await uow.commit()
    a, b, x, y = await fetch(db, a, b, x, y)
    assert [t.dependency_depth for t in (a, b, x, y)] == [0, 1, 2, 3]
    assert y.dependency_type is DependencyType.SEQUENTIAL
    assert a.blocking_count == 3
    await assert_facts_hold(db)


async def test_facts_follow_completion_cancellation_and_deletion(db: Database) -> None:
    a, _b, c, d, e = await submit(
        db, *[task() for _ in range(5)], depends_on={1: [0], 2: [1], 3: [0], 4: [3]}
    )
    await finish(db, a)
    await assert_facts_hold(db)
    async with db.unit_of_work() as uow:
        await uow.tasks.cancel(c.id)
        await uow.commit()
    await assert_facts_hold(db)
    async with db.unit_of_work() as uow:
        assert await uow.tasks.delete(d.id)
        await uow.commit()
    (e,) = await fetch(db, e)
    assert e.status is TaskStatus.READY and e.dependency_depth == 0
    await assert_facts_hold(db)


async def test_a_cascade_larger_than_one_statement_leaves_the_counts_right(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past IDS_PER_STATEMENT finished tasks, the ids are walked in groups; a
    # task must still be walked up through the finished tasks of other groups.
    monkeypatch.setattr(task_graph, "IDS_PER_STATEMENT", 1)
    z, y, _x, _w = await submit(
        db, *[task() for _ in range(4)], depends_on={1: [0], 2: [1], 3: [2]}
    )
    async with db.unit_of_work() as uow:
        assert await uow.tasks.cancel(y.id) == 3
        await uow.commit()
    (z,) = await fetch(db, z)
    assert z.blocking_count == 0
    await assert_facts_hold(db)


async def test_any_number_of_ids_binds_as_one_parameter(db: Database) -> None:
    ids = [str(uuid.uuid4()) for _ in range(40_000)]
    stored = await submit(db, task())
    statement = select(func.count()).where(in_uuid_set(Task.__table__.c.id, "ids"))
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.session.scalar(statement, {"ids": [*ids, stored[0].id]}) == 1
        assert await uow.session.scalar(statement, {"ids": []}) == 0


async def test_a_failure_for_good_takes_its_dependents_out_of_the_counts(db: Database) -> None:
    a, b, c = await submit(db, task(max_retries=0), task(), task(), depends_on={1: [0], 2: [1]})
    await claim(db)
    async with db.unit_of_work() as uow:
        await uow.tasks.fail(a.id, "w", "broken")
        await uow.commit()
    b, c = await fetch(db, b, c)
    assert b.status is TaskStatus.CANCELLED and c.status is TaskStatus.CANCELLED
    await assert_facts_hold(db)


# ---------------------------------------------------------------- timeouts


async def test_a_timeout_sets_the_lease_unless_the_claim_asks_for_less(db: Database) -> None:
    cases = [(30, None, 30.0), (30, 10, 10.0), (30, 60, 30.0), (None, None, 300.0)]
    for timeout, asked, expected in cases:
        (item,) = await submit(db, task(timeout_seconds=timeout))
        lease = None if asked is None else timedelta(seconds=asked)
        claimed = await claim(db, lease=lease)
        assert claimed is not None and claimed.id == item.id
        assert claimed.started_at is not None and claimed.lease_expires_at is not None
        granted = (claimed.lease_expires_at - claimed.started_at).total_seconds()
        assert granted == pytest.approx(expected, abs=0.01), (timeout, asked)


async def test_a_heartbeat_never_extends_past_the_timeout(db: Database) -> None:
    await submit(db, task(timeout_seconds=30))
    claimed = await claim(db)
    assert claimed is not None and claimed.started_at is not None
    async with db.unit_of_work() as uow:
        beat = await uow.tasks.heartbeat(claimed.id, "w", lease=timedelta(hours=1))
        await uow.commit()
    assert beat.lease_expires_at is not None
    limit = claimed.started_at + timedelta(seconds=30)
    assert abs((beat.lease_expires_at - limit).total_seconds()) < 0.01


async def test_overdue_lists_unfinished_tasks_past_their_deadline(db: Database) -> None:
    past = utc_now() - timedelta(hours=1)
    *_, done = await submit(
        db,
        task(title="late", deadline=past - timedelta(hours=1)),
        task(title="later", deadline=past),
        task(title="on time", deadline=utc_now() + timedelta(hours=1)),
        task(title="no deadline"),
        task(title="done", deadline=past, priority=10),
    )
    await finish(db, done)
    async with db.unit_of_work(read_only=True) as uow:
        assert [t.title for t in await uow.tasks.overdue()] == ["late", "later"]
        assert [t.title for t in await uow.tasks.overdue(limit=1)] == ["late"]
        with pytest.raises(ValidationError):
            await uow.tasks.overdue(limit=-1)


# --------------------------------------------------------------- reprioritize


async def test_reprioritize_recomputes_only_the_scores_that_are_due(db: Database) -> None:
    deadline = utc_now() + timedelta(hours=2)
    stale, fresh, plain = await submit(db, task(deadline=deadline), task(deadline=deadline), task())
    async with db.unit_of_work() as uow:
        assert await uow.tasks.reprioritize() == 0  # nothing due yet
        # Pretend stale's score was computed long ago.
        await uow.session.execute(
            update(Task)
            .where(Task.id == stale.id)
            .values(calculated_priority=0.0, reprioritize_at=utc_now() - timedelta(hours=1))
        )
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.tasks.reprioritize() == 1
        await uow.commit()
    stale, fresh, plain = await fetch(db, stale, fresh, plain)
    assert stale.calculated_priority == pytest.approx(fresh.calculated_priority, abs=0.02)
    assert stale.reprioritize_at is not None and stale.reprioritize_at > utc_now()
    assert plain.reprioritize_at is None
    async with db.unit_of_work() as uow:
        assert await uow.tasks.reprioritize() == 0
        with pytest.raises(ValidationError):
            await uow.tasks.reprioritize(batch=0)


async def test_reprioritize_works_in_bounded_batches(db: Database) -> None:
    deadline = utc_now() + timedelta(hours=2)
    items = await submit(db, *[task(deadline=deadline) for _ in range(7)])
    async with db.unit_of_work() as uow:
        await uow.session.execute(
            update(Task)
            .where(Task.id.in_([t.id for t in items]))
            .values(reprioritize_at=utc_now() - timedelta(seconds=1))
        )
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.tasks.reprioritize(limit=5, batch=2) == 5
        assert await uow.tasks.reprioritize(limit=5, batch=2) == 2
        await uow.commit()


# --------------------------------------------------------------- agent types


async def test_claims_and_ready_by_agent_type(db: Database) -> None:
    await submit(
        db,
        task(title="plan", agent_type="planner", priority=1),
        task(title="code", agent_type="coder"),
        task(title="review", agent_type="reviewer", task_type="review"),
        task(title="any"),
    )
    async with db.unit_of_work(read_only=True) as uow:
        ready = await uow.tasks.ready(agent_types=["planner", "reviewer"])
        assert [t.title for t in ready] == ["review", "plan"]
        only = await uow.tasks.ready(agent_types=["reviewer"], task_types=["code"])
        assert only == []
    planner = await claim(db, agent_types={"planner"})
    assert planner is not None and planner.title == "plan"
    assert await claim(db, agent_types=["planner"]) is None
    async with db.unit_of_work() as uow:
        batch = await uow.tasks.claim_batch("w", 5, agent_types=["coder", "reviewer"])
        assert sorted(t.title for t in batch) == ["code", "review"]
        with pytest.raises(ValidationError):
            await uow.tasks.claim_next("w", agent_types="coder")
        await uow.commit()


# -------------------------------------------------------- automatic rescue


async def abandon(db: Database, count: int = 1) -> list[Task]:
    """Claim ``count`` tasks for a worker that dies at once (a 20 ms lease)."""
    async with db.unit_of_work() as uow:
        claimed = await uow.tasks.claim_batch("dead", count, lease=timedelta(milliseconds=20))
        await uow.commit()
    await asyncio.sleep(0.05)
    return claimed


async def test_a_claim_rescues_a_dead_workers_task(db: Database) -> None:
    (item,) = await submit(db, task(max_retries=2))
    await abandon(db)
    assert await claim(db, "alive") is None  # rescued, but waiting out its back-off
    (rescued,) = await fetch(db, item)
    assert (rescued.status, rescued.error, rescued.retry_count) == (
        TaskStatus.READY,
        "timed out",
        1,
    )
    assert rescued.worker_id is None and rescued.lease_expires_at is None
    assert rescued.run_after is not None
    back_off = (rescued.run_after - rescued.updated_at).total_seconds()
    assert back_off == pytest.approx(backoff(1).total_seconds(), abs=0.01)
    async with db.unit_of_work() as uow:
        with pytest.raises(LeaseLostError, match="the task is ready"):
            await uow.tasks.complete(item.id, "dead")
    await skip_back_off(db)
    taken = await claim(db, "alive")
    assert taken is not None and taken.id == item.id
    async with db.unit_of_work() as uow:
        with pytest.raises(LeaseLostError, match="held by 'alive'"):
            await uow.tasks.complete(item.id, "dead")
        await uow.tasks.complete(item.id, "alive")
        await uow.commit()


async def test_a_claim_that_finds_work_rescues_too(db: Database) -> None:
    lost, waiting = await submit(db, task(title="lost", priority=9), task(title="waiting"))
    await abandon(db)
    async with db.unit_of_work() as uow:
        claimed = await uow.tasks.claim_next("alive")
        assert claimed is not None and claimed.id == waiting.id
        held = await uow.tasks.get(lost.id)  # the unit sees the rescue it made
        assert (held.status, held.error) == (TaskStatus.READY, "timed out")
        await uow.commit()


async def test_a_task_out_of_retries_fails_and_cancels_its_dependents(db: Database) -> None:
    doomed, dependent, other = await submit(
        db, task(max_retries=0, priority=9), task(), task(), depends_on={1: [0]}
    )
    await abandon(db)
    taken = await claim(db, "alive")
    assert taken is not None and taken.id == other.id
    doomed, dependent = await fetch(db, doomed, dependent)
    assert (doomed.status, doomed.error) == (TaskStatus.FAILED, "timed out")
    assert doomed.completed_at is not None
    assert dependent.status is TaskStatus.CANCELLED
    await assert_facts_hold(db)


async def test_a_rescued_task_gets_its_score_as_of_now(db: Database) -> None:
    (item,) = await submit(db, task(deadline=utc_now() + timedelta(hours=1)))
    async with db.unit_of_work() as uow:
        await uow.session.execute(update(Task).values(calculated_priority=0.0))
        await uow.commit()
    await abandon(db)
    async with db.unit_of_work() as uow:
        assert await uow.tasks.requeue_expired() == 1
        await uow.commit()
    (rescued,) = await fetch(db, item)
    assert rescued.calculated_priority == pytest.approx(
        priority.score_of(rescued, utc_now()), abs=0.02
    )
    assert rescued.reprioritize_at is not None


async def test_a_queue_worker_rescues_on_claim(db: Database) -> None:
    (item,) = await submit(db, task())
    await abandon(db)
    async with db.queue_worker("alive") as worker:
        assert await worker.claim() is None
    (rescued,) = await fetch(db, item)
    assert (rescued.status, rescued.error) == (TaskStatus.READY, "timed out")


async def test_a_dependency_that_cancels_a_task_counts_it_out_once(db: Database) -> None:
    # a is waited on by t and e; d waits on t; x failed. t -> x cancels t and d.
    a, t, _e, d, x = await submit(
        db, task(), task(), task(), task(), task(max_retries=0, priority=10),
        depends_on={1: [0], 2: [0], 3: [1]},
    )  # fmt: skip
    claimed = await claim(db)
    assert claimed is not None and claimed.id == x.id
    async with db.unit_of_work() as uow:
        await uow.tasks.fail(x.id, "w", "broken")
        await uow.tasks.add_dependency(t.id, x.id)
        await uow.commit()
    a, t, d = await fetch(db, a, t, d)
    assert t.status is TaskStatus.CANCELLED and d.status is TaskStatus.CANCELLED
    assert a.blocking_count == 1  # e still waits on a
    await assert_facts_hold(db)
