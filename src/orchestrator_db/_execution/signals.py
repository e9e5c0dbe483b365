"""Wake-ups: work that became ready wakes those waiting for it.

A statement that makes work ready (a task submitted or released, an event
recorded) *announces* it on a channel (:data:`TASKS`, :data:`EVENTS`) through
its executor: on PostgreSQL that is a ``NOTIFY`` in its transaction,
delivered at commit to every process that listens; on every engine the
executor remembers the channel, and once its transaction commits, the
waiters of this process wake at once (:meth:`Signals.wake`).

A waiter (:meth:`Signals.wait`) tries, and when it found nothing waits for a
wake-up before trying again, until its wait ends. On PostgreSQL it listens
(``LISTEN``, on a connection of its own, opened at the first wait) and looks
again at least every :data:`SAFETY_POLL` seconds anyway: work also becomes
ready with time (a retry's back-off ends, a lease runs out), which nobody
announces. Where it cannot listen (SQLite; PgBouncer in transaction mode,
which cannot carry a session's ``LISTEN``; a listening connection that was
lost) it polls, every :data:`FIRST_POLL` seconds at first, twice as long
after each try that found nothing, up to :data:`MAX_POLL`: work of other
processes is found within a second, and an idle waiter costs one query a
second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

#: The channels work is announced on.
TASKS = "orchestrator_db_tasks"
EVENTS = "orchestrator_db_events"
CHANNELS = (TASKS, EVENTS)
#: Polling where nobody can be listened to: first pause, longest pause.
FIRST_POLL = 0.05
MAX_POLL = 1.0
#: While listening: the longest pause between tries (work ready by time).
SAFETY_POLL = 5.0
#: After a listening connection failed to open, how long to poll instead.
LISTEN_RETRY = 5.0
#: The longest a listening connection may take to open, to answer a check
#: (made after every safety poll that nothing woke), or to close.
OPEN_TIMEOUT = 2.0
CHECK_TIMEOUT = 1.0

R = TypeVar("R")
_log = logging.getLogger("orchestrator_db")


class Listener(Protocol):
    """A connection listening on :data:`CHANNELS` for other processes' work."""

    @property
    def alive(self) -> bool:
        """Not known to be lost."""
        ...

    async def answers(self) -> bool:
        """Whether it still answers (a connection dropped silently does
        not), within :data:`CHECK_TIMEOUT`."""
        ...

    async def close(self) -> None:
        """Close it, within :data:`CHECK_TIMEOUT` (else drop it)."""
        ...


#: Opens a :class:`Listener` that calls its argument with each channel notified.
Listen = Callable[[Callable[[str], None]], Awaitable[Listener]]


class Signals:
    """The waiters of one ``Database`` in this process, and its listener."""

    def __init__(self, listen: Listen | None, *, why_not: str | None = None) -> None:
        """``listen`` opens the listener (``None``: nothing to listen to;
        ``why_not`` says why, once, at the first wait)."""
        self._listen = listen
        self._why_not = why_not
        self._waiting: dict[str, set[asyncio.Event]] = {channel: set() for channel in CHANNELS}
        self._listener: Listener | None = None
        self._opening: asyncio.Lock | None = None
        self._retry_at = float("-inf")

    def wake(self, channels: Iterable[str]) -> None:
        """Wake the waiters of ``channels`` (their work was committed)."""
        for channel in channels:
            for event in self._waiting.get(channel, ()):
                event.set()

    def _woken(self, channel: str) -> None:
        self.wake((channel,))

    async def wait(
        self,
        channel: str,
        attempt: Callable[[], Awaitable[R]],
        found: Callable[[R], bool],
        seconds: float,
    ) -> R:
        """``await attempt()`` until ``found`` says it found work, waiting on
        ``channel`` between tries, for ``seconds`` at most; the last try's result."""
        deadline = time.monotonic() + seconds
        poll = FIRST_POLL
        woken = asyncio.Event()
        self._waiting[channel].add(woken)
        try:
            while True:
                woken.clear()  # a wake-up from now on is for the next try
                result = await attempt()
                remaining = deadline - time.monotonic()
                if found(result) or remaining <= 0:
                    return result
                listener, opened = await self._listening()
                if opened:
                    continue  # work committed before it listened: look again now
                pause = min(remaining, poll if listener is None else SAFETY_POLL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), pause)
                if woken.is_set():
                    poll = FIRST_POLL
                elif listener is None:
                    poll = min(poll * 2, MAX_POLL)
                elif pause == SAFETY_POLL and not await listener.answers():
                    await self._close_listener(listener)  # dropped silently: open another
        finally:
            self._waiting[channel].discard(woken)

    async def _listening(self) -> tuple[Listener | None, bool]:
        """The listener (``None``: poll), and whether it was opened just now."""
        if self._listen is None:
            if self._why_not is not None:
                _log.info("waiting for work by polling: %s", self._why_not)
                self._why_not = None
            return None, False
        listener = self._listener
        if listener is not None and listener.alive:
            return listener, False
        if time.monotonic() < self._retry_at:
            return None, False
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._listener is not None and self._listener.alive:
                return self._listener, False
            await self._close_listener(self._listener)
            try:
                async with asyncio.timeout(OPEN_TIMEOUT):
                    self._listener = await self._listen(self._woken)
            except Exception as error:  # polled meanwhile; tried again later
                self._retry_at = time.monotonic() + LISTEN_RETRY
                _log.info("cannot listen for work, polling: %s", type(error).__name__)
                return None, False
        return self._listener, True

    async def _close_listener(self, listener: Listener | None) -> None:
        if listener is None:
            return
        if self._listener is listener:
            self._listener = None
        with contextlib.suppress(Exception):
            await listener.close()

    async def close(self) -> None:
        """Close the listener (a later wait opens another)."""
        await self._close_listener(self._listener)
        self._opening = None
