"""What a ``Database`` tells its operators: logs under ``orchestrator_db.*``
and the counters behind ``db.metrics()``.

* ``orchestrator_db.statements``: a statement slower than the
  ``slow_statement_seconds`` setting, at WARNING, by name (``UPDATE tasks``)
  and duration, never with its values;
* ``orchestrator_db.pool``: a wait of more than :data:`POOL_WAIT` seconds for
  a pooled connection, at WARNING;
* ``orchestrator_db.queue``: tasks rescued from expired leases, at INFO;
* ``orchestrator_db.retry``: a unit of work run again by ``db.run``, at INFO;
* ``orchestrator_db.replicas``: reads sent to the primary for want of a
  usable replica (when that starts and when it ends), at INFO;
* ``orchestrator_db.migrations``: each revision applied, at INFO.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

STATEMENTS = logging.getLogger("orchestrator_db.statements")
POOL = logging.getLogger("orchestrator_db.pool")
QUEUE = logging.getLogger("orchestrator_db.queue")
RETRY = logging.getLogger("orchestrator_db.retry")
REPLICAS = logging.getLogger("orchestrator_db.replicas")
MIGRATIONS = logging.getLogger("orchestrator_db.migrations")

#: Seconds of waiting for a pooled connection worth a warning.
POOL_WAIT = 1.0

_VERBS = {"Insert": "INSERT", "Update": "UPDATE", "Delete": "DELETE", "Select": "SELECT"}


class Label(str):
    """What a statement is called in the log when there is no statement
    object to name (a flush, the session's commit)."""

    __slots__ = ()


@dataclass
class Counters:
    """Counts since the ``Database`` was made."""

    units_opened: int = 0
    units_failed: int = 0
    slow_statements: int = 0
    pool_waits: int = 0
    rescued_leases: int = 0
    retries: int = 0
    replica_fallbacks: int = 0


def statement_name(statement: Any) -> str:
    """``UPDATE tasks``, ``SELECT tasks, task_dependencies``: what a
    statement does to which tables, never its values."""
    if isinstance(statement, str):
        return "SQL text"  # its words may hold values: never logged
    kind = type(statement).__name__
    verb = _VERBS.get(kind, kind)
    table = getattr(statement, "table", None)
    if table is not None:
        return f"{verb} {getattr(table, 'name', table)}"
    froms = getattr(statement, "get_final_froms", None)
    if callable(froms):
        names = [str(getattr(f, "name", "?")) for f in froms()]
        return f"{verb} {', '.join(names)}" if names else verb
    return "SQL text" if kind == "TextClause" else verb


class Observer:
    """One ``Database``'s counters and logs (see the module)."""

    def __init__(self, slow_seconds: float | None) -> None:
        self.counters = Counters()
        self.slow_seconds = slow_seconds
        self._falling_back = False

    def statement(self, name: Any, started: float) -> None:
        """A statement that began at ``started`` (``time.perf_counter()``) ended."""
        slow = self.slow_seconds
        if slow is None:
            return
        took = time.perf_counter() - started
        if took >= slow:
            self.counters.slow_statements += 1
            what = name if isinstance(name, Label) else statement_name(name)
            STATEMENTS.warning("slow statement: %s took %.3f s", what, took)

    def pool_wait(self, started: float, pool: Any) -> None:
        waited = time.perf_counter() - started
        if waited >= POOL_WAIT:
            self.counters.pool_waits += 1
            POOL.warning("waited %.1f s for a pooled connection (%s)", waited, pool.status())

    def unit_opened(self) -> None:
        self.counters.units_opened += 1

    def unit_failed(self) -> None:
        self.counters.units_failed += 1

    def rescued(self, count: int) -> None:
        self.counters.rescued_leases += count
        QUEUE.info("rescued %d tasks whose lease ran out", count)

    def retrying(self, error: BaseException, attempt: int, delay: float) -> None:
        self.counters.retries += 1
        RETRY.info(
            "running the unit of work again (attempt %d) in %.2f s after %s",
            attempt + 2,
            delay,
            type(error).__name__,
        )

    def reads_on_primary(self, fallback: bool) -> None:
        """A read-only unit found no usable replica (``fallback``), or one."""
        if fallback:
            self.counters.replica_fallbacks += 1
        if fallback != self._falling_back:
            self._falling_back = fallback
            if fallback:
                REPLICAS.info("no read replica is usable: reads go to the primary")
            else:
                REPLICAS.info("a read replica is usable again")
