"""SQL of the task queue, per dialect, as SQLAlchemy statements.

Bulk updates return the ids they changed, so that the objects of those rows
held by a unit of work can be refreshed. The queue's operations, written once
for units of work and queue workers alike, are in
:mod:`orchestrator_db.work_queue`; the statements that carry its guarantees
are here, in one place:

* the claim: one ``UPDATE ... RETURNING`` that picks the ready tasks in claim
  order and marks them running (the shape :mod:`.claim` shares with the
  outbox).
* the owner's actions (heartbeat, complete, fail): conditional updates that
  match only while the worker holds a live lease.
* the release of dependents: a dependent becomes ready when none of its
  prerequisites is unfinished. Two prerequisites completing at the same
  instant in two transactions must not both conclude "the other one is still
  running": on PostgreSQL the dependents' rows are locked first, so the
  second transaction waits for the first and then, in a fresh READ COMMITTED
  snapshot, sees both prerequisites completed. SQLite has one writer.
* the closure of a cancellation: the task, its dependents and its children,
  transitively, through unfinished tasks only (one recursive CTE).

Times come from the database's clock (:class:`~orchestrator_db.types.utc_now_plus`):
one clock for every worker and machine, read when the statement runs rather
than before it waited for a lock. Status comparisons that match a partial
index predicate are rendered as literals, because neither SQLite nor a
generic PostgreSQL plan can use a partial index for ``status = ?``.

The statements are built once per dialect and variant and executed with
parameters: building SQLAlchemy expressions costs more than running them.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from typing import Any, Literal, cast

from sqlalchemy import (
    CTE,
    BigInteger,
    BindParameter,
    ColumnElement,
    Delete,
    Float,
    Insert,
    Select,
    Table,
    Update,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.sql.dml import ReturningDelete

from orchestrator_db.models.task import (
    RETRY_MAX_DELAY,
    Task,
    TaskDependency,
    TaskStatus,
    backoff,
)
from orchestrator_db.sql.claim import claim_statement as claim_statement_for
from orchestrator_db.sql.graph import FACT_COLUMNS, unfinished
from orchestrator_db.types import (
    in_uuid_set,
    json_for_uuid,
    utc_now_plus,
    utc_now_sql,
    utc_plus,
    utc_statement_time,
)

#: Key of the PostgreSQL advisory lock that serialises changes to the
#: dependency graph, so that two concurrent additions cannot close a cycle.
GRAPH_LOCK_KEY = 0x6F72636864620002

# The statements are Core statements on the tables, built from table columns
# rather than mapped attributes: the ORM would rebuild an ORM-enabled UPDATE on
# every execution to mirror it onto loaded objects, and its loader costs more
# than the claim itself. Statements that return tasks return every column of
# ``tasks`` (``TASK_COLUMNS``), and the repository turns the rows into the
# unit of work's objects (``Repository._adopt``).
_TASKS = cast(Table, Task.__table__)
_EDGES = cast(Table, TaskDependency.__table__)
_T = _TASKS.c
TASK_COLUMNS = tuple(_T)

#: Claim order: highest calculated priority first, then oldest, then id for
#: a total order.
CLAIM_ORDER = (_T.calculated_priority.desc(), _T.created_at, _T.id)


def _now() -> ColumnElement[Any]:
    return utc_now_sql()


def _now_plus(name: str) -> ColumnElement[Any]:
    return utc_now_plus(bindparam(name, type_=Float()))


def _status_is(status: TaskStatus, table: Any = None) -> ColumnElement[bool]:
    """``status = '<value>'`` with the value inlined (see module docstring)."""
    column = (table if table is not None else _TASKS).c.status
    return column == literal_column(f"'{status.value}'")


def _unfinished() -> ColumnElement[bool]:
    return unfinished(_TASKS)


#: How many types a claim's filter names (``typed``, ``agents``): none (0),
#: one (1: an equality, compiled once, whose index gives claim order on both
#: engines) or several (2: an expanding ``IN``, which SQLAlchemy rewrites per
#: execution). See :func:`type_count`.
TypeCount = Literal[0, 1, 2]


def type_count(types: Collection[Any] | None) -> TypeCount:
    """The :data:`TypeCount` of a type filter naming ``types``."""
    count = len(types) if types else 0
    return 0 if count == 0 else 1 if count == 1 else 2


def _of_types(column: Any, name: str, count: TypeCount) -> ColumnElement[bool]:
    if count == 1:
        return cast(ColumnElement[bool], column == bindparam(name))
    return cast(ColumnElement[bool], column.in_(bindparam(name, expanding=True)))


def _claimable(*, typed: TypeCount, agents: TypeCount) -> list[ColumnElement[bool]]:
    """Ready, not waiting out a back-off, and of ``:task_types`` (``typed``)
    and ``:agent_types`` (``agents``): bound as the type itself where the
    filter names one."""
    criteria = [
        _status_is(TaskStatus.READY),
        or_(_T.run_after.is_(None), _T.run_after <= _now()),
    ]
    if typed:
        criteria.append(_of_types(_T.task_type, "task_types", typed))
    if agents:
        criteria.append(_of_types(_T.agent_type, "agent_types", agents))
    return criteria


def _claim_index(*, typed: TypeCount, agents: TypeCount) -> str:
    # Without statistics SQLite prefers idx_tasks_status and sorts every ready
    # row; naming the partial index makes the claim an index range scan (and
    # a query the index cannot serve fails loudly instead of slowly). A claim
    # by task and agent type reads the task type's index.
    if typed:
        return "INDEXED BY idx_tasks_claim_type"
    return "INDEXED BY idx_tasks_claim_agent" if agents else "INDEXED BY idx_tasks_claim"


def _in_claim_order(columns: Sequence[Any], *, typed: TypeCount, agents: TypeCount) -> Select[Any]:
    return (
        select(*columns)
        .with_hint(_TASKS, _claim_index(typed=typed, agents=agents), "sqlite")
        .where(*_claimable(typed=typed, agents=agents))
        .order_by(*CLAIM_ORDER)
        .limit(bindparam("limit"))
    )


@functools.cache
def ready_statement(*, typed: TypeCount, agents: TypeCount = 0) -> Select[Any]:
    """``:limit`` claimable tasks in claim order."""
    return _in_claim_order(TASK_COLUMNS, typed=typed, agents=agents)


@functools.cache
def overdue_statement() -> Select[Any]:
    """``:limit`` unfinished tasks past their deadline, the most overdue
    first (served by ``idx_tasks_deadline``)."""
    return (
        select(*TASK_COLUMNS)
        .where(_T.deadline.is_not(None), _T.deadline < utc_statement_time(), _unfinished())
        .order_by(_T.deadline, _T.id)
        .limit(bindparam("limit"))
    )


def _lease_seconds() -> ColumnElement[Any]:
    """The lease a claim grants: ``:lease_seconds``, or the task's
    ``timeout_seconds`` when it has one, unless the claim asked for less
    (``:lease_cap``: the lease it asked for, or the longest lease)."""
    timeout = _T.timeout_seconds
    cap = bindparam("lease_cap", type_=Float())
    return case(
        (timeout.is_(None), bindparam("lease_seconds", type_=Float())),
        (timeout < cap, timeout),
        else_=cap,
    )


@functools.cache
def claim_statement(dialect: str, *, typed: TypeCount, agents: TypeCount = 0) -> Update:
    """Mark up to ``:limit`` claimable tasks running for ``:holder`` under a
    lease (see :func:`_lease_seconds`); returns them (see :mod:`.claim`)."""
    candidates = _in_claim_order([_T.id], typed=typed, agents=agents)
    values: dict[str, Any] = {
        "status": TaskStatus.RUNNING,
        "worker_id": bindparam("holder"),
        "lease_expires_at": utc_now_plus(_lease_seconds()),
        "started_at": _now(),
        # Set explicitly: the trigger keeps it, and SQLite's RETURNING shows it.
        "updated_at": _now(),
    }
    returned = [*TASK_COLUMNS, rescue_due()]
    return claim_statement_for(dialect, _TASKS, candidates, values, returned)


def release_requests(
    dialect: str, ids: Sequence[str], *, through_edges: bool = True
) -> list[tuple[Any, dict[str, Any]]]:
    """The statements that ready the blocked dependents of ``ids`` (or ``ids``
    themselves) whose prerequisites are all complete; the last one returns
    the ids it readied. PostgreSQL locks the dependents first (see above)."""
    single = len(ids) == 1
    params: dict[str, Any] = {"one_id": ids[0]} if single else {"ids": list(ids)}
    variant = {"through_edges": through_edges, "single": single}
    requests: list[tuple[Any, dict[str, Any]]] = []
    if dialect == "postgresql":
        requests.append((lock_blocked_statement(**variant), params))
    requests.append((release_statement(**variant), params))
    return requests


def _owned(which: ColumnElement[bool] | None = None) -> list[ColumnElement[bool]]:
    """``:task_key`` (or the tasks ``which`` picks) is running under
    ``:holder``'s live lease."""
    return [
        _T.id == bindparam("task_key") if which is None else which,
        _status_is(TaskStatus.RUNNING),
        _T.worker_id == bindparam("holder"),
        _T.lease_expires_at > _now(),
    ]


@functools.cache
def heartbeat_statement() -> Update:
    """Extend the lease by ``:lease_seconds``, never past the end of the
    task's timeout (``started_at`` plus ``timeout_seconds``)."""
    return update(_TASKS).where(*_owned()).values(**_extended()).returning(*TASK_COLUMNS)


@functools.cache
def heartbeat_many_statement() -> Update:
    """``heartbeat_statement`` for those of the tasks ``:ids`` that
    ``:holder`` holds; their ids."""
    owned = _owned(in_uuid_set(_T.id, "ids"))
    return update(_TASKS).where(*owned).values(**_extended()).returning(_T.id)


def _extended() -> dict[str, Any]:
    extended = _now_plus("lease_seconds")
    timeout_ends = utc_plus(_T.started_at, _T.timeout_seconds)
    lease = case(
        (_T.timeout_seconds.is_(None), extended),
        (extended < timeout_ends, extended),
        else_=timeout_ends,
    )
    return {"lease_expires_at": lease, "updated_at": _now()}


@functools.cache
def complete_statement(dialect: str) -> Update:
    """Complete ``:task_key`` with ``:outcome`` as its result.

    On SQLite the row ends with ``waited_on``: whether any task depends on
    it, so that a completion nobody waits for skips the release. PostgreSQL
    always runs the release: a dependent whose edge was committed while this
    UPDATE waited for the row is invisible to this statement's snapshot, and
    only the release's fresh snapshot sees it. (SQLite has one writer: no
    edge can appear during a write transaction.)
    """
    outcome = bindparam("outcome", type_=_T.result.type)
    return _completing(dialect, _owned(), outcome, TASK_COLUMNS)


@functools.cache
def complete_many_statement(dialect: str) -> Update:
    """Complete those of the tasks ``:ids`` that ``:holder`` holds, each with
    its result from ``:outcomes`` (a ``JSONByUUID``: task id to result), in
    one statement; their ids (and ``waited_on``, as ``complete_statement``)."""
    outcome = json_for_uuid("outcomes", _T.id)
    return _completing(dialect, _owned(in_uuid_set(_T.id, "ids")), outcome, (_T.id,))


def _completing(
    dialect: str, owned: list[ColumnElement[bool]], outcome: Any, returned: Sequence[Any]
) -> Update:
    values = {
        "status": TaskStatus.COMPLETED,
        "completed_at": _now(),
        "lease_expires_at": None,
        "result": outcome,
        "error": None,
        "updated_at": _now(),
    }
    if dialect != "postgresql":
        waited_on = exists().where(_EDGES.c.depends_on_id == _T.id).label("waited_on")
        returned = (*returned, waited_on)
    return update(_TASKS).where(*owned).values(**values).returning(*returned)


def must_release(dialect: str, completed: Any) -> bool:
    """Whether a completion (a row of ``complete_statement``) needs the
    release of dependents: always on PostgreSQL, on SQLite only when someone
    waits for the task (see ``complete_statement``)."""
    return dialect == "postgresql" or bool(completed.waited_on)


@functools.cache
def owned_attempts_statement() -> Select[Any]:
    """The attempt counters and priority facts of an owned task, locked
    (for ``fail``)."""
    return select(_T.retry_count, _T.max_retries, *FACT_COLUMNS).where(*_owned()).with_for_update()


@functools.cache
def retry_statement() -> Update:
    """Back to ready after ``:backoff_seconds`` seconds, one attempt more,
    with its score as of now (``:new_score``, ``:new_due``)."""
    values = {
        "status": TaskStatus.READY,
        "calculated_priority": bindparam("new_score"),
        "reprioritize_at": bindparam("new_due"),
        "retry_count": _T.retry_count + 1,
        "run_after": _now_plus("backoff_seconds"),
        "worker_id": None,
        "lease_expires_at": None,
        "error": bindparam("message"),
        "updated_at": _now(),
    }
    statement = update(_TASKS).where(_T.id == bindparam("task_key")).values(**values)
    return statement.returning(*TASK_COLUMNS)


@functools.cache
def fail_statement() -> Update:
    values = {
        "status": TaskStatus.FAILED,
        "completed_at": _now(),
        "lease_expires_at": None,
        "error": bindparam("message"),
        "updated_at": _now(),
    }
    statement = update(_TASKS).where(_T.id == bindparam("task_key")).values(**values)
    return statement.returning(*TASK_COLUMNS)


def _candidates(*, through_edges: bool, single: bool) -> Select[Any]:
    """Dependents of ``:ids`` (``through_edges``), or ``:ids`` themselves.

    ``single`` takes one id, ``:one_id``, instead. Either way the statement
    binds one parameter (the ids as one set: ``in_uuid_set``), so it is
    compiled once and runs on the direct path.
    """
    column = _EDGES.c.depends_on_id if through_edges else _TASKS.c.id
    match = column == bindparam("one_id") if single else in_uuid_set(column, "ids")
    return select(_EDGES.c.task_id if through_edges else _TASKS.c.id).where(match)


@functools.cache
def lock_blocked_statement(*, through_edges: bool, single: bool = False) -> Select[Any]:
    """Lock the blocked candidates in id order (PostgreSQL; a consistent order
    keeps two releasing transactions from deadlocking)."""
    return (
        select(_TASKS.c.id)
        .where(
            _status_is(TaskStatus.BLOCKED),
            _TASKS.c.id.in_(_candidates(through_edges=through_edges, single=single)),
        )
        .order_by(_TASKS.c.id)
        .with_for_update()
    )


@functools.cache
def release_statement(*, through_edges: bool, single: bool = False) -> Update:
    """Make ready every blocked candidate none of whose prerequisites is unfinished."""
    prerequisite = _TASKS.alias("prerequisite")
    waiting = exists().where(
        _EDGES.c.task_id == _TASKS.c.id,
        prerequisite.c.id == _EDGES.c.depends_on_id,
        prerequisite.c.status != literal_column(f"'{TaskStatus.COMPLETED.value}'"),
    )
    return (
        update(_TASKS)
        .where(
            _status_is(TaskStatus.BLOCKED),
            _TASKS.c.id.in_(_candidates(through_edges=through_edges, single=single)),
            ~waiting,
        )
        .values(status=TaskStatus.READY, updated_at=_now())
        .returning(*FACT_COLUMNS)
    )


def _closure(*, include_children: bool) -> CTE:
    """``:ids`` and the unfinished tasks reachable from them through
    dependents (and children). The walk does not pass through finished
    tasks; the start may be finished (a task that just failed)."""
    tasks, edges_table = _TASKS.c, _EDGES.c
    start = select(tasks.id.label("id")).where(tasks.id.in_(bindparam("ids", expanding=True)))
    reached = start.cte("reached", recursive=True)
    edges: list[Select[Any, Any]] = [
        select(edges_table.task_id.label("child"), edges_table.depends_on_id.label("parent"))
    ]
    if include_children:
        edges.append(
            select(tasks.id.label("child"), tasks.parent_task_id.label("parent")).where(
                tasks.parent_task_id.is_not(None)
            )
        )
    edge = union_all(*edges).subquery("edge") if len(edges) > 1 else edges[0].subquery("edge")
    step = (
        select(tasks.id)
        .join(edge, edge.c.child == tasks.id)
        .join(reached, reached.c.id == edge.c.parent)
        .where(_unfinished())
    )
    return reached.union(step)


@functools.cache
def cancel_statement(*, include_children: bool, keep_start: bool) -> Update:
    """Cancel the closure of ``:ids`` with ``:message`` (sparing the start
    tasks themselves when ``keep_start``)."""
    reached = _closure(include_children=include_children)
    criteria = [_TASKS.c.id.in_(select(reached.c.id)), _unfinished()]
    if keep_start:
        criteria.append(_TASKS.c.id.not_in(bindparam("ids", expanding=True)))
    return (
        update(_TASKS)
        .where(*criteria)
        .values(
            status=TaskStatus.CANCELLED,
            completed_at=_now(),
            lease_expires_at=None,
            error=bindparam("message"),
            updated_at=_now(),
        )
        .returning(_TASKS.c.id)
    )


def _backoff_seconds() -> ColumnElement[Any]:
    """The back-off before a task's next attempt (``backoff(retry_count + 1)``)."""
    steps = []
    attempt = 1
    while backoff(attempt) < RETRY_MAX_DELAY:
        delay = literal(backoff(attempt).total_seconds(), Float())
        steps.append((_T.retry_count == attempt - 1, delay))
        attempt += 1
    return case(*steps, else_=literal(RETRY_MAX_DELAY.total_seconds(), Float()))


def _lease_ran_out(table: Any = None) -> list[ColumnElement[bool]]:
    """Running, its lease over (by the statement's time: an index condition)."""
    table = _TASKS if table is None else table
    return [_status_is(TaskStatus.RUNNING, table), table.c.lease_expires_at < utc_statement_time()]


def rescue_due() -> ColumnElement[bool]:
    """Whether some running task's lease has run out (a seek of ``idx_tasks_lease``)."""
    expired = _TASKS.alias("expired")
    return exists().where(*_lease_ran_out(expired)).label("rescue_due")


@functools.cache
def rescue_statement(dialect: str) -> Update:
    """Up to ``:limit`` running tasks whose lease ran out, the longest
    expired first (skipping rows being rescued at the same moment): their
    attempt failed with error ``:message``; back to ready after the
    back-off while they have retries left, else failed. Returns their facts."""
    candidates = (
        select(_T.id)
        .where(*_lease_ran_out())
        .order_by(_T.lease_expires_at)
        .limit(bindparam("limit"))
    )
    retry = _T.retry_count < _T.max_retries
    status_type = _T.status.type
    values: dict[str, Any] = {
        "status": case(
            (retry, literal(TaskStatus.READY, status_type)),
            else_=literal(TaskStatus.FAILED, status_type),
        ),
        "retry_count": case((retry, _T.retry_count + 1), else_=_T.retry_count),
        "run_after": case((retry, utc_now_plus(_backoff_seconds())), else_=null()),
        "worker_id": case((retry, null()), else_=_T.worker_id),
        "completed_at": case((retry, null()), else_=_now()),
        "lease_expires_at": None,
        "error": bindparam("message"),
        "updated_at": _now(),
    }
    return claim_statement_for(dialect, _TASKS, candidates, values, FACT_COLUMNS)


def graph_lock_statement(dialect: str, *, wait: bool = True) -> Select[Any] | None:
    """The lock that serialises changes to the dependency graph, for the
    transaction (PostgreSQL); SQLite's single writer needs none. Without
    ``wait``, it returns whether the lock was free (and is now held)."""
    if dialect != "postgresql":
        return None
    return _graph_lock(wait)


@functools.cache
def _graph_lock(wait: bool) -> Select[Any]:
    key = bindparam("key", GRAPH_LOCK_KEY, BigInteger())
    return select(func.pg_advisory_xact_lock(key) if wait else func.pg_try_advisory_xact_lock(key))


@functools.cache
def statuses_statement(*, share_lock: bool) -> Select[Any]:
    """Ids, statuses and depths of the tasks ``:ids``; with ``share_lock`` they are
    held (``FOR SHARE`` on PostgreSQL) until the transaction ends."""
    statement = select(_T.id, _T.status, _T.dependency_depth).where(
        _T.id.in_(bindparam("ids", expanding=True))
    )
    return statement.with_for_update(read=True) if share_lock else statement


@functools.cache
def edge_statement() -> Select[Any]:
    """1 if ``:task_id`` already waits for ``:depends_on_id``."""
    edges = _EDGES.c
    return select(literal_column("1")).where(
        edges.task_id == bindparam("task_id"), edges.depends_on_id == bindparam("depends_on_id")
    )


@functools.cache
def insert_edges_statement() -> Insert:
    """One edge per parameter row (``task_id``, ``depends_on_id``, ``created_at``)."""
    return insert(_EDGES)


@functools.cache
def waiting_statement() -> Select[Any]:
    """The ids of the tasks that wait for ``:task_key``."""
    edges = _EDGES.c
    return select(edges.task_id).where(edges.depends_on_id == bindparam("task_key"))


@functools.cache
def give_back_statement() -> Update:
    """Ready again, as if never claimed: those of the tasks ``:ids`` that
    ``:holder`` holds (a worker that claimed them ahead and will not run
    them). Their facts do not change: running and ready are both
    unfinished. Returns their ids."""
    values = {
        "status": TaskStatus.READY,
        "worker_id": None,
        "lease_expires_at": None,
        "started_at": None,
        "updated_at": _now(),
    }
    return (
        update(_TASKS)
        .where(
            _T.id.in_(bindparam("ids", expanding=True)),
            _status_is(TaskStatus.RUNNING),
            _T.worker_id == bindparam("holder"),
        )
        .values(**values)
        .returning(_T.id)
    )


@functools.cache
def delete_unlinked_statement(dialect: str) -> Select[Any] | ReturningDelete[Any]:
    """Delete the task ``:task_key`` if no edge touches it (it waits for no
    task, and none waits for it): the one delete that changes no other
    task's facts, so it needs nothing else. Its one row holds something
    true if the task went; none or false if not. On PostgreSQL, where no
    edge may appear meanwhile only under the graph's lock, a function of
    the schema's (revision 0006) takes the lock, then deletes: one
    statement all the same."""
    if dialect == "postgresql":
        key = bindparam("task_key", type_=_T.id.type)
        return select(func.orchestrator_delete_unlinked_task(key))
    return delete(_TASKS).where(*_unlinked()).returning(_T.id)


@functools.cache
def delete_held_unlinked_statement() -> Delete:
    """``delete_unlinked_statement`` as an ORM-enabled delete, for a unit
    whose session holds the task: the session marks its object deleted (a
    rollback gives it back)."""
    return delete(Task).where(*_unlinked())


def _unlinked() -> list[ColumnElement[bool]]:
    edges = _EDGES.c
    key: BindParameter[str] = bindparam("task_key", type_=_T.id.type)
    linked = select(edges.task_id).where(or_(edges.task_id == key, edges.depends_on_id == key))
    return [_T.id == key, ~linked.exists()]


@functools.cache
def linked_statement(*, prerequisites: bool) -> Select[Any]:
    """Every column of the tasks ``:task_key`` waits for (``prerequisites``)
    or that wait for it, oldest first."""
    edges = _EDGES.c
    near, far = edges.task_id, edges.depends_on_id
    if not prerequisites:
        near, far = far, near
    return (
        select(*TASK_COLUMNS)
        .join(_EDGES, far == _T.id)
        .where(near == bindparam("task_key"))
        .order_by(_T.created_at, _T.id)
    )


@functools.cache
def tasks_statement() -> Select[Any]:
    """Every column of the tasks ``:ids``."""
    return select(*TASK_COLUMNS).where(_T.id.in_(bindparam("ids", expanding=True)))


@functools.cache
def stats_statement() -> Select[Any]:
    """Task counts per type and status."""
    return select(_T.task_type, _T.status, func.count()).group_by(_T.task_type, _T.status)
