"""Sync code that may await, run in one long-lived greenlet per thread
(``_execution.greenlets``) rather than a new greenlet per run: what it gives
the function is what ``greenlet_spawn`` gives, and calls on the Database
make no greenlet per call."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import threading
import weakref
from typing import Any

import greenlet  # type: ignore[import-untyped]
import pytest
from sqlalchemy import update
from sqlalchemy.util import await_

from orchestrator_db import Database, Task
from orchestrator_db._execution import greenlets
from tests.helpers import add_tasks, task

VARIABLE: contextvars.ContextVar[str] = contextvars.ContextVar("VARIABLE", default="unset")


def _current() -> Any:
    return greenlet.getcurrent()


async def test_runs_reuse_one_greenlet_other_than_the_callers() -> None:
    first = await greenlets.run(_current)
    second = await greenlets.run(_current)
    assert first is second
    assert first is not greenlet.getcurrent()


async def test_values_errors_and_awaits_come_back_as_from_greenlet_spawn() -> None:
    def awaits(start: int) -> int:
        total = start
        for step in (1, 2):
            total += await_(asyncio.sleep(0, result=step))
        return total

    assert await greenlets.run(awaits, 10) == 13

    refused = ValueError("refused")

    def raises() -> None:
        raise refused

    with pytest.raises(ValueError, match="refused") as raised:
        await greenlets.run(raises)
    assert raised.value is refused
    assert await greenlets.run(awaits, 0) == 3  # the runner serves on


async def test_a_busy_runner_leaves_other_runs_to_new_greenlets() -> None:
    release = asyncio.Event()

    def waits(name: str) -> tuple[str, Any]:
        await_(release.wait())
        return name, greenlet.getcurrent()

    runs = [asyncio.ensure_future(greenlets.run(waits, name)) for name in ("a", "b")]
    await asyncio.sleep(0)
    release.set()
    (first, one), (second, other) = await asyncio.gather(*runs)
    assert (first, second) == ("a", "b")
    assert one is not other  # the second did not wait for the first's greenlet
    assert await greenlets.run(_current) is one  # the runner is free again


async def test_a_cancellation_reaches_the_function_where_it_awaits() -> None:
    seen: list[BaseException] = []
    started = asyncio.Event()

    def waits() -> None:
        started.set()
        try:
            await_(asyncio.get_running_loop().create_future())
        except BaseException as error:
            seen.append(error)
            raise

    running = asyncio.ensure_future(greenlets.run(waits))
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert [type(error) for error in seen] == [asyncio.CancelledError]
    assert await greenlets.run(lambda: 7) == 7


async def test_the_function_sees_the_callers_context_variables() -> None:
    async def as_(value: str) -> str:
        VARIABLE.set(value)
        return await greenlets.run(VARIABLE.get)

    assert list(await asyncio.gather(as_("one"), as_("two"))) == ["one", "two"]
    assert await greenlets.run(VARIABLE.get) == "unset"


def test_each_thread_has_its_own_runner() -> None:
    found: dict[str, Any] = {}

    def in_thread(name: str) -> None:
        async def twice() -> tuple[Any, Any]:
            return await greenlets.run(_current), await greenlets.run(_current)

        found[name] = asyncio.run(twice())

    threads = [threading.Thread(target=in_thread, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (a1, a2), (b1, b2) = found["a"], found["b"]
    assert a1 is a2 and b1 is b2
    assert a1 is not b1


def test_a_runner_sqlalchemy_would_not_await_in_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In a thread of its own: the runner is made (and checked) at its first use.
    monkeypatch.setattr(greenlets._Runner, "__sqlalchemy_greenlet_provider__", False)
    found: list[Any] = []

    def in_thread() -> None:
        async def runs() -> None:
            for _ in range(2):
                found.append(await greenlets.run(_current))
            found.append(await greenlets.run(lambda: await_(asyncio.sleep(0, result=5))))

        asyncio.run(runs())

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    first, second, awaited = found
    assert first is not second  # greenlet_spawn's, one per run
    assert awaited == 5


async def test_calls_on_the_database_make_no_greenlet_per_call(db: Database) -> None:
    (added,) = await add_tasks(db, task())
    await db.tasks.update(added.id, title="first")  # the pool and the runner are made
    entered: list[Any] = []  # held: a greenlet's id is not reused meanwhile

    def trace(event: str, args: tuple[Any, Any]) -> None:
        if event in ("switch", "throw"):
            entered.append(args[1])

    previous = greenlet.settrace(trace)
    try:
        for i in range(20):
            await db.tasks.update(added.id, title=f"title {i}")
    finally:
        greenlet.settrace(previous)
    # The caller's and the runner's: 40 greenlets were made for these before.
    assert len({id(target) for target in entered}) <= 2


async def test_begin_commits_or_rolls_back_as_connection_begin(db: Database) -> None:
    (kept, dropped) = await add_tasks(db, task(title="kept"), task(title="dropped"))
    async with db.engine.connect() as connection:
        async with greenlets.begin(connection):
            await connection.execute(
                update(Task).where(Task.id == kept.id).values(title="committed")
            )
        with pytest.raises(RuntimeError, match="abandon"):
            async with greenlets.begin(connection):
                await connection.execute(
                    update(Task).where(Task.id == dropped.id).values(title="rolled back")
                )
                raise RuntimeError("abandon")
        assert not connection.in_transaction()
    titles = {t.id: t.title for t in await db.tasks.list()}
    assert titles == {kept.id: "committed", dropped.id: "dropped"}


async def test_queue_worker_transactions_make_no_greenlet_each(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.tasks.submit_many([task(title=f"t{i}") for i in range(11)])
        await uow.commit()
    async with db.queue_worker("w") as worker:
        claimed = await worker.claim()
        assert claimed is not None
        entered: list[Any] = []
        previous = greenlet.settrace(lambda event, args: entered.append(args[1]))
        try:
            for _ in range(10):
                claimed = await worker.complete_and_claim(claimed.id)
                assert claimed is not None
        finally:
            greenlet.settrace(previous)
    assert len({id(target) for target in entered}) <= 2  # 20 made before


async def test_a_write_units_statements_flush_and_commit_make_no_greenlet_each(
    db: Database,
) -> None:
    (added,) = await add_tasks(db, task())

    async def unit(i: int) -> None:
        async with db.unit_of_work() as uow:
            held = await uow.tasks.get(added.id)  # the unit's connection, checked out
            held.title = f"title {i}"
            await uow.tasks.add(task(title=f"new {i}"))  # flushes both
            await uow.commit()

    await unit(0)
    entered: list[Any] = []
    previous = greenlet.settrace(lambda event, args: entered.append(args[1]))
    try:
        for i in range(1, 6):
            await unit(i)
    finally:
        greenlet.settrace(previous)
    assert len({id(target) for target in entered}) <= 2  # 15 made before
    assert (await db.tasks.get(added.id)).title == "title 5"


class _Suspends:
    def __await__(self) -> Any:
        return (yield "suspended")


def _drive(coroutine: Any) -> Any:
    try:
        while True:
            coroutine.send(None)
    except StopIteration as stop:
        return stop.value


def test_a_run_closed_in_another_thread_leaves_the_runner_to_its_function() -> None:
    # Its function stays suspended in the runner (a greenlet cannot be
    # switched to from another thread): the next run must not resume it.
    def in_thread() -> None:
        _drive(greenlets.run(lambda: None))
        stale = greenlets.run(lambda: await_(_Suspends()) or "stale")
        stale.send(None)

        def close(coroutine: Any) -> None:
            with contextlib.suppress(greenlet.error):  # how greenlet refuses the switch
                coroutine.close()

        closer = threading.Thread(target=close, args=(stale,))
        closer.start()
        closer.join()
        del stale
        found.append(_drive(greenlets.run(lambda: "fresh")))
        found.append(_drive(greenlets.run(_current)) is _drive(greenlets.run(_current)))

    found: list[Any] = []
    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert found == ["fresh", True]  # a new runner, reused


def test_a_run_keeps_nothing_of_its_function_alive() -> None:
    class Value:
        pass

    def fails(value: Value) -> None:
        raise KeyError("refused")

    async def runs() -> tuple[weakref.ref[Value], weakref.ref[Value]]:
        returned = await greenlets.run(Value)
        argument = Value()
        with pytest.raises(KeyError):
            await greenlets.run(fails, argument)
        return weakref.ref(returned), weakref.ref(argument)

    gc.disable()  # nothing left to a cycle collection
    try:
        returned, argument = asyncio.run(runs())
        assert returned() is None
        assert argument() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
async def test_a_call_waiting_in_the_runner_for_the_pool_can_be_abandoned(
    database_url: str, database_options: dict[str, Any], how: str
) -> None:
    options = {**database_options, "pool_size": 1, "max_overflow": 0, "pool_timeout": 30}
    async with Database(database_url, **options) as db:
        (added,) = await add_tasks(db, task())
        async with db.unit_of_work() as holder:
            held = await holder.tasks.get(added.id)  # the pool's one connection
            waiting = asyncio.ensure_future(db.tasks.update(added.id, title="waited"))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # checking out, in the runner
            if how == "cancelled":
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting
            else:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await waiting
            held.title = "held"
            await holder.commit()  # its flush and commit: in the runner again
        assert db.pool_status().checked_out == 0
        await db.tasks.update(added.id, title="after")
        assert (await db.tasks.get(added.id)).title == "after"
        assert db.pool_status().checked_out == 0
