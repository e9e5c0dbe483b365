"""Read replicas: which one a read-only unit of work goes to, if any.

Each replica has its engine of read-only units. A replica is asked its lag
(:func:`~orchestrator_db.sql.replication.replica_lag_statement`) before its
first unit and again once :data:`CHECK_EVERY` has passed, by the unit that
finds its answer stale; a replica that does not answer within
:data:`PROBE_TIMEOUT`, whose unit lost its connection, or that lags more
than ``max_lag`` is passed over, the unreachable ones for a back-off that
doubles up to :data:`MAX_BACK_OFF`, the lagging ones until the next check.
Replicas take turns; with none usable, reads go to the primary.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator_db.errors import DatabaseUnavailableError
from orchestrator_db.sql.replication import replica_lag_statement

#: Seconds a replica's answer about its lag is trusted.
CHECK_EVERY = 1.0
#: Seconds a replica has to answer that question.
PROBE_TIMEOUT = 1.0
#: The first and the longest wait before an unreachable replica is tried again.
FIRST_BACK_OFF = 0.5
MAX_BACK_OFF = 30.0


@dataclass(eq=False)
class Replica:
    """One replica's engine and what is known of it."""

    engine: AsyncEngine
    checked_at: float = float("-inf")
    passed_over_until: float = float("-inf")
    failures: int = 0
    lag: float | None = None

    def passed_over(self, seconds: float) -> None:
        self.passed_over_until = time.monotonic() + seconds
        self.checked_at = float("-inf")


class ReplicaSet:
    """The replicas of a database, and the choice among them."""

    def __init__(self, engines: Sequence[AsyncEngine], max_lag: float) -> None:
        self.replicas = [Replica(engine) for engine in engines]
        self.max_lag = max_lag
        self._turns = itertools.cycle(self.replicas)

    async def choose(self) -> Replica | None:
        """The next usable replica, asking those whose answer is stale;
        ``None`` when none is usable."""
        for _ in range(len(self.replicas)):
            replica = next(self._turns)
            now = time.monotonic()
            if replica.passed_over_until > now:
                continue
            if now - replica.checked_at >= CHECK_EVERY and not await self._probe(replica):
                continue
            return replica
        return None

    async def _probe(self, replica: Replica) -> bool:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT), replica.engine.connect() as connection:
                lag = float((await connection.execute(replica_lag_statement())).scalar_one())
        except Exception:  # any failure to answer: unreachable for now
            self.unreachable(replica)
            return False
        replica.failures = 0
        replica.lag = lag
        replica.checked_at = time.monotonic()
        if lag > self.max_lag:
            replica.passed_over(CHECK_EVERY)
            return False
        return True

    def unreachable(self, replica: Replica) -> None:
        replica.passed_over(min(MAX_BACK_OFF, FIRST_BACK_OFF * 2.0 ** min(replica.failures, 16)))
        replica.failures += 1

    def ended(self, replica: Replica, error: BaseException | None) -> None:
        """A unit on ``replica`` ended with ``error``: a lost connection
        passes the replica over."""
        if isinstance(error, DatabaseUnavailableError):
            self.unreachable(replica)

    async def dispose(self) -> None:
        for replica in self.replicas:
            await replica.engine.dispose()
