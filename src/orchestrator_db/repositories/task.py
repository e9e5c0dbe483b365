"""Tasks: filters, the status lifecycle, and the work queue.

The queue in brief (the SQL lives in :mod:`.task_queue`):

* ``submit`` queues a task, ``blocked`` until its prerequisites complete,
  ``ready`` otherwise;
* ``claim_next`` / ``claim_batch`` hand ready tasks to a worker under a
  lease, highest priority first, then oldest; no task is ever handed out
  twice, however many workers, processes or machines claim at once;
* the worker extends the lease with ``heartbeat`` and ends with ``complete``
  (which readies the dependents whose prerequisites are now all complete) or
  ``fail`` (retried with exponential back-off while ``retry_count <
  max_retries``, else failed);
* ``requeue_expired`` returns tasks of dead workers to the queue;
* only the worker holding a live lease may heartbeat, complete or fail a
  task; anyone else gets :class:`LeaseLostError`.

When a task fails for good or is cancelled, its unfinished dependents are
**cancelled** (not failed: they never ran), with the reason in ``error``.
``cancel`` also cancels the task's children (``parent_task_id``).
Delivery is at least once: a worker that dies after finishing its work but
before ``complete`` sees its task run again.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, NoReturn

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm.attributes import instance_state

from orchestrator_db.errors import (
    DependencyCycleError,
    InvalidTransitionError,
    LeaseLostError,
    NotFoundError,
    ValidationError,
)
from orchestrator_db.models.task import (
    FINISHED_TASK_STATUSES,
    TASK_TRANSITIONS,
    Task,
    TaskDependency,
    TaskStatus,
)
from orchestrator_db.repositories import task_queue as q
from orchestrator_db.repositories.base import Repository
from orchestrator_db.types import canonical_uuid, utc_now


def parse_task_status(value: TaskStatus | str) -> TaskStatus:
    try:
        return TaskStatus(value)
    except ValueError:
        raise ValidationError(
            f"unknown task status {value!r}; expected one of: "
            f"{', '.join(s.value for s in TaskStatus)}",
            field="status",
        ) from None


def lease_lost(task: Task, worker_id: str) -> LeaseLostError:
    """Why ``worker_id`` does not hold ``task`` (an owner's update matched nothing)."""
    if task.status is not TaskStatus.RUNNING:
        return LeaseLostError(task.id, worker_id, f"the task is {task.status.value}")
    if task.worker_id != worker_id:
        return LeaseLostError(task.id, worker_id, f"it is held by {task.worker_id!r}")
    return LeaseLostError(task.id, worker_id, f"the lease expired at {task.lease_expires_at}")


@dataclass(frozen=True)
class QueueStats:
    """Task counts per status, and per task type and status."""

    by_status: dict[TaskStatus, int] = field(default_factory=dict)
    by_type: dict[str, dict[TaskStatus, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


class TaskRepository(Repository[Task]):
    model_type = Task
    named_filters = {
        "created_after": lambda value: Task.created_at >= value,
        "created_before": lambda value: Task.created_at < value,
    }
    protected_fields = frozenset(
        {"status", "started_at", "completed_at", "error", "worker_id", "lease_expires_at"}
    )

    #: Lease of a claim when the worker does not say.
    default_lease: ClassVar[timedelta] = q.DEFAULT_LEASE
    #: Back-off before retry n (1-based) is ``retry_base_delay * 2 ** (n - 1)``,
    #: capped at ``retry_max_delay``.
    retry_base_delay: ClassVar[timedelta] = timedelta(seconds=2)
    retry_max_delay: ClassVar[timedelta] = timedelta(minutes=10)

    # ------------------------------------------------------- manual lifecycle

    async def update_status(
        self, task_id: str, status: TaskStatus | str, *, error: str | None = None
    ) -> Task:
        """Move a task along its manual lifecycle and stamp the matching time.

        pending -> running sets ``started_at``; running -> completed | failed
        and pending | running -> cancelled set ``completed_at``. ``error`` is
        recorded for failed and cancelled tasks. Anything else raises
        :class:`InvalidTransitionError`. The row is locked while it is checked,
        so two concurrent moves cannot both succeed. Ending a task has the
        same effect on its dependents as the queue's ``complete`` and
        ``fail``: they are released, or cancelled.
        """
        target = parse_task_status(status)
        if error is not None and target not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            raise ValidationError("an error can be recorded only when failing or cancelling")
        task = await self.get(task_id, for_update=True)
        if task.status not in TASK_TRANSITIONS.get(target, frozenset()):
            raise InvalidTransitionError(self.entity, task_id, task.status.value, target.value)
        now = utc_now()
        task.status = target
        if target is TaskStatus.RUNNING:
            task.started_at = now
        else:
            task.completed_at = now
            task.error = error
        await self._flush_and_refresh(task, task_id)
        await self._after_finish(task)
        return task

    # ---------------------------------------------------------- dependencies

    async def submit(self, task: Task, *, depends_on: Iterable[str] = ()) -> Task:
        """Queue ``task``: ``blocked`` while a prerequisite is unfinished, else
        ``ready``. A new task is added; a stored ``pending`` one is queued.

        A prerequisite that does not exist raises :class:`NotFoundError`; the
        task itself as a prerequisite raises :class:`DependencyCycleError`.
        If a prerequisite already failed or was cancelled, the task is stored
        ``cancelled``: it could never run.
        """
        self._check_instance(task)
        self._prepare(task)
        prerequisites = self._ids(depends_on)
        stored = instance_state(task).persistent
        if stored and task.status is not TaskStatus.PENDING:
            raise InvalidTransitionError(self.entity, task.id, task.status.value, "submitted")
        if task.id in prerequisites:
            raise DependencyCycleError(task.id, task.id)
        statuses = await self._statuses(prerequisites, share_lock=True)
        now = utc_now()
        self._queue_status(task, [statuses[p] for p in prerequisites], now, prerequisites)
        if not stored:
            await self.add(task)
        if prerequisites:
            await self._insert_edges([(task.id, p) for p in prerequisites])
        if stored:
            await self._flush_and_refresh(task, task.id)
        return task

    async def submit_many(
        self, tasks: Sequence[Task], *, dependencies: Mapping[str, Iterable[str]] | None = None
    ) -> builtins.list[Task]:
        """Queue many new tasks with one bulk insert.

        ``dependencies`` maps a task id to its prerequisites, which may be
        tasks of the batch or stored tasks. A cycle inside the batch raises
        :class:`DependencyCycleError` and nothing is written.
        """
        for task in tasks:
            self._check_instance(task)
            self._prepare(task)
        batch = {task.id: task for task in tasks}
        edges = {
            canonical_uuid(task_id): self._ids(prerequisites)
            for task_id, prerequisites in (dependencies or {}).items()
        }
        unknown = set(edges) - set(batch)
        if unknown:
            raise ValidationError(
                f"dependencies name tasks that are not in the batch: {sorted(unknown)[:3]}"
            )
        order = self._topological(edges, set(batch))
        external = {p for prereqs in edges.values() for p in prereqs if p not in batch}
        statuses = await self._statuses(external, share_lock=True)
        now = utc_now()
        for task_id in order:
            prerequisites = edges.get(task_id, [])
            known = [statuses[p] if p in statuses else batch[p].status for p in prerequisites]
            self._queue_status(batch[task_id], known, now, prerequisites)
            statuses[task_id] = batch[task_id].status
        added = await self.add_many(tasks)
        pairs = [(task_id, p) for task_id, prereqs in edges.items() for p in prereqs]
        if pairs:
            await self._insert_edges(pairs)
        return added

    async def add_dependency(self, task_id: str, depends_on_id: str) -> bool:
        """Make ``task_id`` wait for ``depends_on_id``; ``False`` if it already did.

        Refused with :class:`DependencyCycleError` if ``depends_on_id``
        already depends on ``task_id`` (directly or through others), and with
        :class:`InvalidTransitionError` if the task is running or finished.
        A ready task becomes blocked until the new prerequisite completes.
        """
        task_id = canonical_uuid(task_id, field="task_id")
        depends_on_id = canonical_uuid(depends_on_id, field="depends_on_id")
        if task_id == depends_on_id:
            raise DependencyCycleError(task_id, depends_on_id)
        await self._lock_graph()
        task = await self.get(task_id, for_update=True)
        if task.status is TaskStatus.RUNNING or task.status in FINISHED_TASK_STATUSES:
            raise InvalidTransitionError(self.entity, task_id, task.status.value, "blocked")
        prerequisite = await self.get(depends_on_id)
        path = {"start": depends_on_id, "goal": task_id}
        if await self._scalar(q.path_statement(), path) is not None:
            raise DependencyCycleError(task_id, depends_on_id)
        already = await self._scalar(
            select(TaskDependency.task_id).where(
                TaskDependency.task_id == task_id, TaskDependency.depends_on_id == depends_on_id
            )
        )
        if already is not None:
            return False
        await self._insert_edges([(task_id, depends_on_id)])
        if task.status in (TaskStatus.READY, TaskStatus.BLOCKED):
            now = utc_now()
            queued = self._queue_status(task, [prerequisite.status], now, [depends_on_id])
            await self._flush_and_refresh(task, task_id)
            if queued is TaskStatus.CANCELLED:
                await self._cancel_closure([task_id], str(task.error), keep_start=True)
        return True

    async def dependencies_of(self, task_id: str) -> builtins.list[Task]:
        """The tasks ``task_id`` waits for."""
        return await self._linked(task_id, prerequisites=True)

    async def dependents_of(self, task_id: str) -> builtins.list[Task]:
        """The tasks waiting for ``task_id``."""
        return await self._linked(task_id, prerequisites=False)

    async def _linked(self, task_id: str, *, prerequisites: bool) -> builtins.list[Task]:
        """The far ends of ``task_id``'s edges, oldest first."""
        near, far = TaskDependency.task_id, TaskDependency.depends_on_id
        if not prerequisites:
            near, far = far, near
        statement = (
            select(Task).join(TaskDependency, far == Task.id).where(near == task_id)
        ).order_by(Task.created_at, Task.id)
        return await self._scalars(statement)

    # ----------------------------------------------------------------- claim

    async def claim_next(
        self,
        worker_id: str,
        *,
        task_types: Collection[str] | None = None,
        lease: timedelta | None = None,
    ) -> Task | None:
        """The ready task with the highest priority (oldest first), now running
        under ``worker_id``'s lease; ``None`` if nothing is ready."""
        claimed = await self.claim_batch(worker_id, 1, task_types=task_types, lease=lease)
        return claimed[0] if claimed else None

    async def claim_batch(
        self,
        worker_id: str,
        limit: int,
        *,
        task_types: Collection[str] | None = None,
        lease: timedelta | None = None,
    ) -> builtins.list[Task]:
        """Up to ``limit`` ready tasks, in claim order, running under one lease."""
        lease = self.default_lease if lease is None else lease
        statement, params = q.claim_request(self._dialect, worker_id, limit, task_types, lease)
        claimed = await self._tasks(statement, params)
        claimed.sort(key=q.claim_order)
        return claimed

    async def heartbeat(
        self, task_id: str, worker_id: str, *, lease: timedelta | None = None
    ) -> Task:
        """Extend the lease of a task ``worker_id`` holds; returns the task."""
        params = {"lease_seconds": q.lease_seconds(self.default_lease if lease is None else lease)}
        return await self._owned_update(q.heartbeat_statement(), task_id, worker_id, params)

    async def complete(self, task_id: str, worker_id: str, result: Any = None) -> Task:
        """Mark a task ``worker_id`` holds completed, store ``result``, and make
        ready every dependent whose prerequisites are now all complete, in the
        same transaction."""
        return self._adopt(await self._complete(task_id, worker_id, result), refresh=True)

    async def complete_and_claim(
        self,
        task_id: str,
        worker_id: str,
        result: Any = None,
        *,
        task_types: Collection[str] | None = None,
        lease: timedelta | None = None,
    ) -> Task | None:
        """Complete a task ``worker_id`` holds and claim its next one, in one
        transaction: a worker loop then commits once per task instead of twice.
        Returns the next task, or ``None`` if nothing is ready."""
        # The finished task is not returned: only an object already loaded
        # for it is brought up to date.
        self._loaded(await self._complete(task_id, worker_id, result), refresh=True)
        return await self.claim_next(worker_id, task_types=task_types, lease=lease)

    async def fail(self, task_id: str, worker_id: str, error: str) -> Task:
        """Record a failed attempt of a task ``worker_id`` holds.

        While ``retry_count < max_retries`` the task goes back to ``ready``
        after an exponential back-off (``run_after``); then it is ``failed``
        and its unfinished dependents are cancelled.
        """
        task_id = canonical_uuid(task_id, field="task_id")
        owned = {"task_key": task_id, "holder": worker_id}
        attempts = (await self._execute(q.owned_attempts_statement(), owned)).first()
        if attempts is None:
            await self._explain_not_owned(task_id, worker_id)
        retry_count, max_retries = attempts
        if retry_count < max_retries:
            backoff = self.backoff(retry_count + 1).total_seconds()
            params = {"task_key": task_id, "message": error, "backoff_seconds": backoff}
            (task,) = await self._tasks(q.retry_statement(), params)
        else:
            params = {"task_key": task_id, "message": error}
            (task,) = await self._tasks(q.fail_statement(), params)
            await self._after_finish(task)
        return task

    async def cancel(self, task_id: str, *, reason: str | None = None) -> int:
        """Cancel a task, its unfinished dependents and its children,
        transitively; returns how many tasks were cancelled."""
        task = await self.get(task_id, for_update=True)
        if task.status in FINISHED_TASK_STATUSES:
            raise InvalidTransitionError(self.entity, task_id, task.status.value, "cancelled")
        why = reason or f"cancelled with task {task.id}"
        return await self._cancel_closure([task.id], why, include_children=True)

    async def requeue_expired(self) -> int:
        """Return running tasks whose lease expired to ``ready`` (a lost worker
        counts as a failed attempt), or fail them when out of retries (their
        dependents are cancelled). Returns how many tasks were handled."""
        requeued = await self._changed(q.expired_statement(retryable=True), {})
        failed = await self._changed(q.expired_statement(retryable=False), {})
        if failed:
            reason = "cancelled: a prerequisite failed (lease expired, no retries left)"
            await self._cancel_closure(failed, reason, keep_start=True)
        return len(requeued) + len(failed)

    async def ready(
        self, limit: int = 100, *, task_types: Collection[str] | None = None
    ) -> builtins.list[Task]:
        """Claimable tasks in claim order (tasks waiting out a retry back-off
        are not claimable yet)."""
        params: dict[str, Any] = {"limit": limit}
        if task_types:
            params["task_types"] = sorted(task_types)
        statement = q.ready_statement(typed=bool(task_types))
        return await self._tasks(statement, params, refresh=False)

    async def stats(self) -> QueueStats:
        """Task counts per status, and per task type and status."""
        statement = select(Task.task_type, Task.status, func.count()).group_by(
            Task.task_type, Task.status
        )
        rows = (await self._execute(statement)).all()
        by_status: dict[TaskStatus, int] = {}
        by_type: dict[str, dict[TaskStatus, int]] = {}
        for task_type, status, count in rows:
            by_status[status] = by_status.get(status, 0) + count
            by_type.setdefault(task_type, {})[status] = count
        return QueueStats(by_status, by_type)

    async def delete(self, key: Any) -> bool:
        """Delete a task; dependents waiting only for it become ready."""
        waiting = [
            str(task_id)
            for task_id in (
                await self._execute(
                    select(TaskDependency.task_id).where(TaskDependency.depends_on_id == key)
                )
            ).scalars()
        ]
        deleted = await super().delete(key)
        if deleted and waiting:
            await self._release(waiting, through_edges=False)
        return deleted

    @classmethod
    def backoff(cls, attempt: int) -> timedelta:
        """Delay before retry ``attempt`` (1-based): exponential, capped."""
        delay: timedelta = cls.retry_base_delay * (1 << max(attempt - 1, 0))
        return min(delay, cls.retry_max_delay)

    # -------------------------------------------------------------- helpers

    @staticmethod
    def _ids(ids: Iterable[str]) -> builtins.list[str]:
        """Canonical, de-duplicated, in the order given."""
        seen: dict[str, None] = {}
        for value in ids:
            seen[canonical_uuid(value, field="depends_on")] = None
        return list(seen)

    @property
    def _dialect(self) -> str:
        bind = self.session.bind
        assert bind is not None, "the unit of work's session is bound to the engine"
        return bind.dialect.name

    async def _tasks(
        self, statement: Any, params: Mapping[str, Any] | None = None, *, refresh: bool = True
    ) -> builtins.list[Task]:
        """Tasks of a statement returning every task column (see
        :mod:`.task_queue`); ``refresh`` for rows the statement changed."""
        rows = await self._rows(statement, params)
        return [self._adopt(row, refresh=refresh) for row in rows]

    async def _scalar(self, statement: Any, params: Mapping[str, Any] | None = None) -> Any:
        try:
            return (await self.session.execute(statement, params)).scalar()
        except Exception as error:
            await self._raise_translated(error)

    async def _execute(self, statement: Any, params: Any = None) -> Any:
        try:
            return await self.session.execute(statement, params)
        except Exception as error:
            await self._raise_translated(error)

    async def _changed(self, statement: Any, params: Mapping[str, Any]) -> builtins.list[str]:
        return [str(key) for key in await self._bulk_update(statement, params)]

    async def _lock_graph(self) -> None:
        if self._dialect == "postgresql":
            await self._execute(
                text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=q.GRAPH_LOCK_KEY)
            )

    async def _statuses(self, ids: Collection[str], *, share_lock: bool) -> dict[str, TaskStatus]:
        """Statuses of ``ids``; NotFoundError for any that does not exist.

        ``share_lock`` holds the rows (FOR SHARE on PostgreSQL) so that none of
        them completes between this read and the new edges becoming visible:
        its completion then waits for this transaction, and sees the edges.
        """
        if not ids:
            return {}
        statement = select(Task.id, Task.status).where(Task.id.in_(sorted(ids)))
        if share_lock:
            statement = statement.with_for_update(read=True)
        rows = (await self._execute(statement)).all()
        found = {row[0]: row[1] for row in rows}
        for task_id in ids:
            if task_id not in found:
                raise NotFoundError(self.entity, task_id)
        return found

    @staticmethod
    def _queue_status(
        task: Task, prerequisites: Sequence[TaskStatus], now: datetime, ids: Sequence[str]
    ) -> TaskStatus:
        """Set and return the queued status ``prerequisites`` call for."""
        dead = [
            pid
            for pid, status in zip(ids, prerequisites, strict=True)
            if status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
        ]
        if dead:
            task.status = TaskStatus.CANCELLED
            task.completed_at = now
            task.error = f"cancelled: prerequisite {dead[0]} failed or was cancelled"
        elif all(status is TaskStatus.COMPLETED for status in prerequisites):
            task.status = TaskStatus.READY
        else:
            task.status = TaskStatus.BLOCKED
        return task.status

    @staticmethod
    def _topological(edges: Mapping[str, Sequence[str]], batch: set[str]) -> builtins.list[str]:
        """Batch ids, prerequisites first; DependencyCycleError on a cycle."""
        inside = {t: [p for p in prereqs if p in batch] for t, prereqs in edges.items()}
        order: builtins.list[str] = []
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for root in sorted(batch):
            if state.get(root) == 2:
                continue
            stack: builtins.list[tuple[str, int]] = [(root, 0)]
            state[root] = 1
            while stack:
                node, index = stack[-1]
                prerequisites = inside.get(node, [])
                if index < len(prerequisites):
                    stack[-1] = (node, index + 1)
                    following = prerequisites[index]
                    if state.get(following) == 1:
                        raise DependencyCycleError(node, following)
                    if state.get(following) != 2:
                        state[following] = 1
                        stack.append((following, 0))
                else:
                    state[node] = 2
                    order.append(node)
                    stack.pop()
        return order

    async def _insert_edges(self, pairs: Sequence[tuple[str, str]]) -> None:
        now = utc_now()
        rows = [{"task_id": t, "depends_on_id": p, "created_at": now} for t, p in pairs]
        await self._execute(insert(TaskDependency), rows)

    async def _complete(self, task_id: str, worker_id: str, result: Any) -> Any:
        """Complete an owned task and release its dependents; the task's row."""
        task_id = canonical_uuid(task_id, field="task_id")
        owned = {"task_key": task_id, "holder": worker_id, "outcome": result}
        rows = await self._rows(q.complete_statement(self._dialect), owned)
        if not rows:
            await self._explain_not_owned(task_id, worker_id)
        (row,) = rows
        if q.must_release(self._dialect, row):
            await self._release([task_id])
        return row

    async def _owned_update(
        self, statement: Any, task_id: str, worker_id: str, params: Mapping[str, Any]
    ) -> Task:
        task_id = canonical_uuid(task_id, field="task_id")
        owned = {"task_key": task_id, "holder": worker_id, **params}
        updated = await self._tasks(statement, owned)
        if not updated:
            await self._explain_not_owned(task_id, worker_id)
        return updated[0]

    async def _explain_not_owned(self, task_id: str, worker_id: str) -> NoReturn:
        """Raise the error that says why ``worker_id`` does not hold the task."""
        raise lease_lost(await self.get(task_id), worker_id)  # NotFoundError if it is gone

    async def _after_finish(self, task: Task) -> None:
        """Consequences of a task ending, whichever path ended it."""
        if task.status is TaskStatus.COMPLETED:
            await self._release([task.id])
        elif task.status is TaskStatus.FAILED:
            reason = f"cancelled: prerequisite {task.id} failed"
            await self._cancel_closure([task.id], reason, keep_start=True)
        elif task.status is TaskStatus.CANCELLED:
            reason = f"cancelled with task {task.id}"
            await self._cancel_closure([task.id], reason, keep_start=True, include_children=True)

    async def _release(self, ids: Sequence[str], *, through_edges: bool = True) -> None:
        """Ready the blocked dependents of ``ids`` (or ``ids`` themselves) whose
        prerequisites are all complete."""
        if not ids:
            return
        *locks, (release, params) = q.release_requests(
            self._dialect, ids, through_edges=through_edges
        )
        for statement, lock_params in locks:
            await self._execute(statement, lock_params)
        await self._changed(release, params)

    async def _cancel_closure(
        self,
        start: Sequence[str],
        reason: str,
        *,
        keep_start: bool = False,
        include_children: bool = False,
    ) -> int:
        statement = q.cancel_statement(include_children=include_children, keep_start=keep_start)
        return len(await self._changed(statement, {"ids": list(start), "message": reason}))
