"""A queue worker's own connection: claim and complete without a unit of work per task.

``uow.tasks.claim_next`` / ``complete_and_claim`` are the general path: they
return the unit of work's objects, and compose with anything else the unit
does. A process that does nothing but work the queue pays for that in every
task: a session, a pooled connection checked out and in, objects registered
in an identity map, all around two statements. On SQLite that is two thirds
of a task's cost, and the write lock is held through much of it.

:class:`QueueWorker` holds one pooled connection for the worker's life and
runs each queue operation as its own short transaction of the very same
statements (``repositories.task_queue``), with the same guarantees, errors
and release of dependents. It returns *detached* :class:`Task` objects: read
them freely; change a task through a unit of work.

    async with db.queue_worker("worker-1", task_types={"code"}) as worker:
        task = await worker.claim()
        while task is not None:
            result = await run(task)
            task = await worker.complete_and_claim(task.id, result)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Self, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker

from orchestrator_db.engine import pool_recycle
from orchestrator_db.error_translation import translate
from orchestrator_db.errors import NotFoundError, ValidationError
from orchestrator_db.models.task import Task
from orchestrator_db.repositories import task_queue as q
from orchestrator_db.repositories.base import detached_from_row, row_layout
from orchestrator_db.repositories.direct import fetch_rows
from orchestrator_db.repositories.task import TaskRepository, lease_lost
from orchestrator_db.types import canonical_uuid
from orchestrator_db.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from orchestrator_db.database import Database

T = TypeVar("T")


class QueueWorker:
    """One worker's dedicated connection to the work queue (see the module).

    Every method is one transaction, committed when it returns; an error
    rolls it back and is raised as the unit-of-work path raises it
    (:class:`~orchestrator_db.errors.LeaseLostError`, ``NotFoundError``...).
    """

    def __init__(
        self,
        db: Database,
        worker_id: str,
        *,
        task_types: Collection[str] | None = None,
        lease: timedelta | None = None,
    ) -> None:
        if not worker_id:
            raise ValidationError("worker_id must be a non-empty string", field="worker_id")
        self.lease = TaskRepository.default_lease if lease is None else lease
        q.lease_seconds(self.lease)  # reject a bad lease now, not at the first claim
        self._db = db
        self.worker_id = worker_id
        self.task_types = frozenset(task_types) if task_types else None
        self._connection: AsyncConnection | None = None
        self._connected_at = 0.0
        self._recycle = pool_recycle(db.url.get_backend_name(), db.settings)
        # One connection runs one transaction at a time: a heartbeat sent from
        # a watchdog coroutine waits for the main loop's operation to end.
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        await self._connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        async with self._lock:  # let an operation in flight finish first
            connection, self._connection = self._connection, None
            if connection is not None:
                await connection.close()

    # ------------------------------------------------------------ the queue

    async def claim(self) -> Task | None:
        """The next ready task, now running under this worker's lease."""
        claimed = await self.claim_batch(1)
        return claimed[0] if claimed else None

    async def claim_batch(self, limit: int) -> list[Task]:
        """Up to ``limit`` ready tasks, in claim order, under one lease."""
        return await self._transaction(lambda connection: self._claim(connection, limit))

    async def heartbeat(self, task_id: str) -> Task:
        """Extend this worker's lease on ``task_id``."""
        params = {"lease_seconds": q.lease_seconds(self.lease)}

        async def extend(connection: AsyncConnection) -> Task:
            key = canonical_uuid(task_id, field="task_id")
            owned = {"task_key": key, "holder": self.worker_id, **params}
            rows = await fetch_rows(connection, q.heartbeat_statement(), owned)
            if not rows:
                await self._explain_not_owned(connection, key)
            return detached_from_row(Task, rows[0])

        return await self._transaction(extend)

    async def complete(self, task_id: str, result: Any = None) -> Task:
        """Complete ``task_id`` with ``result`` and ready its dependents whose
        prerequisites are now all complete, in one transaction."""

        async def complete(connection: AsyncConnection) -> Task:
            return detached_from_row(Task, await self._complete(connection, task_id, result))

        return await self._transaction(complete)

    async def complete_and_claim(self, task_id: str, result: Any = None) -> Task | None:
        """Complete ``task_id`` and claim the next task, in one transaction."""

        async def complete_and_claim(connection: AsyncConnection) -> Task | None:
            await self._complete(connection, task_id, result)
            claimed = await self._claim(connection, 1)
            return claimed[0] if claimed else None

        return await self._transaction(complete_and_claim)

    async def fail(self, task_id: str, error: str) -> Task:
        """Record a failed attempt (retried with back-off, or failed for good
        and its dependents cancelled). Failures are rare: this runs the unit
        of work's ``fail``, the one place that logic lives, on this worker's
        connection (a second one may not be free: an in-memory database has
        only one)."""

        async def fail(connection: AsyncConnection) -> Task:
            # The session joins this transaction; _transaction commits it.
            sessions = async_sessionmaker(bind=connection, expire_on_commit=False)
            async with UnitOfWork(sessions) as uow:
                task = await uow.tasks.fail(task_id, self.worker_id, error)
                await uow.commit()
            return task

        return await self._transaction(fail)

    # ------------------------------------------------------------ internals

    async def _connect(self) -> None:
        try:
            self._connection = await self._db.engine.connect()
        except Exception as error:
            _raise_translated(error)
        self._connected_at = time.monotonic()

    async def _transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async with self._lock:
            if self._connection is None:
                raise RuntimeError("use the worker as `async with db.queue_worker(...) as worker`")
            if 0 <= self._recycle < time.monotonic() - self._connected_at:
                # Held for the worker's life, the connection never goes back to
                # the pool to be recycled there: exchange it here, as the pool
                # would (a proxy's idle timeout may have dropped it).
                await self._connection.close()
                await self._connect()
                assert self._connection is not None
            try:
                async with self._connection.begin():
                    return await work(self._connection)
            except Exception as error:
                _raise_translated(error)

    async def _claim(self, connection: AsyncConnection, limit: int) -> list[Task]:
        statement, params = q.claim_request(
            connection.dialect.name, self.worker_id, limit, self.task_types, self.lease
        )
        claimed = [
            detached_from_row(Task, row) for row in await fetch_rows(connection, statement, params)
        ]
        claimed.sort(key=q.claim_order)
        return claimed

    async def _complete(self, connection: AsyncConnection, task_id: str, result: Any) -> Any:
        dialect = connection.dialect.name
        key = canonical_uuid(task_id, field="task_id")
        owned = {"task_key": key, "holder": self.worker_id, "outcome": result}
        rows = await fetch_rows(connection, q.complete_statement(dialect), owned)
        if not rows:
            await self._explain_not_owned(connection, key)
        (row,) = rows
        if q.must_release(dialect, row):
            for statement, params in q.release_requests(dialect, [key]):
                await fetch_rows(connection, statement, params)
        return row

    async def _explain_not_owned(self, connection: AsyncConnection, task_id: str) -> NoReturn:
        rows = await fetch_rows(connection, row_layout(Task).by_key, {"key_0": task_id})
        if not rows:
            raise NotFoundError("Task", task_id)
        raise lease_lost(detached_from_row(Task, rows[0]), self.worker_id)


def _raise_translated(error: Exception) -> NoReturn:
    translated = translate(error, entity="Task")
    if translated is None or translated is error:
        raise error
    raise translated from error
