"""SQL of the task queue, per dialect, as SQLAlchemy statements.

Kept apart from :class:`~orchestrator_db.repositories.task.TaskRepository` so
the statements that carry the queue's guarantees can be read in one place:

* the claim: one ``UPDATE ... RETURNING`` that picks the ready tasks in claim
  order and marks them running. SQLite runs it inside the unit of work's
  ``BEGIN IMMEDIATE`` transaction (one writer at a time, so no task can be
  picked twice); PostgreSQL picks the candidates in a CTE with
  ``FOR UPDATE SKIP LOCKED``, so concurrent claimers skip each other's rows
  instead of waiting or double-claiming. The CTE also keeps the planner from
  updating more rows than the LIMIT.
* the release of dependents: a dependent becomes ready when none of its
  prerequisites is unfinished. Two prerequisites completing at the same
  instant in two transactions must not both conclude "the other one is still
  running": on PostgreSQL the dependents' rows are locked first, so the
  second transaction waits for the first and then, in a fresh READ COMMITTED
  snapshot, sees both prerequisites completed. SQLite has one writer.
* the closure of a cancellation: the task, its dependents and its children,
  transitively, through unfinished tasks only (one recursive CTE).

Status comparisons that match a partial index predicate are rendered as
literals: neither SQLite nor a generic PostgreSQL plan can use a partial
index for ``status = ?``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Select,
    Update,
    exists,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import aliased
from sqlalchemy.sql.selectable import ExecutableReturnsRows

from orchestrator_db.models.task import FINISHED_TASK_STATUSES, Task, TaskDependency, TaskStatus

#: Key of the PostgreSQL advisory lock that serialises changes to the
#: dependency graph, so that two concurrent additions cannot close a cycle.
GRAPH_LOCK_KEY = 0x6F72636864620002


def has_status(status: TaskStatus) -> ColumnElement[bool]:
    """``status = '<value>'`` with the value inlined (see module docstring)."""
    return Task.status == literal_column(f"'{status.value}'")


def is_unfinished() -> ColumnElement[bool]:
    return Task.status.not_in([s.value for s in FINISHED_TASK_STATUSES])


#: Claim order: highest priority first, then oldest, then id for a total order.
CLAIM_ORDER = (Task.priority.desc(), Task.created_at, Task.id)


def claimable(now: datetime, task_types: Collection[str] | None) -> list[ColumnElement[bool]]:
    criteria = [
        has_status(TaskStatus.READY),
        or_(Task.run_after.is_(None), Task.run_after <= now),
    ]
    if task_types:
        criteria.append(Task.task_type.in_(sorted(task_types)))
    return criteria


def claim_statement(
    dialect: str,
    *,
    worker_id: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    task_types: Collection[str] | None,
) -> ExecutableReturnsRows:
    """Mark up to ``limit`` ready tasks running for ``worker_id``; returns them."""
    candidates = (
        select(Task.id).where(*claimable(now, task_types)).order_by(*CLAIM_ORDER).limit(limit)
    )
    values: dict[str, Any] = {
        "status": TaskStatus.RUNNING,
        "worker_id": worker_id,
        "lease_expires_at": lease_until,
        "started_at": now,
        # Set explicitly: the trigger keeps it, and SQLite's RETURNING shows it.
        "updated_at": now,
    }
    statement: Update
    if dialect == "postgresql":
        picked = candidates.with_for_update(skip_locked=True).cte("candidates")
        statement = update(Task).where(Task.id == picked.c.id).values(**values)
    else:
        statement = update(Task).where(Task.id.in_(candidates.scalar_subquery())).values(**values)
    return (
        select(Task)
        .from_statement(statement.returning(Task))
        .execution_options(populate_existing=True)
    )


def owned_by(task_id: str, worker_id: str, now: datetime) -> list[ColumnElement[bool]]:
    """The task is running under ``worker_id``'s live lease."""
    return [
        Task.id == task_id,
        has_status(TaskStatus.RUNNING),
        Task.worker_id == worker_id,
        Task.lease_expires_at > now,
    ]


def update_owned(
    task_id: str, worker_id: str, now: datetime, values: dict[str, Any]
) -> ExecutableReturnsRows:
    statement = (
        update(Task)
        .where(*owned_by(task_id, worker_id, now))
        .values(updated_at=now, **values)
        .returning(Task)
    )
    return select(Task).from_statement(statement).execution_options(populate_existing=True)


def dependents_of(task_ids: Sequence[str]) -> Select[str]:
    return select(TaskDependency.task_id).where(TaskDependency.depends_on_id.in_(task_ids))


def lock_blocked(candidate_ids: Select[str]) -> Select[str]:
    """Lock blocked candidates in id order (PostgreSQL; a consistent order
    keeps two releasing transactions from deadlocking)."""
    return (
        select(Task.id)
        .where(has_status(TaskStatus.BLOCKED), Task.id.in_(candidate_ids))
        .order_by(Task.id)
        .with_for_update()
    )


def release(candidate_ids: Select[str], now: datetime) -> Update:
    """Make ready every blocked candidate none of whose prerequisites is unfinished."""
    prerequisite = aliased(Task)
    waiting = exists().where(
        TaskDependency.task_id == Task.id,
        prerequisite.id == TaskDependency.depends_on_id,
        prerequisite.status != TaskStatus.COMPLETED,
    )
    return (
        update(Task)
        .where(has_status(TaskStatus.BLOCKED), Task.id.in_(candidate_ids), ~waiting)
        .values(status=TaskStatus.READY, updated_at=now)
    )


def closure(task_ids: Sequence[str], *, include_children: bool) -> CTE:
    """``task_ids`` and the unfinished tasks reachable from them through
    dependents (and children). The walk does not pass through finished
    tasks; the start may be finished (a task that just failed)."""
    start = select(Task.id.label("id")).where(Task.id.in_(task_ids))
    reached = start.cte("reached", recursive=True)
    edges: list[Select[Any, Any]] = [
        select(TaskDependency.task_id.label("child"), TaskDependency.depends_on_id.label("parent"))
    ]
    if include_children:
        edges.append(
            select(Task.id.label("child"), Task.parent_task_id.label("parent")).where(
                Task.parent_task_id.is_not(None)
            )
        )
    edge = union_all(*edges).subquery("edge") if len(edges) > 1 else edges[0].subquery("edge")
    step = (
        select(Task.id)
        .join(edge, edge.c.child == Task.id)
        .join(reached, reached.c.id == edge.c.parent)
        .where(is_unfinished())
    )
    return reached.union(step)


def cancel_all(reached: CTE, now: datetime, reason: str, *, keep: Sequence[str] = ()) -> Update:
    criteria = [Task.id.in_(select(reached.c.id)), is_unfinished()]
    if keep:
        criteria.append(Task.id.not_in(keep))
    return (
        update(Task)
        .where(*criteria)
        .values(
            status=TaskStatus.CANCELLED,
            completed_at=now,
            lease_expires_at=None,
            error=reason,
            updated_at=now,
        )
    )


def expired(now: datetime, *, retryable: bool) -> Update:
    """Running tasks whose lease ran out: back to ready while they have
    retries left (a crash counts as a failed attempt), otherwise failed."""
    base = [
        has_status(TaskStatus.RUNNING),
        Task.lease_expires_at < now,
    ]
    if retryable:
        return (
            update(Task)
            .where(*base, Task.retry_count < Task.max_retries)
            .values(
                status=TaskStatus.READY,
                worker_id=None,
                lease_expires_at=None,
                run_after=None,
                retry_count=Task.retry_count + 1,
                error="lease expired before the worker finished",
                updated_at=now,
            )
        )
    return (
        update(Task)
        .where(*base, Task.retry_count >= Task.max_retries)
        .values(
            status=TaskStatus.FAILED,
            completed_at=now,
            lease_expires_at=None,
            error="lease expired before the worker finished; no retries left",
            updated_at=now,
        )
        .returning(Task.id)
    )


def graph_has_path(start: str, goal: str) -> Select[Any]:
    """1 if ``goal`` is reachable from ``start`` following prerequisites."""
    walk = select(TaskDependency.depends_on_id.label("id")).where(TaskDependency.task_id == start)
    reached = walk.cte("prerequisites", recursive=True)
    reached = reached.union(
        select(TaskDependency.depends_on_id).where(TaskDependency.task_id == reached.c.id)
    )
    return select(literal_column("1")).select_from(reached).where(reached.c.id == goal).limit(1)
