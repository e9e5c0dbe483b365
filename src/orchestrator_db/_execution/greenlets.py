"""Sync code that may await (SQLAlchemy's pool, its dialects), run in one
long-lived greenlet per thread rather than a new greenlet per run.

SQLAlchemy runs an async driver's I/O from its sync code in a greenlet, and
:func:`sqlalchemy.util.greenlet_spawn` makes a new one each time. A new
greenlet running Python code gets a frame stack of its own, which CPython
maps as the greenlet's first frame is pushed and unmaps as the greenlet
ends: an ``mmap`` and a ``munmap`` per greenlet (counted with strace), with
their page faults, about 20 us each time in a call on the ``Database`` on a
small machine, where the drivers' threads make every unmapping a TLB
shootdown. A call checks a connection out and gives it back: two of them,
40 us of a 150 us call (SQLite, inline).

:func:`run` runs the function in this thread's one greenlet instead, whose
stack stays mapped from one run to the next; when that greenlet is busy (a
function of another coroutine waits in it, for a pooled connection say), or
cannot serve (SQLAlchemy would not await in it: see :func:`_runner`), in a
new greenlet, as SQLAlchemy would.

What the function sees is what :func:`~sqlalchemy.util.greenlet_spawn`
gives it: the caller's context variables, ``await_`` for what it awaits,
and whatever the caller's coroutine is sent (a cancellation) raised where
it awaits.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import greenlet  # type: ignore[import-untyped]  # SQLAlchemy's asyncio extra
from sqlalchemy import Transaction
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.concurrency import in_greenlet

T = TypeVar("T")


class _Outcome:
    """What a run of the function came to: its value or its exception."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any, error: BaseException | None) -> None:
        self.value = value
        self.error = error


class _Runner(greenlet.greenlet):  # type: ignore[misc]
    # What SQLAlchemy's await_ asks of the greenlet it runs in before it
    # switches to its parent with what it awaits (its greenlet_spawn's
    # greenlets say the same). _runner checks that await_ takes it so.
    __sqlalchemy_greenlet_provider__ = True
    #: While a run uses it: a weak reference to that run's :class:`_Use`.
    use: weakref.ref[_Use] | None = None

    def busy(self) -> bool:
        return self.use is not None


class _Use:
    """Held by a run (its frame) while it uses the runner: when the run is
    gone with its function still suspended in the runner (its coroutine
    closed from another thread, or dropped), nobody can finish that
    function, and the thread makes itself another runner."""

    __slots__ = ("__weakref__",)


def _outcome(
    function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> _Outcome:
    try:
        return _Outcome(function(*args, **kwargs), None)
    except greenlet.GreenletExit:
        raise  # the greenlet is being killed (its thread ended): let it die
    except BaseException as error:
        return _Outcome(None, error)


def _serve(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The runner's body: runs what it is sent, then sends its outcome back
    to whoever sent it (its parent, set at each run), for ever."""
    while True:
        outcome = _outcome(function, args, kwargs)
        function = args = kwargs = None  # type: ignore[assignment]  # hold nothing between runs
        function, args, kwargs = greenlet.getcurrent().parent.switch(outcome)


_threads = threading.local()


def _runner() -> _Runner | None:
    """This thread's runner, made at its first use; ``None`` if SQLAlchemy
    would not await in it (``in_greenlet()`` says no)."""
    runner: _Runner | None = getattr(_threads, "runner", None)
    if runner is not None and runner.use is not None and runner.use() is None:
        runner = None  # left suspended by a run that is gone (see _Use)
    if runner is None or runner.dead:
        if getattr(_threads, "refused", False):
            return None
        runner = _Runner(_serve)
        if runner.switch(in_greenlet, (), {}).value is not True:
            _threads.refused = True  # greenlet_spawn's greenlets, then
            return None
        _threads.runner = runner
    return runner


async def run(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in a greenlet, as ``await
    greenlet_spawn(function, *args, **kwargs)`` (see the module)."""
    runner = _runner()
    if runner is None or runner.busy():
        return await greenlet_spawn(function, *args, **kwargs)
    current = greenlet.getcurrent()
    use = _Use()
    runner.use = weakref.ref(use)
    result: Any = None
    try:
        runner.parent = current
        runner.gr_context = current.gr_context
        result = runner.switch(function, args, kwargs)
        while not isinstance(result, _Outcome):
            # The function awaits ``result`` (await_): await it here.
            try:
                value = await result
            except BaseException:
                result = runner.throw(*sys.exc_info())
            else:
                result = runner.switch(value)
    finally:
        # Free again only if the function ended: else it is still suspended
        # in the runner (this run was closed from another thread, where the
        # runner cannot be switched to), and the runner stays its (see _Use).
        if isinstance(result, _Outcome):
            runner.gr_context = None  # hold no caller's context variables between runs
            runner.use = None
    # The runner's frame holds the outcome until its next run: empty it.
    error, value, result.error, result.value = result.error, result.value, None, None
    if error is not None:
        try:
            raise error
        finally:
            del error  # else: the traceback's frame -> error -> traceback, a cycle
    return value  # type: ignore[no-any-return]


class begin:
    """``async with greenlets.begin(connection):``: ``async with
    connection.begin():``, its BEGIN and its end (commit, or rollback on an
    exception) run through :func:`run`."""

    __slots__ = ("_connection", "_transaction")

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._transaction: Transaction | None = None

    async def __aenter__(self) -> None:
        sync = self._connection.sync_connection
        assert sync is not None
        self._transaction = await run(sync.begin)
        self._transaction.__enter__()  # as AsyncTransaction's: no I/O

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        transaction, self._transaction = self._transaction, None
        assert transaction is not None
        await run(transaction.__exit__, kind, error, traceback)
