"""SQL of retention: what ``db.prune(older_than=...)`` deletes, one bounded
batch at a time, and the counts of a dry run.

* **Tasks** finished (completed, failed, cancelled) before ``:cutoff``
  (their ``updated_at``: when they finished, or last changed after) that **no task depends on**,
  oldest first (``idx_tasks_finished``), with their tool executions. A
  finished prerequisite goes once what waits on it has gone: history is
  pruned from its newest end, and no remaining task's dependency facts
  change. So a task an unfinished task depends on is never deleted.
* **Events** processed before ``:cutoff`` (their ``created_at``;
  ``idx_events_processed``).
* **Sessions** closed and silent since before ``:cutoff``
  (``last_heartbeat``; ``idx_sessions_active``). Tasks that named them
  keep running, their ``session_id`` set to NULL by the foreign key.

Deletions return the ids they deleted, so that a batch is counted exactly.
"""

from __future__ import annotations

import functools
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    bindparam,
    delete,
    exists,
    func,
    literal_column,
    select,
)
from sqlalchemy.sql.dml import ReturningDelete

from orchestrator_db.models.event import Event
from orchestrator_db.models.session import ClientSession
from orchestrator_db.models.task import FINISHED_IN_INDEX_ORDER, Task, TaskDependency
from orchestrator_db.models.tool_execution import ToolExecution
from orchestrator_db.types import UTCDateTime, likely

_TASKS = cast(Table, Task.__table__)
_EDGES = cast(Table, TaskDependency.__table__)
_TOOLS = cast(Table, ToolExecution.__table__)
_EVENTS = cast(Table, Event.__table__)
_SESSIONS = cast(Table, ClientSession.__table__)


def _cutoff() -> Any:
    return bindparam("cutoff", type_=UTCDateTime())


def _old_and_finished(table: Any) -> list[ColumnElement[bool]]:
    """Finished before ``:cutoff`` (the statuses inlined in the order of
    ``idx_tasks_finished``'s predicate, so that SQLite uses the index)."""
    finished: list[ColumnElement[Any]] = [
        literal_column(f"'{s.value}'") for s in FINISHED_IN_INDEX_ORDER
    ]
    return [likely(table.c.status.in_(finished)), table.c.updated_at < _cutoff()]


def _nobody_waits(table: Any) -> ColumnElement[bool]:
    return ~exists().where(_EDGES.c.depends_on_id == table.c.id)


@functools.cache
def task_batch_statement() -> Select[Any]:
    """Up to ``:limit`` prunable tasks (see the module), oldest first."""
    return (
        select(_TASKS.c.id)
        .where(*_old_and_finished(_TASKS), _nobody_waits(_TASKS))
        .order_by(_TASKS.c.updated_at, _TASKS.c.id)
        .limit(bindparam("limit"))
        # Held until deleted (PostgreSQL): no update slips in between the
        # deletion of their tool executions and their own.
        .with_for_update(skip_locked=True)
    )


@functools.cache
def delete_tool_executions_statement() -> ReturningDelete[Any]:
    """The tool executions of the tasks ``:ids``."""
    return (
        delete(_TOOLS)
        .where(_TOOLS.c.task_id.in_(bindparam("ids", expanding=True)))
        .returning(_TOOLS.c.id)
    )


@functools.cache
def delete_tasks_statement() -> ReturningDelete[Any]:
    """The tasks ``:ids``, checked again as they are deleted."""
    return (
        delete(_TASKS)
        .where(
            _TASKS.c.id.in_(bindparam("ids", expanding=True)),
            *_old_and_finished(_TASKS),
            _nobody_waits(_TASKS),
        )
        .returning(_TASKS.c.id)
    )


def _events() -> list[ColumnElement[bool]]:
    return [_EVENTS.c.processed.is_(True), _EVENTS.c.created_at < _cutoff()]


def _sessions() -> list[ColumnElement[bool]]:
    return [_SESSIONS.c.is_active.is_(False), _SESSIONS.c.last_heartbeat < _cutoff()]


@functools.cache
def delete_events_statement() -> ReturningDelete[Any]:
    """Up to ``:limit`` processed events older than ``:cutoff``, oldest first."""
    batch = (
        select(_EVENTS.c.id)
        .where(*_events())
        .order_by(_EVENTS.c.created_at, _EVENTS.c.id)
        .limit(bindparam("limit"))
    )
    return delete(_EVENTS).where(_EVENTS.c.id.in_(batch.scalar_subquery())).returning(_EVENTS.c.id)


@functools.cache
def delete_sessions_statement() -> ReturningDelete[Any]:
    """Up to ``:limit`` closed sessions silent since before ``:cutoff``."""
    batch = (
        select(_SESSIONS.c.id)
        .where(*_sessions())
        .order_by(_SESSIONS.c.last_heartbeat, _SESSIONS.c.id)
        .limit(bindparam("limit"))
    )
    statement = delete(_SESSIONS).where(_SESSIONS.c.id.in_(batch.scalar_subquery()))
    return statement.returning(_SESSIONS.c.id)


# ------------------------------------------------------------------ dry run


@functools.cache
def prunable_tasks_statement() -> Select[Any]:
    """``(tasks, tool executions)`` a prune would delete: the old finished
    tasks but those that some other task (not itself prunable) waits on,
    directly or through prunable tasks."""
    prunable = _TASKS.alias("prunable")
    dependent = _TASKS.alias("dependent")
    start = (
        select(_EDGES.c.depends_on_id.label("id"))
        .join(dependent, dependent.c.id == _EDGES.c.task_id)
        .where(~(_old_and_finished_all(dependent)))
    )
    kept = start.cte("kept", recursive=True)
    edge = _EDGES.alias("edge")
    kept = kept.union(select(edge.c.depends_on_id).join(kept, kept.c.id == edge.c.task_id))
    pruned = (
        select(prunable.c.id)
        .where(*_old_and_finished(prunable), prunable.c.id.not_in(select(kept.c.id)))
        .cte("pruned")
    )
    tools = select(func.count()).where(_TOOLS.c.task_id.in_(select(pruned.c.id)))
    return select(
        select(func.count()).select_from(pruned).scalar_subquery(), tools.scalar_subquery()
    )


def _old_and_finished_all(table: Any) -> ColumnElement[bool]:
    status, old = _old_and_finished(table)
    return status & old


@functools.cache
def prunable_events_statement() -> Select[Any]:
    return select(func.count()).select_from(_EVENTS).where(*_events())


@functools.cache
def prunable_sessions_statement() -> Select[Any]:
    return select(func.count()).select_from(_SESSIONS).where(*_sessions())
