"""SQL of the dependency graph's facts and the calculated priority.

The facts (``dependency_depth``, ``dependency_type``, ``blocking_count``)
and the score they feed are kept by :mod:`orchestrator_db.task_graph`; the
statements it runs are here:

* the walk up the graph that counts, for each unfinished ancestor of some
  tasks, how many of them wait for it, through unfinished tasks only
  (:func:`shift_blocking_statement` adds or takes away those counts in one
  ``UPDATE ... FROM``, relative to the stored value, under the row locks the
  update takes);
* the walk up every edge that tells whether a task's prerequisites depend
  on each other (:func:`ancestors_statement`);
* reads of the facts, and the write of recomputed facts (an executemany).
"""

from __future__ import annotations

import functools
from typing import Any, cast

from sqlalchemy import (
    CTE,
    ColumnElement,
    Integer,
    Select,
    Table,
    Update,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    update,
)

from orchestrator_db.models.task import FINISHED_TASK_STATUSES, Task, TaskDependency, TaskStatus
from orchestrator_db.types import UTCDateTime, in_uuid_set, utc_now_sql

_TASKS = cast(Table, Task.__table__)
_EDGES = cast(Table, TaskDependency.__table__)
_T = _TASKS.c

#: What the score is computed from, and what is stored of it.
FACT_COLUMNS = (
    _T.id,
    _T.status,
    _T.priority,
    _T.source,
    _T.deadline,
    _T.estimated_duration_seconds,
    _T.dependency_type,
    _T.dependency_depth,
    _T.blocking_count,
    _T.calculated_priority,
    _T.reprioritize_at,
)
#: The maintained columns and the parameters that set them.
MAINTAINED = {
    "dependency_type": "new_type",
    "dependency_depth": "new_depth",
    "blocking_count": "new_blocking",
    "calculated_priority": "new_score",
    "reprioritize_at": "new_due",
}


def unfinished(table: Any) -> ColumnElement[bool]:
    """``table``'s task is not finished (its statuses inlined, so that the
    statement compiles once)."""
    finished: list[ColumnElement[Any]] = [
        literal_column(f"'{s.value}'") for s in sorted(FINISHED_TASK_STATUSES)
    ]
    column: ColumnElement[Any] = table.c.status
    return column.not_in(finished)


def _passable(table: Any) -> ColumnElement[bool]:
    """Unfinished, or one of ``:through`` (tasks that just finished, walked
    as they were a moment ago)."""
    return or_(unfinished(table), in_uuid_set(table.c.id, "through"))


def _held_back() -> CTE:
    """``(id, holding)``: each unfinished task that some of ``:ids`` wait
    for, through unfinished tasks (and ``:through``), with how many of them
    do. Origins count only while unfinished (or in ``:through``)."""
    origin = _TASKS.alias("origin")
    start = (
        select(_EDGES.c.task_id.label("origin"), _EDGES.c.depends_on_id.label("id"))
        .join(origin, origin.c.id == _EDGES.c.task_id)
        .where(_EDGES.c.task_id.in_(bindparam("ids", expanding=True)), _passable(origin))
    )
    reached = start.cte("reached", recursive=True)
    via, edge = _TASKS.alias("via"), _EDGES.alias("edge")
    step = (
        select(reached.c.origin, edge.c.depends_on_id)
        .join(via, via.c.id == reached.c.id)
        .join(edge, edge.c.task_id == reached.c.id)
        .where(_passable(via))
    )
    reached = reached.union(step)
    ancestor = _TASKS.alias("ancestor")
    return (
        select(reached.c.id, func.count().label("holding"))
        .join(ancestor, ancestor.c.id == reached.c.id)
        .where(unfinished(ancestor))
        .group_by(reached.c.id)
        .cte("held_back")
    )


@functools.cache
def shift_blocking_statement() -> Update:
    """Add ``:sign`` (1 or -1) times the count of :func:`_held_back` to each
    such ancestor's ``blocking_count`` (never below 0); returns their facts."""
    held = _held_back()
    shifted = _T.blocking_count + bindparam("sign", type_=Integer()) * held.c.holding
    return (
        update(_TASKS)
        .where(_T.id == held.c.id)
        .values(
            blocking_count=case((shifted < 0, 0), else_=shifted),
            updated_at=utc_now_sql(),
        )
        .returning(*FACT_COLUMNS)
    )


@functools.cache
def ancestors_statement() -> Select[Any]:
    """``(origin, ancestor)``: every task each of ``:ids`` waits for,
    transitively, over every edge."""
    start = select(_EDGES.c.task_id.label("origin"), _EDGES.c.depends_on_id.label("id")).where(
        _EDGES.c.task_id.in_(bindparam("ids", expanding=True))
    )
    reached = start.cte("reached_all", recursive=True)
    edge = _EDGES.alias("edge")
    reached = reached.union(
        select(reached.c.origin, edge.c.depends_on_id).join(edge, edge.c.task_id == reached.c.id)
    )
    return select(reached.c.origin, reached.c.id)


@functools.cache
def descendants_statement(*, unfinished_only: bool) -> Select[Any]:
    """``:ids`` and the tasks that wait for them, transitively (with
    ``unfinished_only``: the unfinished ones, through unfinished tasks)."""
    start = select(_T.id.label("id")).where(_T.id.in_(bindparam("ids", expanding=True)))
    reached = start.cte("waiting", recursive=True)
    edge, task = _EDGES.alias("edge"), _TASKS.alias("task")
    step = (
        select(task.c.id)
        .join(edge, edge.c.task_id == task.c.id)
        .join(reached, reached.c.id == edge.c.depends_on_id)
    )
    reached = reached.union(step.where(unfinished(task)) if unfinished_only else step)
    return select(reached.c.id)


@functools.cache
def prerequisites_statement() -> Select[Any]:
    """``(task_id, depends_on_id, depth of the prerequisite)`` for ``:ids``."""
    prerequisite = _TASKS.alias("prerequisite")
    return (
        select(_EDGES.c.task_id, _EDGES.c.depends_on_id, prerequisite.c.dependency_depth)
        .join(prerequisite, prerequisite.c.id == _EDGES.c.depends_on_id)
        .where(_EDGES.c.task_id.in_(bindparam("ids", expanding=True)))
    )


@functools.cache
def facts_statement() -> Select[Any]:
    """The facts of the tasks ``:ids``."""
    return select(*FACT_COLUMNS).where(_T.id.in_(bindparam("ids", expanding=True)))


@functools.cache
def set_facts_statement() -> Update:
    """Store recomputed facts (one parameter row per task, ``:task_key``)."""
    values: dict[str, Any] = {column: bindparam(param) for column, param in MAINTAINED.items()}
    return update(_TASKS).where(_T.id == bindparam("task_key")).values(**values)


@functools.cache
def due_statement() -> Select[Any]:
    """Up to ``:limit`` tasks whose score is due for a recomputation at
    ``:now`` (the clock the due times were computed with: the package's)."""
    return (
        select(*FACT_COLUMNS)
        .where(
            _T.reprioritize_at.is_not(None),
            _T.reprioritize_at <= bindparam("now", type_=UTCDateTime()),
        )
        .order_by(_T.reprioritize_at)
        .limit(bindparam("limit"))
        # Locked until written (PostgreSQL), so that no change of their
        # facts in between is overwritten; rows being changed wait a turn.
        .with_for_update(skip_locked=True)
    )


#: Statuses whose score matters: a claim may still pick them.
QUEUED_STATUSES = frozenset({TaskStatus.PENDING, TaskStatus.BLOCKED, TaskStatus.READY})
