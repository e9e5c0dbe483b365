"""Every constraint of the ticket-pipeline tables is enforced by the database
itself (rows written with SQL text, past every Python-side check) and comes
back as the right typed error naming the constraint."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from orchestrator_db import Database, EventType, Project, Ticket, Worker, WorkerType
from orchestrator_db.errors import (
    CheckViolationError,
    ConstraintViolationError,
    DuplicateKeyError,
    ForeignKeyViolationError,
    NotNullViolationError,
)
from orchestrator_db.models import Base, Comment
from tests.helpers import raw_insert

PIPELINE_TABLES = ("projects", "worker_types", "tickets", "comments", "workers", "events")

# A valid row per table; the fixture writes exactly these first.
ROWS: dict[str, dict[str, Any]] = {
    "projects": {"repository_name": "acme/app", "path": "/srv/app"},
    "worker_types": {"project_id": "acme/app", "worker_type": "coder", "system_prompt": "code"},
    "tickets": {
        "ticket_id": "T-1",
        "project_id": "acme/app",
        "title": "t",
        "execution_plan": '["coder"]',
    },
    "comments": {"ticket_id": "T-1", "content": "hello"},
    "workers": {
        "worker_id": "w-1",
        "project_id": "acme/app",
        "worker_type": "coder",
        "queue_name": "q",
    },
    "events": {"event_type": "worker_stopped", "project_id": "acme/app"},
}


def table_of(constraint: str) -> str:
    return next(
        table
        for table in PIPELINE_TABLES
        if constraint in {c.name for c in Base.metadata.tables[table].constraints}
    )


def case(
    error: type[ConstraintViolationError], constraint: str, **changes: Any
) -> tuple[str, type[ConstraintViolationError], str, dict[str, Any]]:
    """A row of the constraint's table, valid but for ``changes``. Integer
    keys start at 1, so ``id=1`` collides with the fixture's row."""
    table = table_of(constraint)
    return table, error, constraint, {**ROWS[table], **changes}


CASES = [
    case(DuplicateKeyError, "pk_projects"),
    case(DuplicateKeyError, "pk_worker_types", id=1, worker_type="x"),
    case(DuplicateKeyError, "uq_worker_types_project_id_worker_type"),
    case(ForeignKeyViolationError, "fk_worker_types_project_id_projects", project_id="nope"),
    case(DuplicateKeyError, "pk_tickets"),
    case(
        ForeignKeyViolationError,
        "fk_tickets_project_id_projects",
        ticket_id="T-2",
        project_id="nope",
    ),
    case(
        CheckViolationError,
        "ck_tickets_stages_completed_not_negative",
        ticket_id="T-2",
        stages_completed=-1,
    ),
    case(DuplicateKeyError, "pk_comments", id=1),
    case(ForeignKeyViolationError, "fk_comments_ticket_id_tickets", ticket_id="nope"),
    case(DuplicateKeyError, "pk_workers"),
    case(
        ForeignKeyViolationError,
        "fk_workers_project_id_projects",
        worker_id="w-2",
        project_id="nope",
    ),
    case(CheckViolationError, "ck_workers_status", worker_id="w-2", status="zombie"),
    case(DuplicateKeyError, "pk_events", id=1),
    case(CheckViolationError, "ck_events_event_type", event_type="bogus"),
    case(ForeignKeyViolationError, "fk_events_project_id_projects", project_id="nope"),
    case(ForeignKeyViolationError, "fk_events_ticket_id_tickets", ticket_id="nope"),
    case(ForeignKeyViolationError, "fk_events_worker_id_workers", worker_id="nope"),
]

# PostgreSQL has a native boolean; SQLite needs the CHECK.
SQLITE_ONLY_CASES = [case(CheckViolationError, "ck_events_processed", processed=2)]

NOT_NULL_CASES = [
    ("projects", "path", {"repository_name": "other"}),
    ("worker_types", "system_prompt", {"worker_type": "x"}),
    ("worker_types", "worker_type", {}),
    ("tickets", "title", {"ticket_id": "T-2"}),
    ("tickets", "execution_plan", {"ticket_id": "T-2"}),
    ("comments", "content", {}),
    ("workers", "worker_type", {"worker_id": "w-2"}),
    ("workers", "queue_name", {"worker_id": "w-2"}),
    ("events", "event_type", {}),
    ("events", "project_id", {}),
]


@pytest.fixture
async def pipeline_db(db: Database) -> Database:
    """One row in every pipeline table, written through the repositories."""
    async with db.unit_of_work() as uow:
        await uow.projects.add(Project(**ROWS["projects"]))
        await uow.worker_types.add(WorkerType(**ROWS["worker_types"]))
        await uow.tickets.add(Ticket(**{**ROWS["tickets"], "execution_plan": ["coder"]}))
        await uow.comments.add(Comment(**ROWS["comments"]))
        await uow.workers.add(Worker(**ROWS["workers"]))
        await uow.events.emit(EventType.WORKER_STOPPED, project_id="acme/app")
        await uow.commit()
    return db


async def count_rows(db: Database, table: str) -> int:
    statement = select(func.count()).select_from(Base.metadata.tables[table])
    async with db.unit_of_work(read_only=True) as uow:
        return (await uow.session.execute(statement)).scalar_one()


@pytest.mark.parametrize(
    ("table", "error", "constraint", "row"), CASES, ids=[case[2] for case in CASES]
)
async def test_every_pipeline_constraint_is_enforced(
    pipeline_db: Database,
    table: str,
    error: type[ConstraintViolationError],
    constraint: str,
    row: dict[str, Any],
) -> None:
    with pytest.raises(error) as raised:
        await raw_insert(pipeline_db, table, **row)
    # SQLite does not say which foreign key failed (only the repositories can
    # work that out, from the row they wrote); every other report names it.
    if not (error is ForeignKeyViolationError and pipeline_db.dialect == "sqlite"):
        assert raised.value.constraint == constraint
    assert await count_rows(pipeline_db, table) == 1


@pytest.mark.parametrize(
    ("table", "error", "constraint", "row"),
    SQLITE_ONLY_CASES,
    ids=[case[2] for case in SQLITE_ONLY_CASES],
)
async def test_boolean_checks_on_sqlite(
    sqlite_db: Database,
    table: str,
    error: type[ConstraintViolationError],
    constraint: str,
    row: dict[str, Any],
) -> None:
    async with sqlite_db.unit_of_work() as uow:
        await uow.projects.add(Project(**ROWS["projects"]))
        await uow.commit()
    with pytest.raises(error) as raised:
        await raw_insert(sqlite_db, table, **row)
    assert raised.value.constraint == constraint


@pytest.mark.parametrize(
    ("table", "column", "changes"), NOT_NULL_CASES, ids=[f"{c[0]}.{c[1]}" for c in NOT_NULL_CASES]
)
async def test_required_columns_are_not_null(
    pipeline_db: Database, table: str, column: str, changes: dict[str, Any]
) -> None:
    with pytest.raises(NotNullViolationError) as raised:
        await raw_insert(pipeline_db, table, **{**ROWS[table], **changes, column: None})
    assert f"{table}.{column}" in str(raised.value)
    assert await count_rows(pipeline_db, table) == 1


def test_the_cases_cover_every_named_constraint() -> None:
    """A constraint added to a pipeline model without a case here fails this."""
    declared = {
        constraint.name
        for table in PIPELINE_TABLES
        for constraint in Base.metadata.tables[table].constraints
    }
    covered = {case[2] for case in CASES + SQLITE_ONLY_CASES}
    assert declared == covered
