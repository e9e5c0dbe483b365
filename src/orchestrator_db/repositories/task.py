"""Tasks: filters, the status lifecycle, and the work queue.

The queue in brief (the operations live in :mod:`orchestrator_db.work_queue`,
their SQL in :mod:`orchestrator_db.sql.queue`):

* ``submit`` queues a task, ``blocked`` until its prerequisites complete,
  ``ready`` otherwise;
* ``claim_next`` / ``claim_batch`` hand ready tasks to a worker under a
  lease, highest priority first, then oldest; no task is ever handed out
  twice, however many workers, processes or machines claim at once;
* the worker extends the lease with ``heartbeat`` and ends with ``complete``
  (which readies the dependents whose prerequisites are now all complete) or
  ``fail`` (retried with exponential back-off while ``retry_count <
  max_retries``, else failed);
* a lease that runs out counts as a failed attempt (``timed out``): every
  claim rescues such tasks, and ``requeue_expired`` sweeps them all;
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
from typing import Any, ClassVar

from sqlalchemy.orm.attributes import instance_state

from orchestrator_db import task_graph, values, work_queue
from orchestrator_db._execution import signals
from orchestrator_db._execution.rows import overwrite
from orchestrator_db.errors import (
    DependencyCycleError,
    InvalidTransitionError,
    NotFoundError,
    ValidationError,
)
from orchestrator_db.models import graph
from orchestrator_db.models.task import (
    FINISHED_TASK_STATUSES,
    TASK_TRANSITIONS,
    Task,
    TaskStatus,
    backoff,
)
from orchestrator_db.repositories.base import Repository, one_statement, reads
from orchestrator_db.sql import IDS_PER_STATEMENT, retention
from orchestrator_db.sql import queue as q
from orchestrator_db.types import canonical_uuid, utc_now


def parse_task_status(value: TaskStatus | str) -> TaskStatus:
    return values.member(TaskStatus, value, "status")


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
        "created_after": lambda value: Task.created_at >= values.instant(value, "created_after"),
        "created_before": lambda value: Task.created_at < values.instant(value, "created_before"),
    }
    protected_fields = frozenset(
        {"status", "started_at", "completed_at", "error", "worker_id", "lease_expires_at"}
    )
    maintained_fields = frozenset(
        {
            "dependency_type",
            "dependency_depth",
            "blocking_count",
            "calculated_priority",
            "reprioritize_at",
        }
    )

    #: The task's own values its calculated priority is computed from.
    score_inputs: ClassVar[frozenset[str]] = frozenset(
        {"priority", "deadline", "source", "estimated_duration_seconds"}
    )

    #: Lease of a claim when the worker does not say.
    default_lease: ClassVar[timedelta] = work_queue.DEFAULT_LEASE

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
        if error is not None:
            values.text(error, "error")
            if target not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                raise ValidationError(
                    "an error can be recorded only when failing or cancelling", field="error"
                )
        if target is not TaskStatus.RUNNING:
            await task_graph.lock(self._ex)  # finishing: before the row lock
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
        await work_queue.after_finish(self._ex, task)
        return task

    @one_statement(
        when=lambda repository, dialect, key, **values: (
            repository._alone(values) and not repository.score_inputs.intersection(values)
        )
    )
    async def update(self, key: Any, **values: Any) -> Task:
        """Set attributes of the task ``key`` (see :meth:`Repository.update`);
        its calculated priority follows a change of what it is computed from."""
        task = await super().update(key, **values)
        if self.score_inputs.intersection(values):
            await task_graph.refresh_scores(self._ex, [task.id])
        return task

    # ---------------------------------------------------------- dependencies

    async def submit(self, task: Task, *, depends_on: Iterable[str] = ()) -> Task:
        """Queue ``task``: ``blocked`` while a prerequisite is unfinished, else
        ``ready``. A new task is added; a stored ``pending`` one is queued.

        A prerequisite that does not exist raises :class:`NotFoundError`; the
        task itself as a prerequisite, or (for a stored task) one that already
        waits for it, raises :class:`DependencyCycleError`.
        If a prerequisite already failed or was cancelled, the task is stored
        ``cancelled``: it could never run. The task's dependency facts and
        calculated priority are set, and the tasks it waits for count it.
        """
        self._check_instance(task)
        stored = instance_state(task).persistent
        if not stored:
            self._refuse_maintained(instance_state(task).dict)
        self._prepare(task)
        prerequisites = self._ids(depends_on)
        if stored and task.status is not TaskStatus.PENDING:
            raise InvalidTransitionError(self.entity, task.id, task.status.value, "submitted")
        if task.id in prerequisites:
            raise DependencyCycleError(task.id, task.id)
        if prerequisites:
            await task_graph.lock(self._ex)
        found = await self._statuses(prerequisites, share_lock=True)
        now = utc_now()
        if stored:
            if not prerequisites:
                self._queue_status(task, [], now, [])
                await self._flush_and_refresh(task, task.id)
                return await self._announced(task)
            cycle = await task_graph.closing_a_cycle(self._ex, task.id, prerequisites)
            if cycle is not None:
                raise DependencyCycleError(task.id, cycle)
            async with task_graph.changing(self._ex, [task.id]):
                self._queue_status(task, [found[p][0] for p in prerequisites], now, prerequisites)
                await self._flush_and_refresh(task, task.id)
                await self._insert_edges([(task.id, p) for p in prerequisites])
            return await self._announced(task)
        self._queue_status(task, [found[p][0] for p in prerequisites], now, prerequisites)
        if prerequisites:
            depths = {p: depth for p, (_, depth) in found.items()}
            facts = await task_graph.facts(self._ex, {task.id: prerequisites}, depths)
            task.dependency_depth, task.dependency_type = facts[task.id]
        await self._add(task)
        if prerequisites:
            await self._insert_edges([(task.id, p) for p in prerequisites])
            if task.status not in FINISHED_TASK_STATUSES:
                await task_graph.count_in(self._ex, [task.id])
        return await self._announced(task)

    async def _announced(self, *tasks: Task) -> Task:
        """The first of ``tasks``, once workers are told if any is ready."""
        if any(task.status is TaskStatus.READY for task in tasks):
            await self._ex.announce(signals.TASKS)
        return tasks[0]

    async def submit_many(
        self, tasks: Sequence[Task], *, dependencies: Mapping[str, Iterable[str]] | None = None
    ) -> builtins.list[Task]:
        """Queue many new tasks with one bulk insert.

        ``dependencies`` maps a task id to its prerequisites, which may be
        tasks of the batch or stored tasks. A cycle inside the batch raises
        :class:`DependencyCycleError` and nothing is written.
        """
        tasks = [self._check_instance(task) for task in tasks]
        for task in tasks:
            self._refuse_maintained(instance_state(task).dict)
            self._prepare(task)
        batch = {task.id: task for task in tasks}
        if dependencies is not None and not isinstance(dependencies, Mapping):
            raise ValidationError("dependencies must map task ids to their prerequisites")
        edges = {
            canonical_uuid(task_id, field="dependencies"): self._ids(prerequisites)
            for task_id, prerequisites in (dependencies or {}).items()
        }
        edges = {
            task_id: prerequisites for task_id, prerequisites in edges.items() if prerequisites
        }
        unknown = set(edges) - set(batch)
        if unknown:
            raise ValidationError(
                f"dependencies name tasks that are not in the batch: {sorted(unknown)[:3]}"
            )
        order = self._topological(edges, set(batch))
        external = {p for prereqs in edges.values() for p in prereqs if p not in batch}
        if edges:
            await task_graph.lock(self._ex)
        found = await self._statuses(external, share_lock=True)
        statuses = {task_id: status for task_id, (status, _) in found.items()}
        now = utc_now()
        for task_id in order:
            prerequisites = edges.get(task_id, [])
            known = [statuses[p] if p in statuses else batch[p].status for p in prerequisites]
            self._queue_status(batch[task_id], known, now, prerequisites)
            statuses[task_id] = batch[task_id].status
        if edges:
            depths = {p: depth for p, (_, depth) in found.items()}
            for task_id, fact in (await task_graph.facts(self._ex, edges, depths)).items():
                batch[task_id].dependency_depth, batch[task_id].dependency_type = fact
        added = await self._add_many(tasks)
        pairs = [(task_id, p) for task_id, prereqs in edges.items() for p in prereqs]
        if pairs:
            await self._insert_edges(pairs)
            waiting = [t for t in edges if batch[t].status not in FINISHED_TASK_STATUSES]
            counted = await task_graph.count_in(self._ex, waiting)
            await self._reload_detached([batch[t] for t in counted if t in batch])
        if added:
            await self._announced(*added)
        return added

    async def add_dependency(self, task_id: str, depends_on_id: str) -> bool:
        """Make ``task_id`` wait for ``depends_on_id``; ``False`` if it already did.

        Refused with :class:`DependencyCycleError` if ``depends_on_id``
        already depends on ``task_id`` (directly or through others), and with
        :class:`InvalidTransitionError` if the task is running or finished.
        A ready task becomes blocked until the new prerequisite completes.
        The dependency facts of the task and of the tasks that wait for it
        are brought up to date.
        """
        task_id = canonical_uuid(task_id, field="task_id")
        depends_on_id = canonical_uuid(depends_on_id, field="depends_on_id")
        if task_id == depends_on_id:
            raise DependencyCycleError(task_id, depends_on_id)
        await task_graph.lock(self._ex)
        # The prerequisite read fresh and held (FOR SHARE): its completion
        # then waits for this transaction, and its release sees the new
        # edge; or this read waits for that completion and sees it. Held
        # before the task: a completion locks the prerequisite, then its
        # blocked dependents (this task among them if an edge exists).
        statuses = await self._statuses([depends_on_id], share_lock=True)
        prerequisite_status = statuses[depends_on_id][0]
        task = await self.get(task_id, for_update=True)
        if task.status is TaskStatus.RUNNING or task.status in FINISHED_TASK_STATUSES:
            raise InvalidTransitionError(self.entity, task_id, task.status.value, "blocked")
        if await task_graph.closing_a_cycle(self._ex, task_id, [depends_on_id]):
            raise DependencyCycleError(task_id, depends_on_id)
        edge = {"task_id": task_id, "depends_on_id": depends_on_id}
        if await self._ex.rows(q.edge_statement(), edge, entity=self.entity):
            return False
        queued: TaskStatus | None = None
        async with task_graph.changing(self._ex, [task_id]):
            await self._insert_edges([(task_id, depends_on_id)])
            if task.status in (TaskStatus.READY, TaskStatus.BLOCKED):
                now = utc_now()
                queued = self._queue_status(task, [prerequisite_status], now, [depends_on_id])
                await self._flush_and_refresh(task, task_id)
        if queued is TaskStatus.CANCELLED:
            # The task and every unfinished task waiting on it left the counts
            # with the change (and, finished now, were not put back): those it
            # cancels are among them.
            await work_queue.cancel_closure(self._ex, [task_id], str(task.error), keep_start=True)
        return True

    @reads
    async def dependencies_of(self, task_id: str) -> builtins.list[Task]:
        """The tasks ``task_id`` waits for."""
        return await self._linked(task_id, prerequisites=True)

    @reads
    async def dependents_of(self, task_id: str) -> builtins.list[Task]:
        """The tasks waiting for ``task_id``."""
        return await self._linked(task_id, prerequisites=False)

    async def _linked(self, task_id: str, *, prerequisites: bool) -> builtins.list[Task]:
        """The far ends of ``task_id``'s edges, oldest first."""
        key = canonical_uuid(task_id, field="task_id")
        statement = q.linked_statement(prerequisites=prerequisites)
        return await self._objects(statement, {"task_key": key}, refresh=False)

    # ----------------------------------------------------------------- claim

    async def claim_next(
        self,
        worker_id: str,
        *,
        task_types: Collection[str] | None = None,
        agent_types: Collection[str] | None = None,
        lease: timedelta | None = None,
    ) -> Task | None:
        """The ready task with the highest calculated priority (oldest first),
        now running under ``worker_id``'s lease; ``None`` if nothing is ready.

        ``task_types`` and ``agent_types`` restrict the claim to tasks of
        those types. The lease is ``lease``, else :attr:`default_lease`; a
        task with ``timeout_seconds`` runs under a lease of its timeout
        instead, unless ``lease`` asks for less.
        """
        claimed = await self.claim_batch(
            worker_id, 1, task_types=task_types, agent_types=agent_types, lease=lease
        )
        return claimed[0] if claimed else None

    async def claim_batch(
        self,
        worker_id: str,
        limit: int,
        *,
        task_types: Collection[str] | None = None,
        agent_types: Collection[str] | None = None,
        lease: timedelta | None = None,
    ) -> builtins.list[Task]:
        """Up to ``limit`` ready tasks, in claim order, running under one
        lease (see :meth:`claim_next`)."""
        return await work_queue.claim(
            self._ex,
            worker_id,
            limit,
            task_types=task_types,
            agent_types=agent_types,
            lease=lease,
            default_lease=self.default_lease,
        )

    async def heartbeat(
        self, task_id: str, worker_id: str, *, lease: timedelta | None = None
    ) -> Task:
        """Extend the lease of a task ``worker_id`` holds; returns the task."""
        lease = self.default_lease if lease is None else lease
        return await work_queue.heartbeat(self._ex, task_id, worker_id, lease=lease)

    async def complete(self, task_id: str, worker_id: str, result: Any = None) -> Task:
        """Mark a task ``worker_id`` holds completed, store ``result``, and make
        ready every dependent whose prerequisites are now all complete, in the
        same transaction."""
        row = await work_queue.complete(self._ex, task_id, worker_id, result)
        return self._ex.adopt(Task, row, refresh=True)

    async def complete_and_claim(
        self,
        task_id: str,
        worker_id: str,
        result: Any = None,
        *,
        task_types: Collection[str] | None = None,
        agent_types: Collection[str] | None = None,
        lease: timedelta | None = None,
    ) -> Task | None:
        """Complete a task ``worker_id`` holds and claim its next one, in one
        transaction: a worker loop then commits once per task instead of twice.
        Returns the next task, or ``None`` if nothing is ready."""
        # The finished task is not returned: only an object already loaded
        # for it is brought up to date.
        row = await work_queue.complete(self._ex, task_id, worker_id, result)
        self._ex.loaded(Task, row, refresh=True)
        return await self.claim_next(
            worker_id, task_types=task_types, agent_types=agent_types, lease=lease
        )

    async def fail(self, task_id: str, worker_id: str, error: str) -> Task:
        """Record a failed attempt of a task ``worker_id`` holds.

        While ``retry_count < max_retries`` the task goes back to ``ready``
        after an exponential back-off (``run_after``); then it is ``failed``
        and its unfinished dependents are cancelled.
        """
        return await work_queue.fail(self._ex, task_id, worker_id, error)

    async def cancel(self, task_id: str, *, reason: str | None = None) -> int:
        """Cancel a task, its unfinished dependents and its children,
        transitively; returns how many tasks were cancelled."""
        if reason is not None:
            values.text(reason, "reason")
        await task_graph.lock(self._ex)  # before the row lock (see task_graph.lock)
        task = await self.get(task_id, for_update=True)
        if task.status in FINISHED_TASK_STATUSES:
            raise InvalidTransitionError(self.entity, task_id, task.status.value, "cancelled")
        why = f"cancelled with task {task.id}" if reason is None else reason
        cancelled = await work_queue.cancel_closure(self._ex, [task.id], why, include_children=True)
        await task_graph.finished(self._ex, cancelled)
        return len(cancelled)

    async def requeue_expired(self) -> int:
        """Rescue every running task whose lease ran out (claims do it too):
        the attempt failed with error ``timed out``; back to ``ready`` after
        the back-off, or failed when out of retries (its dependents
        cancelled). Returns how many tasks were rescued."""
        return await work_queue.requeue_expired(self._ex)

    @reads
    async def ready(
        self,
        limit: int = 100,
        *,
        task_types: Collection[str] | None = None,
        agent_types: Collection[str] | None = None,
    ) -> builtins.list[Task]:
        """Claimable tasks in claim order (tasks waiting out a retry back-off
        are not claimable yet)."""
        params, typed, agents = work_queue.filtered(task_types=task_types, agent_types=agent_types)
        params["limit"] = values.count(limit, "limit")
        statement = q.ready_statement(typed=typed, agents=agents)
        return await self._objects(statement, params, refresh=False)

    @reads
    async def overdue(self, limit: int = 100) -> builtins.list[Task]:
        """Unfinished tasks past their deadline, the most overdue first."""
        params = {"limit": values.count(limit, "limit")}
        return await self._objects(q.overdue_statement(), params, refresh=False)

    async def reprioritize(self, *, limit: int = 10_000, batch: int = 1_000) -> int:
        """Bring the deadline urgency of calculated priorities up to date.

        Each queued task with a deadline stores when its score will have
        fallen behind the clock by more than
        :data:`~orchestrator_db.models.priority.TOLERANCE` points; this
        recomputes up to ``limit`` of the scores now due, ``batch`` per
        statement, soonest due first, and returns how many rows changed.
        Run it every few seconds (a :class:`QueueWorker` does not): only
        the scores that need it are touched, however many tasks are queued.
        """
        limit = values.count(limit, "limit")
        batch = values.count(batch, "batch", minimum=1, maximum=IDS_PER_STATEMENT)
        return await task_graph.reprioritize(self._ex, limit=limit, batch=batch)

    @reads
    async def stats(self) -> QueueStats:
        """Task counts per status, and per task type and status."""
        rows = await self._ex.rows(q.stats_statement(), entity=self.entity)
        by_status: dict[TaskStatus, int] = {}
        by_type: dict[str, dict[TaskStatus, int]] = {}
        for task_type, status, count in rows:
            by_status[status] = by_status.get(status, 0) + count
            by_type.setdefault(task_type, {})[status] = count
        return QueueStats(by_status, by_type)

    # One statement when the task is on its own (else, having deleted
    # nothing, it asks for a write unit).
    @one_statement()
    async def delete(self, key: Any) -> bool:
        """Delete a task; dependents waiting only for it become ready, and
        the dependency facts of those that waited for it are brought up to
        date."""
        key = canonical_uuid(key, field="key")
        params = {"task_key": key}
        if self._ex.holds(Task, key):
            await task_graph.lock(self._ex)  # no edge can appear meanwhile
            # The ORM's delete: the session marks its object deleted.
            statement = q.delete_held_unlinked_statement()
            unlinked = await self._ex.execute(statement, params, entity=self.entity, key=key)
            if getattr(unlinked, "rowcount", 0):
                return True  # a task on its own: one statement
        else:
            # Under the graph's lock on PostgreSQL (see the statement).
            unlinked_alone = q.delete_unlinked_statement(self._ex.backend.name)
            rows = await self._ex.rows(unlinked_alone, params, entity=self.entity, key=key)
            if any(row[0] for row in rows):
                return True
        self._ex.needs_transaction()  # linked, or missing: nothing was deleted
        await task_graph.lock(self._ex)  # held already, or now: no edge appears meanwhile
        rows = await self._ex.rows(q.waiting_statement(), params, entity=self.entity)
        waiting = [str(row[0]) for row in rows]
        async with task_graph.changing(self._ex, [key], removed=[key]):
            deleted = await super().delete(key)
        if deleted and waiting:
            await work_queue.release(self._ex, waiting, through_edges=False)
        return deleted

    # ------------------------------------------------------------ retention

    async def prune(
        self, older_than: timedelta | datetime, *, limit: int = 1_000
    ) -> dict[str, int]:
        """Delete up to ``limit`` tasks finished before ``older_than`` (an
        age or an instant) that no task depends on, oldest first, with their
        tool executions; returns the rows deleted per table. A finished
        prerequisite goes in a later call, once what waits on it has gone
        (see :mod:`orchestrator_db.sql.retention`). ``db.prune`` calls this
        in batches until nothing is left."""
        params = self._retention(older_than, limit)
        await task_graph.lock(self._ex)  # no edge appears while the batch goes
        rows = await self._ex.rows(retention.task_batch_statement(), params, entity=self.entity)
        ids = {"ids": [str(row[0]) for row in rows], **params}
        if not rows:
            return {"tasks": 0, "tool_executions": 0}
        tools = await self._ex.rows(
            retention.delete_tool_executions_statement(), ids, entity="ToolExecution"
        )
        tasks = await self._ex.rows(retention.delete_tasks_statement(), ids, entity=self.entity)
        return {"tasks": len(tasks), "tool_executions": len(tools)}

    @reads
    async def prunable(self, older_than: timedelta | datetime) -> dict[str, int]:
        """What calling :meth:`prune` until it deletes nothing would delete,
        per table (nothing is deleted)."""
        statement = retention.prunable_tasks_statement()
        params = self._retention(older_than)
        ((tasks, tools),) = await self._ex.rows(statement, params, entity=self.entity)
        return {"tasks": int(tasks), "tool_executions": int(tools)}

    @staticmethod
    def backoff(attempt: int) -> timedelta:
        """Delay before retry ``attempt`` (1-based): exponential, capped."""
        return backoff(attempt)

    # -------------------------------------------------------------- helpers

    @staticmethod
    def _ids(ids: Iterable[str]) -> builtins.list[str]:
        """Canonical, de-duplicated, in the order given."""
        if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
            raise ValidationError("depends_on must be a collection of task ids", field="depends_on")
        seen: dict[str, None] = {}
        for value in ids:
            seen[canonical_uuid(value, field="depends_on")] = None
        return list(seen)

    async def _reload_detached(self, tasks: Sequence[Task]) -> None:
        """Bring detached objects up to date with their rows."""
        held = {task.id: task for task in tasks}
        ids = sorted(held)
        for start in range(0, len(ids), IDS_PER_STATEMENT):
            chunk = {"ids": ids[start : start + IDS_PER_STATEMENT]}
            for row in await self._ex.rows(q.tasks_statement(), chunk, entity=self.entity):
                overwrite(Task, held[str(row.id)], row)

    async def _statuses(
        self, ids: Collection[str], *, share_lock: bool
    ) -> dict[str, tuple[TaskStatus, int]]:
        """Statuses and depths of ``ids``; NotFoundError for any that does not exist.

        ``share_lock`` holds the rows (FOR SHARE on PostgreSQL) so that none of
        them completes between this read and the new edges becoming visible:
        its completion then waits for this transaction, and sees the edges.
        """
        if not ids:
            return {}
        statement = q.statuses_statement(share_lock=share_lock)
        wanted = sorted(ids)
        found: dict[str, tuple[TaskStatus, int]] = {}
        for start in range(0, len(wanted), IDS_PER_STATEMENT):
            chunk = {"ids": wanted[start : start + IDS_PER_STATEMENT]}
            for row in await self._ex.rows(statement, chunk, entity=self.entity):
                found[row[0]] = (row[1], row[2])
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
        return graph.prerequisites_first(inside, sorted(batch))

    async def _insert_edges(self, pairs: Sequence[tuple[str, str]]) -> None:
        now = utc_now()
        rows = [{"task_id": t, "depends_on_id": p, "created_at": now} for t, p in pairs]
        await self._ex.execute(q.insert_edges_statement(), rows, entity="TaskDependency")
