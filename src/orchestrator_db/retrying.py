"""Trying again: a unit of work after a conflict or a lost connection
(:meth:`Database.run <orchestrator_db.Database.run>`), and the back-off
between attempts that :meth:`Database.wait_until_ready
<orchestrator_db.Database.wait_until_ready>` shares."""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar

from orchestrator_db._execution.observe import Observer
from orchestrator_db.errors import (
    DatabaseUnavailableError,
    TransactionConflictError,
    ValidationError,
)


class Unit(Protocol):
    """What :func:`run` needs of a unit of work."""

    async def commit(self) -> None: ...


T = TypeVar("T")
U = TypeVar("U", bound=Unit)

#: The errors after which the whole unit of work may be run again: it was
#: rolled back (a conflict), or its connection is gone (a restart, a
#: failover). A connection lost during COMMIT leaves unknown whether the
#: commit happened, so only idempotent work is retried.
RETRYABLE = (TransactionConflictError, DatabaseUnavailableError)
#: The first back-off, and the longest: three retries span about a second
#: (a PostgreSQL restart); eight, ten to twenty (a failover).
FIRST_DELAY = 0.2
MAX_DELAY = 5.0


def delay(attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (0 the first):
    exponential, capped at :data:`MAX_DELAY`, half of it random (so that
    clients that failed together do not come back together)."""
    ceiling = min(MAX_DELAY, FIRST_DELAY * 2.0 ** min(attempt, 16))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


async def run(
    unit: Callable[[], AbstractAsyncContextManager[U]],
    work: Callable[[U], Awaitable[T]],
    *,
    retries: int,
    commit: bool,
    observer: Observer | None = None,
) -> T:
    """``work`` in a new ``unit()``, committed (with ``commit``) when it
    returns; after a :data:`RETRYABLE` error, again in a fresh unit, up to
    ``retries`` more times, with :func:`delay` between attempts."""
    attempt = 0
    while True:
        try:
            async with unit() as uow:
                pending = work(uow)
                if not inspect.isawaitable(pending):
                    raise ValidationError("work must be a coroutine function taking a unit of work")
                result = await pending
                if commit:
                    await uow.commit()
            return result
        except RETRYABLE as error:
            if attempt >= retries:
                raise
            pause = delay(attempt)
            if observer is not None:
                observer.retrying(error, attempt, pause)
        await asyncio.sleep(pause)
        attempt += 1
