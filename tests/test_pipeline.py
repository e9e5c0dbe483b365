"""The ticket pipeline: projects, worker types, tickets, comments, workers, events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from orchestrator_db import Database, EventType, Project, Ticket, Worker, WorkerStatus, WorkerType
from orchestrator_db.errors import (
    DuplicateKeyError,
    ForeignKeyViolationError,
    InvalidTransitionError,
    NotFoundError,
    ValidationError,
)
from orchestrator_db.models import Comment
from orchestrator_db.seed import DEMO_PROJECT, seed_demo
from orchestrator_db.types import utc_now

PROJECT = "acme/app"


async def make_project(db: Database, *types: str, name: str = PROJECT) -> Project:
    async with db.unit_of_work() as uow:
        project = await uow.projects.add(Project(repository_name=name, path=f"/srv/{name}"))
        for worker_type in types or ("planner", "coder", "reviewer"):
            await uow.worker_types.add(
                WorkerType(
                    project_id=name, worker_type=worker_type, system_prompt=f"be {worker_type}"
                )
            )
        await uow.commit()
    return project


def ticket(ticket_id: str = "T-1", plan: list[str] | None = None, **kw: Any) -> Ticket:
    return Ticket(
        ticket_id=ticket_id,
        project_id=kw.pop("project_id", PROJECT),
        title=kw.pop("title", "do it"),
        execution_plan=plan if plan is not None else ["planner", "coder", "reviewer"],
        **kw,
    )


def worker(worker_id: str = "w-1", worker_type: str = "coder", **kw: Any) -> Worker:
    return Worker(
        worker_id=worker_id,
        project_id=kw.pop("project_id", PROJECT),
        worker_type=worker_type,
        queue_name=kw.pop("queue_name", f"q.{worker_type}"),
        **kw,
    )


# ------------------------------------------------------- projects, types


async def test_projects_and_worker_types(db: Database) -> None:
    await make_project(db, "coder", "reviewer")
    async with db.unit_of_work() as uow:
        assert (await uow.projects.get(PROJECT)).path == f"/srv/{PROJECT}"
        types = await uow.worker_types.for_project(PROJECT)
        assert [t.worker_type for t in types] == ["coder", "reviewer"]
        assert (await uow.worker_types.named(PROJECT, "coder")).system_prompt == "be coder"
        with pytest.raises(NotFoundError):
            await uow.worker_types.named(PROJECT, "tester")
        assert await uow.worker_types.missing(PROJECT, ["coder", "tester", "tester"]) == ["tester"]
        updated = await uow.projects.update(PROJECT, short_description="the app")
        assert updated.short_description == "the app"


async def test_worker_types_are_unique_per_project(db: Database) -> None:
    await make_project(db, "coder")
    await make_project(db, "coder", name="acme/other")  # same name, other project: fine
    with pytest.raises(DuplicateKeyError) as raised:
        async with db.unit_of_work() as uow:
            await uow.worker_types.add(
                WorkerType(project_id=PROJECT, worker_type="coder", system_prompt="again")
            )
    assert raised.value.constraint == "uq_worker_types_project_id_worker_type"


async def test_a_worker_type_needs_an_existing_project(db: Database) -> None:
    with pytest.raises(ForeignKeyViolationError) as raised:
        async with db.unit_of_work() as uow:
            await uow.worker_types.add(
                WorkerType(project_id="nobody/nothing", worker_type="coder", system_prompt="x")
            )
    assert raised.value.constraint == "fk_worker_types_project_id_projects"


# ------------------------------------------------------------------ tickets


async def test_a_plan_must_name_the_projects_worker_types(db: Database) -> None:
    await make_project(db, "coder", "reviewer")
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError, match="does not define: planner, tester"):
            await uow.tickets.add(ticket(plan=["planner", "coder", "tester"]))
        with pytest.raises(ValidationError, match="non-empty list"):
            await uow.tickets.add(ticket(plan=[]))
        with pytest.raises(ValidationError, match="non-empty list"):
            await uow.tickets.add_many([ticket(plan=["coder", 3])])  # type: ignore[list-item]
        with pytest.raises(NotFoundError):
            await uow.tickets.add(ticket(project_id="nobody/nothing", plan=["coder"]))
        ok = await uow.tickets.add(ticket(plan=["coder", "reviewer", "coder"]))
        assert ok.last_completed_stage == "Planned"
        with pytest.raises(ValidationError, match="does not define"):
            await uow.tickets.update(ok.ticket_id, execution_plan=["planner"])
        await uow.commit()


async def test_advancing_a_ticket_through_its_whole_plan(db: Database) -> None:
    await make_project(db)
    async with db.unit_of_work() as uow:
        await uow.tickets.add(ticket(plan=["planner", "coder", "reviewer", "coder"]))
        for kind in ("planner", "coder", "reviewer"):
            await uow.workers.add(worker(f"w-{kind}", worker_type=kind))
        await uow.commit()
    seen = []
    async with db.unit_of_work() as uow:
        assert await uow.tickets.current_stage("T-1") == "Planned"
        stage = await uow.tickets.next_stage("T-1")
        assert stage is not None and (stage.number, stage.worker_type, stage.of) == (
            1,
            "planner",
            4,
        )
        for step in ["planner", "coder", "reviewer", "coder"]:
            assert await uow.tickets.next_worker_type("T-1") == step
            with pytest.raises(InvalidTransitionError):
                await uow.tickets.advance("T-1", "nonsense")
            advanced = await uow.tickets.advance("T-1", step, worker_id=f"w-{step}")
            seen.append((advanced.last_completed_stage, advanced.closed_at is not None))
        assert await uow.tickets.next_worker_type("T-1") is None
        assert await uow.tickets.next_stage("T-1") is None
        with pytest.raises(InvalidTransitionError, match="closed"):
            await uow.tickets.advance("T-1", "coder")
        await uow.commit()
    assert seen == [("planner", False), ("coder", False), ("reviewer", False), ("coder", True)]
    async with db.unit_of_work() as uow:
        events = await uow.events.list(ticket_id="T-1")
        assert await uow.tickets.open_tickets(PROJECT) == []
    assert [(e.event_type, e.stage, e.worker_id) for e in events] == [
        (EventType.TICKET_STAGE_COMPLETED, s, f"w-{s}")
        for s in ["planner", "coder", "reviewer", "coder"]
    ]
    assert all(e.project_id == PROJECT and not e.processed for e in events)


async def test_an_advance_that_fails_leaves_no_event(db: Database) -> None:
    await make_project(db)
    async with db.unit_of_work() as uow:
        await uow.tickets.add(ticket())
        await uow.commit()
    with pytest.raises(InvalidTransitionError):
        async with db.unit_of_work() as uow:
            await uow.tickets.advance("T-1", "planner")
            await uow.tickets.advance("T-1", "reviewer")  # skips coder: the unit rolls back
            await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.tickets.current_stage("T-1") == "Planned"
        assert await uow.events.count() == 0


async def test_ticket_stage_fields_change_only_by_advancing(db: Database) -> None:
    await make_project(db)
    async with db.unit_of_work() as uow:
        await uow.tickets.add(ticket())
        with pytest.raises(ValidationError):
            await uow.tickets.update("T-1", closed_at=utc_now())
        with pytest.raises(ValidationError):
            await uow.tickets.update("T-1", stages_completed=2)
        await uow.tickets.advance("T-1", "planner")
        with pytest.raises(ValidationError, match="keep the 1 completed stage"):
            await uow.tickets.update("T-1", execution_plan=["coder"])
        replanned = await uow.tickets.update("T-1", execution_plan=["planner", "reviewer"])
        assert await uow.tickets.next_worker_type(replanned.ticket_id) == "reviewer"


# ----------------------------------------------------------------- comments


async def test_comments_per_ticket_in_order_and_per_stage(db: Database) -> None:
    await make_project(db)
    async with db.unit_of_work() as uow:
        await uow.tickets.add(ticket())
        for stage, content in [(1, "plan a"), (2, "code a"), (1, "plan b"), (None, "human note")]:
            await uow.comments.add(
                Comment(ticket_id="T-1", worker_type="x", stage_number=stage, content=content)
            )
        await uow.commit()
    async with db.unit_of_work() as uow:
        everything = [c.content for c in await uow.comments.for_ticket("T-1")]
        first_stage = [c.content for c in await uow.comments.for_ticket("T-1", stage_number=1)]
        grouped = {
            k: [c.content for c in v] for k, v in (await uow.comments.by_stage("T-1")).items()
        }
    assert first_stage == ["plan a", "plan b"]
    assert grouped == {1: ["plan a", "plan b"], 2: ["code a"], None: ["human note"]}
    assert sorted(everything) == sorted(["plan a", "code a", "plan b", "human note"])


async def test_a_comment_needs_its_ticket(db: Database) -> None:
    with pytest.raises(ForeignKeyViolationError) as raised:
        async with db.unit_of_work() as uow:
            await uow.comments.add(Comment(ticket_id="NOPE", content="orphan"))
    assert raised.value.constraint == "fk_comments_ticket_id_tickets"


# ------------------------------------------------------------------ workers


async def test_worker_lifecycle_and_stop_events(db: Database) -> None:
    await make_project(db)
    async with db.unit_of_work() as uow:
        registered = await uow.workers.add(worker(pid=4242))
        assert registered.status is WorkerStatus.SPAWNING
        with pytest.raises(NotFoundError):
            await uow.workers.add(worker("w-2", worker_type="tester"))
        await uow.workers.set_status("w-1", WorkerStatus.ACTIVE)
        await uow.workers.set_status("w-1", "idle")
        with pytest.raises(InvalidTransitionError):
            await uow.workers.set_status("w-1", WorkerStatus.SPAWNING)
        await uow.workers.set_status("w-1", WorkerStatus.ACTIVE)
        stopped = await uow.workers.stop("w-1", reason="queue drained")
        assert stopped.status is WorkerStatus.FINISHED
        for move in (WorkerStatus.ACTIVE, WorkerStatus.FAILED):
            with pytest.raises(InvalidTransitionError):
                await uow.workers.set_status("w-1", move)
        with pytest.raises(InvalidTransitionError):
            await uow.workers.touch("w-1")
        with pytest.raises(ValidationError):
            await uow.workers.set_status("w-1", "sleeping")
        await uow.commit()
    async with db.unit_of_work() as uow:
        (event,) = await uow.events.list(event_type=EventType.WORKER_STOPPED)
    assert (event.worker_id, event.reason, event.project_id) == ("w-1", "queue drained", PROJECT)


async def test_every_worker_status_move(db: Database) -> None:
    from orchestrator_db.models import WORKER_TRANSITIONS

    await make_project(db)
    for source in WorkerStatus:
        for target in WorkerStatus:
            async with db.unit_of_work() as uow:
                await uow.session.execute(text("DELETE FROM workers"))
                await uow.workers.add(worker(status=source))
                allowed = source in WORKER_TRANSITIONS.get(target, frozenset())
                if allowed:
                    assert (await uow.workers.set_status("w-1", target)).status is target
                else:
                    with pytest.raises(InvalidTransitionError):
                        await uow.workers.set_status("w-1", target)


async def test_touch_and_stale(db: Database) -> None:
    await make_project(db)
    long_ago = utc_now() - timedelta(hours=1)
    async with db.unit_of_work() as uow:
        await uow.workers.add(worker("quiet", status=WorkerStatus.ACTIVE, last_activity=long_ago))
        await uow.workers.add(worker("busy", status=WorkerStatus.ACTIVE, last_activity=long_ago))
        await uow.workers.add(worker("gone", status=WorkerStatus.FINISHED, last_activity=long_ago))
        await uow.commit()
    async with db.unit_of_work() as uow:
        touched = await uow.workers.touch("busy")
        assert touched.last_activity > long_ago + timedelta(minutes=59)
        stale = await uow.workers.stale(timedelta(minutes=10))
        assert [w.worker_id for w in stale] == ["quiet"]
        assert [w.worker_id for w in await uow.workers.for_project(PROJECT, status="finished")] == [
            "gone"
        ]
        with pytest.raises(ValidationError):
            await uow.workers.stale(timedelta(minutes=-1))


# ------------------------------------------------------------------- events


async def test_outbox_claims_and_marks(db: Database) -> None:
    await make_project(db)
    async with db.unit_of_work() as uow:
        await uow.tickets.add(ticket(plan=["planner"]))
        await uow.workers.add(worker())
        first = await uow.events.emit(
            "ticket_stage_completed", project_id=PROJECT, ticket_id="T-1", stage="planner"
        )
        second = await uow.events.emit(
            EventType.WORKER_STOPPED, project_id=PROJECT, worker_id="w-1", reason="x"
        )
        with pytest.raises(ValidationError):
            await uow.events.emit("ticket_exploded", project_id=PROJECT)
        await uow.commit()
    async with db.unit_of_work() as uow:
        claimed = await uow.events.claim_unprocessed(10, consumer="c1")
        assert [e.id for e in claimed] == [first.id, second.id]
        assert all(e.claimed_by == "c1" and e.claim_expires_at is not None for e in claimed)
        assert await uow.events.claim_unprocessed(10, consumer="c2") == []  # held by c1
        assert await uow.events.mark_processed([first.id], consumer="c2") == 0
        assert await uow.events.mark_processed([first.id, second.id], consumer="c1") == 2
        assert await uow.events.mark_processed([first.id]) == 0  # already processed
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.events.count(processed=False) == 0
        with pytest.raises(ValidationError):
            await uow.events.claim_unprocessed(0)


async def test_an_expired_event_claim_is_handed_out_again(db: Database) -> None:
    await make_project(db)
    async with db.unit_of_work() as uow:
        await uow.events.emit(EventType.WORKER_STOPPED, project_id=PROJECT)
        await uow.commit()
    async with db.unit_of_work() as uow:
        (claimed,) = await uow.events.claim_unprocessed(
            consumer="dies", lease=timedelta(milliseconds=30)
        )
        await uow.commit()
    import asyncio

    await asyncio.sleep(0.06)
    async with db.unit_of_work() as uow:
        (again,) = await uow.events.claim_unprocessed(consumer="survivor")
        assert again.id == claimed.id
        assert again.claimed_by == "survivor"


async def test_events_need_their_subjects(db: Database) -> None:
    await make_project(db)
    for kwargs, constraint in [
        ({"ticket_id": "NOPE"}, "fk_events_ticket_id_tickets"),
        ({"worker_id": "NOPE"}, "fk_events_worker_id_workers"),
    ]:
        with pytest.raises(ForeignKeyViolationError) as raised:
            async with db.unit_of_work() as uow:
                await uow.events.emit(EventType.WORKER_STOPPED, project_id=PROJECT, **kwargs)
        assert raised.value.constraint == constraint


# ----------------------------------------------------------------- cascades


async def test_deleting_a_project_removes_everything_of_it(db: Database) -> None:
    await make_project(db)
    await make_project(db, "coder", name="acme/kept")
    async with db.unit_of_work() as uow:
        await uow.tickets.add(ticket())
        await uow.tickets.add(ticket("K-1", project_id="acme/kept", plan=["coder"]))
        await uow.comments.add(Comment(ticket_id="T-1", content="hi"))
        await uow.workers.add(worker())
        await uow.tickets.advance("T-1", "planner")
        await uow.workers.stop("w-1", failed=True)
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.projects.delete(PROJECT)
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.worker_types.count(project_id=PROJECT) == 0
        assert await uow.tickets.count(project_id=PROJECT) == 0
        assert await uow.comments.count() == 0
        assert await uow.workers.count() == 0
        assert await uow.events.count() == 0
        assert await uow.tickets.count() == 1  # the other project's ticket stays
        assert await uow.worker_types.count() == 1


async def test_deleting_a_ticket_removes_its_comments_and_events(db: Database) -> None:
    await make_project(db)
    async with db.unit_of_work() as uow:
        await uow.tickets.add(ticket())
        await uow.comments.add(Comment(ticket_id="T-1", content="hi"))
        await uow.tickets.advance("T-1", "planner")
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.tickets.delete("T-1")
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.comments.count() == 0
        assert await uow.events.count() == 0
        assert await uow.projects.exists(repository_name=PROJECT)


# --------------------------------------------------------------------- seed


async def _demo_snapshot(db: Database) -> tuple[list[Any], list[Any], Any]:
    async with db.unit_of_work() as uow:
        types = [
            (t.worker_type, t.updated_at) for t in await uow.worker_types.for_project(DEMO_PROJECT)
        ]
        tickets = [(t.ticket_id, t.updated_at) for t in await uow.tickets.list()]
        project = (await uow.projects.get(DEMO_PROJECT)).updated_at
    return types, tickets, project


async def test_seeding_twice_changes_nothing(db: Database) -> None:
    first = await seed_demo(db)
    assert first.changed
    before = await _demo_snapshot(db)
    second = await seed_demo(db)
    assert not second.changed
    after = await _demo_snapshot(db)
    assert before == after
    types, tickets, _ = after
    assert len(types) == 3
    assert len(tickets) == 3
