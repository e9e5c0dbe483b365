"""Read replicas: which one a read-only unit of work goes to, if any.

Each replica has its engine of read-only units. A replica is asked its lag
(:func:`~orchestrator_db.sql.replication.replica_lag_statement`) before its
first unit and again once :data:`CHECK_EVERY` has passed, by the unit that
finds its answer stale (units that come meanwhile share that answer), on a
connection of its own; a replica that does not answer within
:data:`PROBE_TIMEOUT`, whose unit lost its connection, or that lags more
than ``max_lag`` is passed over, the unreachable ones for a back-off that
doubles up to :data:`MAX_BACK_OFF`, the lagging ones until the next check.
Replicas take turns; with none usable, reads go to the primary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator_db.errors import DatabaseUnavailableError, TransactionAbortedError
from orchestrator_db.sql.replication import replica_lag_statement

#: Seconds a replica's answer about its lag is trusted.
CHECK_EVERY = 1.0
#: Seconds a replica has to answer that question.
PROBE_TIMEOUT = 1.0
#: The first and the longest wait before an unreachable replica is tried again.
FIRST_BACK_OFF = 0.5
MAX_BACK_OFF = 30.0

_log = logging.getLogger("orchestrator_db")


@dataclass(frozen=True)
class ReplicaStatus:
    """What is known of a read replica (:meth:`Database.replica_status`)."""

    #: Its place in the ``replicas`` setting.
    index: int
    #: Seconds behind the primary at its last check (``None``: never answered).
    lag: float | None
    #: Seconds until it is tried again (0: usable now).
    passed_over_for: float
    #: Failures in a row (outages, not the units that saw them).
    failures: int


@dataclass(eq=False)
class Replica:
    """One replica's engines (of units, and of lag checks: its own
    connections, so a busy pool does not look like a dead replica) and what
    is known of it."""

    engine: AsyncEngine
    probe_engine: AsyncEngine
    checked_at: float = float("-inf")
    passed_over_until: float = float("-inf")
    failures: int = 0
    lag: float | None = None
    probing: asyncio.Future[bool] | None = None
    lost_at: float = float("-inf")

    def passed_over(self, seconds: float) -> None:
        self.passed_over_until = time.monotonic() + seconds
        self.checked_at = float("-inf")


class ReplicaSet:
    """The replicas of a database, and the choice among them."""

    def __init__(self, engines: Sequence[tuple[AsyncEngine, AsyncEngine]], max_lag: float) -> None:
        """``engines``: each replica's engine of units and engine of checks."""
        self.replicas = [Replica(engine, probe) for engine, probe in engines]
        self.max_lag = max_lag
        self._turn = 0

    async def choose(self) -> Replica | None:
        """The next usable replica, asking those whose answer is stale;
        ``None`` when none is usable."""
        count = len(self.replicas)
        start, self._turn = self._turn, self._turn + 1
        for offset in range(count):
            replica = self.replicas[(start + offset) % count]
            if replica.passed_over_until > time.monotonic():
                continue
            if time.monotonic() - replica.checked_at < CHECK_EVERY or await self._checked(replica):
                return replica
        return None

    async def _checked(self, replica: Replica) -> bool:
        """Whether ``replica`` is usable, asked once however many units
        want to know at the same time."""
        if replica.probing is None:
            replica.probing = asyncio.ensure_future(self._probe(replica))
            replica.probing.add_done_callback(lambda _: setattr(replica, "probing", None))
        return await asyncio.shield(replica.probing)

    async def _probe(self, replica: Replica) -> bool:
        started = time.monotonic()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                async with replica.probe_engine.connect() as connection:
                    found = (await connection.execute(replica_lag_statement())).scalar_one()
            lag = float(found)
        except Exception as error:  # whatever kept it from answering: passed over
            _log.info("read replica %d passed over: %s", self.replicas.index(replica), _why(error))
            self.unreachable(replica)
            return False
        if replica.lost_at >= started:
            return False  # a unit lost its connection meanwhile: that is newer
        replica.failures = 0
        replica.lag = lag
        replica.checked_at = time.monotonic()
        if lag > self.max_lag:
            replica.passed_over(CHECK_EVERY)
            return False
        return True

    def unreachable(self, replica: Replica) -> None:
        """Pass ``replica`` over: for longer each time it fails again, but
        once per outage however many of its units saw it."""
        now = time.monotonic()
        replica.lost_at = now
        if replica.passed_over_until > now:
            return
        replica.passed_over(min(MAX_BACK_OFF, FIRST_BACK_OFF * 2.0 ** min(replica.failures, 16)))
        replica.failures += 1

    def ended(self, replica: Replica, error: BaseException | None) -> None:
        """A unit on ``replica`` ended with ``error``: a lost connection
        passes the replica over."""
        if isinstance(error, DatabaseUnavailableError) or (
            isinstance(error, TransactionAbortedError)
            and isinstance(error.cause, DatabaseUnavailableError)
        ):
            self.unreachable(replica)

    def status(self) -> list[ReplicaStatus]:
        now = time.monotonic()
        return [
            ReplicaStatus(index, r.lag, max(0.0, r.passed_over_until - now), r.failures)
            for index, r in enumerate(self.replicas)
        ]

    async def dispose(self) -> None:
        for replica in self.replicas:
            await replica.engine.dispose()
            await replica.probe_engine.dispose()


def _why(error: BaseException) -> str:
    """What went wrong, without the text of a driver's error (which may
    quote a URL or a value)."""
    if isinstance(error, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT:g} s"
    return type(error).__name__
