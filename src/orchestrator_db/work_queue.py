"""The work queue's operations, written once for units of work and queue workers.

Each operation runs the queue's statements (:mod:`orchestrator_db.sql.queue`)
on an :class:`~orchestrator_db._execution.executor.Executor`: a unit of
work's (``uow.tasks``), whose rows become the unit's objects, or a queue
worker's (:class:`~orchestrator_db.queue_worker.QueueWorker`), whose rows
become detached objects. The guarantees are the statements', so they are
the same either way:

* a claim hands ready tasks to one worker under a lease, highest priority
  first, then oldest; no task is ever handed out twice;
* only the worker holding a live lease may heartbeat, complete or fail a
  task; anyone else gets :class:`~orchestrator_db.errors.LeaseLostError`,
  which says why;
* completing a task readies every dependent whose prerequisites are now all
  complete, in the same transaction;
* a failed attempt is retried after an exponential back-off while
  ``retry_count < max_retries``; then the task fails and its unfinished
  dependents are cancelled (they never ran);
* a lease that runs out is a failed attempt (``timed out``), seen to by
  the next claim (:func:`rescue`).

Arguments are checked before any statement is sent.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any, NoReturn

from orchestrator_db import task_graph, values
from orchestrator_db._execution import signals
from orchestrator_db._execution.executor import Executor
from orchestrator_db._execution.rows import row_layout
from orchestrator_db.errors import LeaseLostError, NotFoundError, ValidationError
from orchestrator_db.models.task import (
    FINISHED_TASK_STATUSES,
    TIMED_OUT,
    Task,
    TaskStatus,
    backoff,
)
from orchestrator_db.sql import IDS_PER_STATEMENT
from orchestrator_db.sql import queue as q
from orchestrator_db.types import canonical_uuid

#: How long a claim holds a task unless the worker says otherwise.
DEFAULT_LEASE = timedelta(minutes=5)
#: How many expired leases one claim rescues at most.
RESCUE_BATCH = 100

_ENTITY = "Task"


def lease_seconds(lease: timedelta | None) -> float:
    """``lease`` (the default when ``None``) in seconds, checked."""
    lease = DEFAULT_LEASE if lease is None else lease
    return values.duration(lease, "lease", positive=True).total_seconds()


def _worker(worker_id: Any) -> str:
    return values.text(worker_id, "worker_id", min_length=1, max_length=values.MAX_INDEXED_TEXT)


def _task_key(task_id: Any) -> str:
    return canonical_uuid(task_id, field="task_id")


def lease_lost(task: Task, worker_id: str) -> LeaseLostError:
    """Why ``worker_id`` does not hold ``task`` (an owner's update matched nothing)."""
    if task.status is not TaskStatus.RUNNING:
        return LeaseLostError(task.id, worker_id, f"the task is {task.status.value}")
    if task.worker_id != worker_id:
        return LeaseLostError(task.id, worker_id, f"it is held by {task.worker_id!r}")
    return LeaseLostError(task.id, worker_id, f"the lease expired at {task.lease_expires_at}")


def _claim_order(task: Task) -> tuple[Any, ...]:
    """Sort key of claimed tasks (RETURNING gives no order): ``q.CLAIM_ORDER``."""
    return (-task.calculated_priority, task.created_at, task.id)


# ------------------------------------------------------------ the worker's


async def claim(
    ex: Executor,
    worker_id: str,
    limit: int,
    *,
    task_types: Collection[str] | None = None,
    agent_types: Collection[str] | None = None,
    lease: timedelta | None = None,
    default_lease: timedelta = DEFAULT_LEASE,
) -> list[Task]:
    """Up to ``limit`` ready tasks, in claim order, running under one lease."""
    request = claim_request(
        ex.backend.name,
        worker_id,
        limit,
        task_types=task_types,
        agent_types=agent_types,
        lease=lease,
        default_lease=default_lease,
    )
    return await claimed(ex, request)


ClaimRequest = tuple[Any, dict[str, Any]]


def claim_request(
    dialect: str,
    worker_id: str,
    limit: int,
    *,
    task_types: Collection[str] | None = None,
    agent_types: Collection[str] | None = None,
    lease: timedelta | None = None,
    default_lease: timedelta = DEFAULT_LEASE,
) -> ClaimRequest:
    """The claim statement and its parameters, the arguments checked (a
    queue worker makes its own once).

    The lease is ``lease`` (else ``default_lease``); a task with a
    ``timeout_seconds`` runs under a lease of its timeout instead, unless
    ``lease`` asks for less."""
    seconds = lease_seconds(default_lease if lease is None else lease)
    params, typed, agents = filtered(task_types=task_types, agent_types=agent_types)
    params.update(
        holder=_worker(worker_id),
        lease_seconds=seconds,
        lease_cap=values.MAX_DURATION.total_seconds() if lease is None else seconds,
        limit=values.count(limit, "limit", minimum=1),
    )
    return q.claim_statement(dialect, typed=typed, agents=agents), params


def type_filters(
    *, task_types: Collection[str] | None, agent_types: Collection[str] | None
) -> dict[str, list[str]]:
    """A claim's type filters, checked: ``task_types`` and ``agent_types``,
    each only when it names at least one type."""
    filters: dict[str, list[str]] = {}
    for name, given in (("task_types", task_types), ("agent_types", agent_types)):
        if given is not None:
            chosen = values.texts(given, name, max_length=values.MAX_INDEXED_TEXT)
            if chosen:
                filters[name] = sorted(set(chosen))
    return filters


def filtered(
    *, task_types: Collection[str] | None, agent_types: Collection[str] | None
) -> tuple[dict[str, Any], q.TypeCount, q.TypeCount]:
    """The parameters of a claim's type filters, checked (see
    :func:`bound_filters`), and the statement's ``typed`` and ``agents``."""
    filters = type_filters(task_types=task_types, agent_types=agent_types)
    return (
        bound_filters(filters),
        q.type_count(filters.get("task_types")),
        q.type_count(filters.get("agent_types")),
    )


def bound_filters(filters: dict[str, list[str]]) -> dict[str, Any]:
    """The parameters of ``filters`` for statements built with their
    :func:`~orchestrator_db.sql.queue.type_count`: a filter of one type
    binds the type itself."""
    return {name: types[0] if len(types) == 1 else types for name, types in filters.items()}


async def claimed(ex: Executor, request: ClaimRequest) -> list[Task]:
    """The tasks a claim request marks running, in claim order."""
    statement, params = request
    rows = await ex.rows(statement, params, entity=_ENTITY)
    if (not rows or rows[0].rescue_due) and await task_graph.try_lock(ex):
        # A lease ran out somewhere. The claimed rows are locked already, so
        # the graph lock is only taken if free: else the next claim rescues.
        await rescue(ex)
    tasks = [ex.adopt(Task, row, refresh=True) for row in rows]
    tasks.sort(key=_claim_order)
    return tasks


async def heartbeat(
    ex: Executor, task_id: str, worker_id: str, *, lease: timedelta | None = None
) -> Task:
    """Extend the lease of a task ``worker_id`` holds."""
    key = _task_key(task_id)
    params = {"task_key": key, "holder": _worker(worker_id), "lease_seconds": lease_seconds(lease)}
    rows = await ex.rows(q.heartbeat_statement(), params, entity=_ENTITY, key=key)
    if not rows:
        await explain_not_owned(ex, key, worker_id)
    return ex.adopt(Task, rows[0], refresh=True)


async def heartbeat_many(
    ex: Executor, worker_id: str, task_ids: Collection[str], *, lease: timedelta | None = None
) -> list[str]:
    """Extend the leases of those of ``task_ids`` that ``worker_id`` holds,
    in one statement; the ids it does not hold (left as they are)."""
    keys = {_task_key(task_id): task_id for task_id in task_ids}
    if not keys:
        return []
    params = {
        "ids": list(keys),
        "holder": _worker(worker_id),
        "lease_seconds": lease_seconds(lease),
    }
    held = {
        str(row.id) for row in await ex.rows(q.heartbeat_many_statement(), params, entity=_ENTITY)
    }
    return [task_id for key, task_id in keys.items() if key not in held]


async def complete(ex: Executor, task_id: str, worker_id: str, result: Any = None) -> Any:
    """Complete a task ``worker_id`` holds, with ``result``, and ready its
    dependents whose prerequisites are now all complete; the task's row."""
    key = _task_key(task_id)
    row = await _completed(ex, key, worker_id, result)
    if q.must_release(ex.backend.name, row):
        await release(ex, [key])
    # A task claimed was ready: every task it waited for has completed, so
    # it held back no blocking count, and none changes.
    return row


async def complete_many(
    ex: Executor, worker_id: str, results: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """Complete the tasks of ``results`` (id: result) that ``worker_id``
    holds, then ready their dependents in one release; the ids of those
    completed, and of those it does not hold (left as they are), as
    ``results`` names them."""
    outcomes: dict[str, Any] = {}
    named: dict[str, str] = {}  # key: the id as results names it
    for task_id, result in results.items():
        key = _task_key(task_id)
        if key in outcomes:
            raise ValidationError(f"results name task {key} twice", field="results")
        outcomes[key] = None if result is None else values.json_value(result, "result")
        named[key] = task_id
    if not outcomes:
        return [], []
    params = {"ids": list(outcomes), "holder": _worker(worker_id), "outcomes": outcomes}
    completed = await ex.rows(q.complete_many_statement(ex.backend.name), params, entity=_ENTITY)
    done = {str(row.id) for row in completed}
    await release(ex, [str(row.id) for row in completed if q.must_release(ex.backend.name, row)])
    await ex.refresh_loaded(Task, done)  # objects a unit holds (a queue worker holds none)
    # What it did not change it leaves as it was: not held (any more), or gone.
    completed_ids = [task_id for key, task_id in named.items() if key in done]
    return completed_ids, [task_id for key, task_id in named.items() if key not in done]


async def give_back(ex: Executor, worker_id: str, task_ids: Sequence[str]) -> list[str]:
    """Ready again the tasks of ``task_ids`` that ``worker_id`` holds but
    will not run (claimed ahead), no attempt counted; their ids."""
    keys = [_task_key(task_id) for task_id in task_ids]
    given: list[str] = []
    for start in range(0, len(keys), IDS_PER_STATEMENT):
        params = {"ids": keys[start : start + IDS_PER_STATEMENT], "holder": _worker(worker_id)}
        rows = await ex.rows(q.give_back_statement(), params, entity=_ENTITY)
        given.extend(str(row[0]) for row in rows)
    if given:
        await ex.announce(signals.TASKS)
    return given


async def _completed(ex: Executor, key: str, worker_id: str, result: Any) -> Any:
    """The row of the task ``key`` completed, if ``worker_id`` holds it."""
    outcome = None if result is None else values.json_value(result, "result")
    params = {"task_key": key, "holder": _worker(worker_id), "outcome": outcome}
    rows = await ex.rows(q.complete_statement(ex.backend.name), params, entity=_ENTITY, key=key)
    if not rows:
        await explain_not_owned(ex, key, worker_id)
    return rows[0]


async def fail(ex: Executor, task_id: str, worker_id: str, error: str) -> Task:
    """Record a failed attempt of a task ``worker_id`` holds: back to ready
    after a back-off while it has retries left, else failed, its unfinished
    dependents cancelled."""
    key = _task_key(task_id)
    error = values.text(error, "error")
    owned = {"task_key": key, "holder": _worker(worker_id)}
    # Before the row lock: failing for good changes the graph (see task_graph.lock).
    await task_graph.lock(ex)
    attempts = await ex.rows(q.owned_attempts_statement(), owned, entity=_ENTITY, key=key)
    if not attempts:
        await explain_not_owned(ex, key, worker_id)
    (facts,) = attempts
    if facts.retry_count < facts.max_retries:
        delay = backoff(facts.retry_count + 1).total_seconds()
        params = {
            "task_key": key,
            "message": error,
            "backoff_seconds": delay,
            **task_graph.requeued_score(facts),
        }
        (row,) = await ex.rows(q.retry_statement(), params, entity=_ENTITY, key=key)
        return ex.adopt(Task, row, refresh=True)
    params = {"task_key": key, "message": error}
    (row,) = await ex.rows(q.fail_statement(), params, entity=_ENTITY, key=key)
    task = ex.adopt(Task, row, refresh=True)
    await after_finish(ex, task)
    return task


async def explain_not_owned(ex: Executor, task_id: str, worker_id: str) -> NoReturn:
    """Raise the error that says why ``worker_id`` does not hold the task."""
    by_key = row_layout(Task).by_key
    rows = await ex.rows(by_key, {"key_0": task_id}, entity=_ENTITY, key=task_id)
    if not rows:
        raise NotFoundError(_ENTITY, task_id)
    raise lease_lost(ex.adopt(Task, rows[0], refresh=True), worker_id)


# --------------------------------------------------- consequences of an end


async def after_finish(ex: Executor, task: Task) -> None:
    """Consequences of a task ending, whichever path ended it: its
    dependents are released or cancelled, and it (with any it cancelled)
    leaves the blocking counts of the tasks it waited for."""
    cancelled: list[str] = []
    if task.status is TaskStatus.COMPLETED:
        await release(ex, [task.id])
    elif task.status is TaskStatus.FAILED:
        reason = f"cancelled: prerequisite {task.id} failed"
        cancelled = await cancel_closure(ex, [task.id], reason, keep_start=True)
    elif task.status is TaskStatus.CANCELLED:
        reason = f"cancelled with task {task.id}"
        cancelled = await cancel_closure(
            ex, [task.id], reason, keep_start=True, include_children=True
        )
    if task.status in FINISHED_TASK_STATUSES:
        await task_graph.finished(ex, [task.id, *cancelled])


async def release(ex: Executor, ids: Sequence[str], *, through_edges: bool = True) -> None:
    """Ready the blocked dependents of ``ids`` (or ``ids`` themselves) whose
    prerequisites are all complete."""
    if not ids:
        return
    *locks, (statement, params) = q.release_requests(
        ex.backend.name, ids, through_edges=through_edges
    )
    for lock, lock_params in locks:
        if not await ex.rows(lock, lock_params, entity=_ENTITY):
            # None blocked: the release would change nothing. A dependent
            # added from now on waits for this transaction (as after the
            # release), then sees its prerequisites as they end.
            return
    readied = await ex.rows(statement, params, entity=_ENTITY)
    if readied:
        await ex.announce(signals.TASKS)
    await ex.refresh_loaded(Task, [str(row.id) for row in readied])
    # Their deadlines' urgency is brought up to date as they become claimable.
    await task_graph.rescore(ex, [row for row in readied if row.deadline is not None])


async def cancel_closure(
    ex: Executor,
    start: Sequence[str],
    reason: str,
    *,
    keep_start: bool = False,
    include_children: bool = False,
) -> list[str]:
    """Cancel ``start``'s unfinished dependents (and children), transitively;
    the ids cancelled. (The caller takes them out of the blocking counts:
    :func:`task_graph.finished`.)"""
    statement = q.cancel_statement(include_children=include_children, keep_start=keep_start)
    return await changed(ex, statement, {"ids": list(start), "message": reason})


async def rescue(ex: Executor, *, limit: int = RESCUE_BATCH) -> int:
    """Count the attempt of up to ``limit`` running tasks whose lease ran
    out as failed with error ``timed out``: back to ready after the usual
    back-off while they have retries left, else failed, their unfinished
    dependents cancelled. Returns how many tasks were rescued.

    Every claim runs it when a lease has run out (the claim's rows say so,
    or it found nothing ready): a dead worker's task comes back with no one
    calling :func:`requeue_expired`. Its worker, if alive, has lost the
    lease: whatever it tries next raises ``LeaseLostError``.
    """
    params = {"limit": limit, "message": TIMED_OUT}
    rows = await ex.rows(q.rescue_statement(ex.backend.name), params, entity=_ENTITY)
    if not rows:
        return 0
    ex.notices.rescued += len(rows)  # logged and counted once committed
    await ex.refresh_loaded(Task, [str(row.id) for row in rows])
    requeued = [row for row in rows if row.status == TaskStatus.READY]
    await task_graph.rescore(ex, requeued)  # queued again: scored as of now
    failed = [str(row.id) for row in rows if row.status == TaskStatus.FAILED]
    if failed:
        reason = "cancelled: a prerequisite timed out with no retries left"
        cancelled = await cancel_closure(ex, failed, reason, keep_start=True)
        await task_graph.finished(ex, [*failed, *cancelled])
    return len(rows)


async def requeue_expired(ex: Executor) -> int:
    """:func:`rescue` every running task whose lease ran out, in batches;
    returns how many tasks were rescued."""
    await task_graph.lock(ex)
    total = 0
    while True:
        rescued = await rescue(ex, limit=IDS_PER_STATEMENT)
        total += rescued
        if rescued < IDS_PER_STATEMENT:
            return total


async def changed(ex: Executor, statement: Any, params: dict[str, Any]) -> list[str]:
    """Run an ``UPDATE ... RETURNING id`` of tasks; refresh the objects held
    for the rows it changed (its values may be SQL, such as the database's
    clock); return their ids."""
    keys = [str(row[0]) for row in await ex.rows(statement, params, entity=_ENTITY)]
    await ex.refresh_loaded(Task, keys)
    return keys
