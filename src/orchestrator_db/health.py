"""Health (seed 001): probing a database, and waiting until it is ready.

:func:`probe` answers within its timeout whatever the database does: the
probe runs as a task of its own, and when the time is up the report says
so while the task is left to finish, cancelled where a statement can be
interrupted (PostgreSQL; on SQLite it ends within ``busy_timeout``, its
connection back in the pool). ``Database.close()`` waits for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator_db import retrying
from orchestrator_db._execution.backend import Backend
from orchestrator_db._execution.errors import translate
from orchestrator_db.errors import (
    DatabaseConfigurationError,
    DatabaseUnavailableError,
    DataLayerError,
    SchemaNotReadyError,
    UnknownRevisionError,
)
from orchestrator_db.migrations import runner as migrations

#: Seconds :meth:`Database.health_check` waits for an answer by default.
HEALTH_TIMEOUT = 5.0
#: The shortest probe :func:`wait_until_ready` makes, however little of its
#: timeout is left: a probe needs time to be answered.
MIN_PROBE = 0.25


@dataclass(frozen=True)
class PoolStatus:
    size: int
    checked_out: int
    overflow: int
    checked_in: int


@dataclass(frozen=True)
class HealthReport:
    """What :meth:`Database.health_check` found. ``ok`` is False on any failure."""

    ok: bool
    latency_ms: float
    dialect: str
    server_version: str | None
    current_revision: str | None
    head_revision: str | None
    pool: PoolStatus
    error: str | None = None
    #: The server answered (``ok`` may still be False: an unmigrated or
    #: out-of-date schema).
    reachable: bool = False

    @property
    def up_to_date(self) -> bool:
        """The database is at the newest revision this package ships."""
        return self.current_revision is not None and self.current_revision == self.head_revision


@dataclass(frozen=True)
class Metrics:
    """What :meth:`Database.metrics` found: the pools, counts since the
    ``Database`` was made, and tasks per status."""

    pool: PoolStatus
    read_pool: PoolStatus
    tasks_by_status: dict[str, int]
    units_opened: int
    units_failed: int
    slow_statements: int
    pool_waits: int
    rescued_leases: int
    retries: int
    replica_fallbacks: int


@dataclass
class _Found:
    reachable: bool = False
    version: str | None = None
    current: str | None = None


async def _ask(engine: AsyncEngine, found: _Found) -> None:
    async with engine.connect() as connection:
        await connection.exec_driver_sql("SELECT 1")
        found.reachable = True
        info = connection.dialect.server_version_info
        found.version = ".".join(str(part) for part in info) if info else None
        found.current = await connection.run_sync(migrations.current_revision)


async def probe(
    engine: AsyncEngine,
    backend: Backend,
    seconds: float,
    pool: Callable[[], PoolStatus],
    background: set[asyncio.Task[Any]],
) -> tuple[HealthReport, DataLayerError | None]:
    """The report of one probe through ``engine``, within ``seconds``, and
    the typed error behind its ``error``. A probe still going when the time
    is up is cancelled and kept in ``background`` until it ends."""
    started = time.perf_counter()
    head = migrations.head_revision()
    found = _Found()
    error: DataLayerError | None = None
    asking = asyncio.ensure_future(_ask(engine, found))
    done, _ = await asyncio.wait({asking}, timeout=seconds)
    if not done:
        if backend.interruptible:
            asking.cancel()
        background.add(asking)
        asking.add_done_callback(_forgotten(background))
        error = DatabaseUnavailableError(f"no answer within {seconds:g} s")
    elif (failure := asking.exception()) is not None:
        error = translate(failure, backend)
    else:
        error = migrations.revision_problem(found.current)
    report = HealthReport(
        ok=error is None,
        latency_ms=(time.perf_counter() - started) * 1000,
        dialect=backend.name,
        server_version=found.version,
        current_revision=found.current,
        head_revision=head,
        pool=pool(),
        error=None if error is None else str(error),
        reachable=found.reachable,
    )
    return report, error


def _forgotten(background: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def ended(task: asyncio.Task[Any]) -> None:
        background.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: it was reported as no answer

    return ended


async def wait_until_ready(
    probe: Callable[[float], Awaitable[tuple[HealthReport, DataLayerError | None]]],
    seconds: float,
    *,
    at_head: bool,
) -> HealthReport:
    """Probe until the server answers (with ``at_head``: and its schema is
    at the newest revision), with :func:`retrying.delay` between probes;
    the report that found it ready.

    Raises at once what waiting cannot mend: a refused configuration
    (:class:`~orchestrator_db.errors.DatabaseConfigurationError`: no such
    database, a wrong password) and, with ``at_head``, a schema newer than
    this package (:class:`~orchestrator_db.errors.UnknownRevisionError`).
    After ``seconds`` (and at most one :data:`MIN_PROBE` more), the schema
    not at head raises :class:`~orchestrator_db.errors.SchemaNotReadyError`,
    no answer :class:`~orchestrator_db.errors.DatabaseUnavailableError`."""
    deadline = time.monotonic() + seconds
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        report, error = await probe(min(max(remaining, MIN_PROBE), HEALTH_TIMEOUT))
        if report.ok or (report.reachable and not at_head):
            return report
        if isinstance(error, DatabaseConfigurationError) or (
            at_head and isinstance(error, UnknownRevisionError)
        ):
            raise error
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            why = f"the database was not ready within {seconds:g} s: {report.error}"
            if report.reachable:
                raise SchemaNotReadyError(message=why)
            raise DatabaseUnavailableError(why)
        await asyncio.sleep(min(retrying.delay(attempt), remaining))
        attempt += 1
