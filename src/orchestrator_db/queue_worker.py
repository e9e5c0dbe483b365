"""A queue worker's own connection: claim and complete without a unit of work per task.

``uow.tasks.claim_next`` / ``complete_and_claim`` are the general path: they
return the unit of work's objects, and compose with anything else the unit
does. A process that does nothing but work the queue pays for that in every
task: a session, a pooled connection checked out and in, objects registered
in an identity map, all around two statements. On SQLite that is two thirds
of a task's cost, and the write lock is held through much of it.

:class:`QueueWorker` holds one pooled connection for the worker's life and
runs each queue operation as its own short transaction of the very same
operations (:mod:`orchestrator_db.work_queue`), with the same guarantees,
errors and release of dependents. It returns *detached* :class:`Task`
objects: read them freely; change a task through a unit of work.

    async with db.queue_worker("worker-1", task_types={"code"}) as worker:
        task = await worker.claim()
        while task is not None:
            result = await run(task)
            task = await worker.complete_and_claim(task.id, result)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator_db import values, work_queue
from orchestrator_db._execution import greenlets, signals
from orchestrator_db._execution.engines import backend_for
from orchestrator_db._execution.errors import Boundary
from orchestrator_db._execution.executor import ConnectionExecutor
from orchestrator_db._execution.observe import Observer
from orchestrator_db._execution.rows import detached
from orchestrator_db._execution.signals import Signals
from orchestrator_db.errors import DataLayerError, LeaseLostError, NotFoundError, ValidationError
from orchestrator_db.models.task import Task
from orchestrator_db.settings import DatabaseSettings

T = TypeVar("T")


#: How long a finished task's result may wait for the rest of its batch
#: before :meth:`QueueWorker.run` commits it on its own.
SETTLE_SECONDS = 0.1
#: How long :meth:`QueueWorker.run` holds a claimed task before it confirms,
#: as it starts it, that the task is still its own (cancelled meanwhile, say).
CONFIRM_SECONDS = 1.0
#: The most of a handler's error that a failed attempt records.
ERROR_CHARACTERS = 2_000


def _outcome(future: asyncio.Future[Any]) -> BaseException | None:
    """Why a finished handler's task cannot complete, if it cannot: it
    raised, was cancelled, or returned what is not a JSON value."""
    if future.cancelled():
        return asyncio.CancelledError("the handler was cancelled")
    error = future.exception()
    if error is not None:
        return error
    try:
        values.json_value(future.result(), "result")
    except ValidationError as refused:
        return refused
    return None


def _said(error: BaseException) -> str:
    """A handler's error as a failed attempt records it: its type and
    message, without what text columns refuse (NUL, lone surrogates)."""
    said = f"{type(error).__name__}: {error}"[:ERROR_CHARACTERS]
    return said.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")


@dataclass
class RunSummary:
    """What :meth:`QueueWorker.run` did: tasks completed, attempts failed,
    and the ids of tasks it no longer held when it came to end them."""

    completed: int = 0
    failed: int = 0
    lost: set[str] = field(default_factory=set)


class QueueWorker:
    """One worker's dedicated connection to the work queue (see the module).

    Every method is one transaction, committed when it returns; an error
    rolls it back and is raised as the unit-of-work path raises it
    (:class:`~orchestrator_db.errors.LeaseLostError`, ``NotFoundError``...).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        settings: DatabaseSettings,
        worker_id: str,
        *,
        task_types: Collection[str] | None = None,
        agent_types: Collection[str] | None = None,
        lease: timedelta | None = None,
        before_start: Callable[[], Awaitable[None]] | None = None,
        signals: Signals | None = None,
        observer: Observer | None = None,
    ) -> None:
        """``before_start`` runs as the worker connects (the schema check);
        ``signals`` wake the worker's waiting claims (and are woken by the
        work it commits).

        ``lease`` is the lease of a claim and a heartbeat (else
        ``work_queue.DEFAULT_LEASE``); a task with ``timeout_seconds`` runs
        under a lease of its timeout unless ``lease`` asks for less."""
        self._backend = backend_for(engine.dialect.name)
        self._asked_lease = lease
        self.lease = work_queue.DEFAULT_LEASE if lease is None else lease
        # Checked now, not at the first claim; the worker's claim of one task
        # is made once.
        self._claim_one = work_queue.claim_request(
            self._backend.name,
            worker_id,
            1,
            task_types=task_types,
            agent_types=agent_types,
            lease=lease,
        )
        self.worker_id = worker_id
        filters = work_queue.type_filters(task_types=task_types, agent_types=agent_types)
        self.task_types = frozenset(filters.get("task_types", ())) or None
        self.agent_types = frozenset(filters.get("agent_types", ())) or None
        self._engine = engine
        self._before_start = before_start
        self._signals = signals
        self._observer = observer
        self._executor: ConnectionExecutor | None = None
        self._entered = False
        self._connected_at = 0.0
        self._recycle = self._backend.recycle_seconds(settings)
        # One connection runs one transaction at a time: a heartbeat sent from
        # a watchdog coroutine waits for the main loop's operation to end.
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        async with Boundary(self._backend, "Task"):
            if self._before_start is not None:
                await self._before_start()
            await self._connect()
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        async with self._lock:  # let an operation in flight finish first
            self._entered = False
            executor, self._executor = self._executor, None
            if executor is not None:
                async with Boundary(self._backend):
                    await executor.connection.close()

    # ------------------------------------------------------------ the queue

    async def claim(self, *, wait: timedelta | None = None) -> Task | None:
        """The next ready task, now running under this worker's lease.

        With ``wait``, when no task is ready the worker waits for one (woken
        as work is committed: see :mod:`orchestrator_db._execution.signals`)
        for up to ``wait``; ``None`` if none came."""
        claimed = await self._waiting(
            wait, lambda: self._transaction(lambda ex: work_queue.claimed(ex, self._claim_one))
        )
        return claimed[0] if claimed else None

    async def claim_batch(self, limit: int, *, wait: timedelta | None = None) -> list[Task]:
        """Up to ``limit`` ready tasks, in claim order, under one lease
        (with ``wait``: as :meth:`claim` waits)."""
        return await self._waiting(
            wait, lambda: self._transaction(lambda ex: self._claim_in(ex, limit))
        )

    async def heartbeat(self, task_id: str) -> Task:
        """Extend this worker's lease on ``task_id``."""
        return await self._transaction(
            lambda ex: work_queue.heartbeat(ex, task_id, self.worker_id, lease=self.lease)
        )

    async def complete(self, task_id: str, result: Any = None) -> Task:
        """Complete ``task_id`` with ``result`` and ready its dependents whose
        prerequisites are now all complete, in one transaction."""

        async def complete(ex: ConnectionExecutor) -> Task:
            return detached(Task, await work_queue.complete(ex, task_id, self.worker_id, result))

        return await self._transaction(complete)

    async def complete_and_claim(self, task_id: str, result: Any = None) -> Task | None:
        """Complete ``task_id`` and claim the next task, in one transaction."""

        async def complete_and_claim(ex: ConnectionExecutor) -> Task | None:
            await work_queue.complete(ex, task_id, self.worker_id, result)
            claimed = await work_queue.claimed(ex, self._claim_one)
            return claimed[0] if claimed else None

        return await self._transaction(complete_and_claim)

    async def complete_many(
        self, results: Mapping[str, Any], *, claim: int = 0
    ) -> tuple[list[str], list[str], list[Task]]:
        """Complete every task of ``results`` (id: result) and ready their
        dependents, then claim up to ``claim`` more, all in one transaction:
        a batch costs one commit. A task this worker no longer holds (its
        lease ran out and it went to another, or it was cancelled) is left
        as it is. Returns the ids of the completed tasks and of those no
        longer held (as ``results`` names them), and the claimed tasks."""
        if claim != 0:
            values.count(claim, "claim", minimum=1)
        if not isinstance(results, Mapping):
            raise ValidationError("results must map task ids to results", field="results")
        keys = {values.text(key, "task_id"): result for key, result in results.items()}

        async def settle(ex: ConnectionExecutor) -> tuple[list[str], list[str], list[Task]]:
            completed, lost = await work_queue.complete_many(ex, self.worker_id, keys)
            claimed = await self._claim_in(ex, claim) if claim else []
            return completed, lost, claimed

        return await self._transaction(settle)

    async def heartbeat_many(self, task_ids: Collection[str]) -> list[str]:
        """Extend this worker's lease on each of ``task_ids`` in one
        transaction; the ids it no longer holds."""
        keys = values.texts(task_ids, "task_ids")
        return await self._transaction(
            lambda ex: work_queue.heartbeat_many(ex, self.worker_id, keys, lease=self.lease)
        )

    async def give_back(self, task_ids: Collection[str]) -> list[str]:
        """Ready again the tasks of ``task_ids`` this worker holds but will
        not run (it claimed them ahead), no attempt counted; their ids."""
        keys = values.texts(task_ids, "task_ids")
        return await self._transaction(lambda ex: work_queue.give_back(ex, self.worker_id, keys))

    async def run(
        self,
        handler: Callable[[Task], Awaitable[Any]],
        *,
        concurrency: int = 1,
        prefetch: int | None = None,
    ) -> RunSummary:
        """Work the queue until no task is ready: claim up to ``prefetch``
        tasks at once (default: ``concurrency``) under one lease, run
        ``handler`` on up to ``concurrency`` of them at a time, and complete
        those it returned from (its value is the result) together with the
        next claim, in one transaction per batch (or sooner, once a result
        has waited :data:`SETTLE_SECONDS`). A task whose handler raised (or
        returned what is not a JSON value) is a failed attempt, recorded at
        once: retried after a back-off, or failed and its dependents
        cancelled. While tasks are held or running, their leases are
        extended together, every third of the lease; a task with a timeout
        that cannot start at once is given back rather than held (its
        timeout runs from its claim).

        A task completes exactly once; one that outlived its lease (the
        process stalled past it) and went to another worker is reported in
        ``lost``, not completed. When ``run()`` ends early (cancelled, or a
        database error), its handlers are cancelled and awaited, what
        finished is completed and what never started is given back; after
        a crash, what it held waits for its leases' end, when any worker's
        claim rescues it."""
        if not callable(handler):
            raise ValidationError("handler must be an async function of a task", field="handler")
        values.count(concurrency, "concurrency", minimum=1)
        batch = concurrency if prefetch is None else values.count(prefetch, "prefetch", minimum=1)
        batch = max(batch, concurrency)
        summary = RunSummary()
        held: collections.deque[Task] = collections.deque()
        confirmed_at = 0.0  # when the leases of what is held were last confirmed
        running: dict[asyncio.Future[Any], Task] = {}
        finished: dict[str, Any] = {}
        settle_by = beat_at = 0.0
        every = self.lease.total_seconds() / 3

        async def take(claimed: list[Task]) -> None:
            # A task's timeout runs from its claim: one that cannot start
            # now is not held but given back.
            nonlocal confirmed_at
            free = concurrency - len(running)
            late = [t.id for t in claimed[free:] if t.timeout_seconds is not None]
            if not held:
                confirmed_at = time.monotonic()
            held.extend(t for t in claimed if t.id not in late)
            if late:
                await self.give_back(late)

        try:
            await take(await self.claim_batch(batch))
            beat_at = time.monotonic() + every
            while held or running or finished:
                starting = held and len(running) < concurrency
                if starting and time.monotonic() - confirmed_at >= CONFIRM_SECONDS:
                    # Held a while: what was cancelled or taken meanwhile is
                    # not started (the others' leases are extended).
                    gone = set(await self.heartbeat_many([t.id for t in held]))
                    summary.lost |= gone
                    held = collections.deque(t for t in held if t.id not in gone)
                    confirmed_at = time.monotonic()
                while held and len(running) < concurrency:
                    task = held.popleft()
                    running[asyncio.ensure_future(handler(task))] = task
                now = time.monotonic()
                if running:
                    until = min(beat_at, settle_by) if finished else beat_at
                    done, _ = await asyncio.wait(
                        running, timeout=max(0.0, until - now), return_when=FIRST_COMPLETED
                    )
                    for future in done:
                        task = running.pop(future)
                        failure = _outcome(future)
                        if failure is None:
                            if not finished:
                                settle_by = time.monotonic() + SETTLE_SECONDS
                            finished[task.id] = future.result()
                        else:
                            await self._failed(task, failure, summary)
                if time.monotonic() >= beat_at:
                    ids = [t.id for t in held] + [t.id for t in running.values()] + list(finished)
                    gone = set(await self.heartbeat_many(ids)) if ids else set()
                    summary.lost |= gone
                    held = collections.deque(t for t in held if t.id not in gone)
                    finished = {k: v for k, v in finished.items() if k not in gone}
                    confirmed_at = time.monotonic()
                    beat_at = confirmed_at + every
                batch_done = not held and (finished or not running)
                if batch_done or (finished and time.monotonic() >= settle_by):
                    room = batch - len(running) - len(held) if batch_done else 0
                    completed, lost, claimed = await self.complete_many(finished, claim=room)
                    summary.completed += len(completed)
                    summary.lost.update(lost)
                    finished = {}
                    await take(claimed)
        finally:
            await self._wind_down(running, held, finished, summary)
        return summary

    async def _wind_down(
        self,
        running: dict[asyncio.Future[Any], Task],
        held: collections.deque[Task],
        finished: dict[str, Any],
        summary: RunSummary,
    ) -> None:
        """After ``run()`` ended early: its handlers cancelled and awaited,
        what finished completed, what never started given back (shielded
        from a second cancellation; a database error here is the first
        error's echo, and the leases settle it)."""
        for future in running:
            future.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        if not (finished or held):
            return

        async def settle() -> None:
            with contextlib.suppress(DataLayerError):
                if finished:
                    completed, lost, _ = await self.complete_many(finished)
                    summary.completed += len(completed)
                    summary.lost.update(lost)
                if held:
                    await self.give_back([t.id for t in held])

        await asyncio.shield(settle())

    async def _failed(self, task: Task, error: BaseException, summary: RunSummary) -> None:
        summary.failed += 1
        try:
            await self.fail(task.id, _said(error))
        except (LeaseLostError, NotFoundError):
            summary.lost.add(task.id)

    async def _claim_in(self, ex: ConnectionExecutor, limit: int) -> list[Task]:
        return await work_queue.claim(
            ex,
            self.worker_id,
            limit,
            task_types=self.task_types,
            agent_types=self.agent_types,
            lease=self._asked_lease,
        )

    async def fail(self, task_id: str, error: str) -> Task:
        """Record a failed attempt (retried with back-off, or failed for good
        and its dependents cancelled)."""
        return await self._transaction(
            lambda ex: work_queue.fail(ex, task_id, self.worker_id, error)
        )

    # ------------------------------------------------------------ internals

    async def _waiting(
        self, wait: timedelta | None, attempt: Callable[[], Awaitable[list[T]]]
    ) -> list[T]:
        if wait is None:
            return await attempt()
        seconds = values.duration(wait, "wait").total_seconds()
        if self._signals is None or seconds <= 0:
            return await attempt()
        return await self._signals.wait(signals.TASKS, attempt, bool, seconds)

    async def _connect(self) -> None:
        started = time.perf_counter()
        connection = await self._engine.connect()
        if self._observer is not None:
            self._observer.pool_wait(started, self._engine.sync_engine.pool)
        self._executor = ConnectionExecutor(
            connection, self._backend, self._signals, self._observer
        )
        self._connected_at = time.monotonic()

    async def _transaction(self, work: Callable[[ConnectionExecutor], Awaitable[T]]) -> T:
        async with self._lock:
            with Boundary(self._backend, "Task"):
                if not self._entered:
                    raise ValidationError(
                        "use the worker as `async with db.queue_worker(...) as worker`"
                    )
                executor = self._executor
                if executor is not None and 0 <= self._recycle < (
                    time.monotonic() - self._connected_at
                ):
                    # Held for the worker's life, the connection never goes
                    # back to the pool to be recycled there: exchange it here,
                    # as the pool would (a proxy's idle timeout may have
                    # dropped it).
                    self._executor = None
                    await executor.connection.close()
                    executor = None
                if executor is None:
                    # Connect afresh: a reconnection that failed (the server
                    # was down) is tried again by the next operation.
                    await self._connect()
                    assert self._executor is not None
                    executor = self._executor
                try:
                    async with greenlets.begin(executor.connection):
                        result = await work(executor)
                except BaseException:
                    executor.notices.forget()
                    raise
                executor.notices.committed()
                return result
