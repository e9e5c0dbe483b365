"""orchestrator_db beside the libraries a user would pick instead, on the same
table, in the same run (``python -m bench peers``; the peers come from the
``bench`` extra, which ``make bench`` installs).

Every contender works on our migrated ``tasks`` table: its indexes and its
``updated_at`` trigger are there for all (the peers' models map every
column, as ours does: see ``peer_models``; a bulk insert sets four and
leaves the rest to the defaults); then again on that table
without its secondary indexes and trigger, for all, ours included. SQLite runs in WAL with
``synchronous=NORMAL`` for everyone; on PostgreSQL the loaded tables are
analyzed, as autovacuum would soon do. Each operation is run in its own unit
(a transaction, or autocommit where that is the library's way: ours are
calls on the ``Database``, ``db.tasks.update(...)``), as a request handler
would: bulk insert into an empty table and into one of 100,000
rows, get by id, a filtered list of 50, the first page and a page 90,000
rows deep (ours: keyset; the peers: OFFSET, ordered by their primary key),
a one-row update, a delete, a count. Rounds are interleaved, each started
by the next contender in turn (none always runs first); each figure is
the median time per call, and the table gives the ratio of the best peer's
time to ours (>= 1.0: we are at least as fast). The raw driver's time is
shown beside, for scale. On SQLite ours runs twice: through aiosqlite's
thread (the default) and with ``sqlite_execution="inline"``, the package's
documented fastest way there; both ratios are reported.
"""

from __future__ import annotations

import abc
import asyncio
import gc
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from bench.common import ADMIN_DSN, pg_admin
from bench.sqlite import task_values
from orchestrator_db import Database, Task
from orchestrator_db.models import Base
from orchestrator_db.testing.database import PostgresServer
from orchestrator_db.types import new_id

ROWS = 100_000
BULK = 5_000
ROUNDS = 5
CALLS = {
    "bulk insert 5,000 into an empty table": 1,
    "bulk insert 5,000 into 100,000+ rows": 1,
    "get by id": 100,
    "filtered list of 50": 50,
    "first page of 50": 50,
    "page of 50, 90,000 rows deep": 10,
    "update one row": 100,
    "delete one row": 100,
    "count (filtered)": 50,  # a 10 ms scan: more calls, less noise
}
DEEP = 90_000

Op = Callable[[int], Awaitable[None]]  # (call number) -> one call


def _rows(count: int) -> list[dict[str, Any]]:
    # One row in ten is a "review": the filtered list finds 50 rows for everyone.
    return [
        dict(v, id=new_id(), task_type="review" if i % 10 == 0 else v["task_type"])
        for i, v in enumerate(task_values(count))
    ]


class Contender(abc.ABC):
    """One library's way of doing each operation."""

    name = ""

    def __init__(self, url: str, bulk_url: str) -> None:
        self.url, self.bulk_url = url, bulk_url
        self.ids: list[str] = []  # rows to read and update
        self.doomed: list[str] = []  # rows to delete, each once

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect, as the library does."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect."""

    @abc.abstractmethod
    def operations(self) -> dict[str, Op]:
        """Each operation of ``CALLS``, in its order (see ``_named``)."""


class Ours(Contender):
    name = "orchestrator_db"
    options: dict[str, Any] = {}

    async def start(self) -> None:
        self.db = Database(self.url, **self.options)
        self.bulk_db = Database(self.bulk_url, **self.options)
        async with self.db.unit_of_work(read_only=True) as uow:
            page = await uow.tasks.page(limit=DEEP)
        self.deep_cursor = page.next_cursor

    async def stop(self) -> None:
        await self.db.close()
        await self.bulk_db.close()

    def operations(self) -> dict[str, Op]:
        db = self.db

        async def bulk_into(target: Database) -> None:
            async with target.unit_of_work() as uow:
                await uow.tasks.add_many([Task(**row) for row in _rows(BULK)])
                await uow.commit()

        # Each call a unit of its own (see orchestrator_db.calls): a read in a
        # read-only unit, update and delete one statement each.
        async def get(i: int) -> None:
            await db.tasks.get(self.ids[i])

        async def listed(i: int) -> None:
            await db.tasks.list(task_type="review", limit=50)

        async def first(i: int) -> None:
            await db.tasks.page(limit=50)

        async def deep(i: int) -> None:
            await db.tasks.page(limit=50, after=self.deep_cursor)

        async def updated(i: int) -> None:
            await db.tasks.update(self.ids[i], title=f"ours {i}")

        async def deleted(i: int) -> None:
            await db.tasks.delete(self.doomed.pop())

        async def counted(i: int) -> None:
            await db.tasks.count(task_type="code")

        return _named(
            lambda i: bulk_into(self.bulk_db),
            lambda i: bulk_into(db),
            get,
            listed,
            first,
            deep,
            updated,
            deleted,
            counted,
        )


class OursInline(Ours):
    """Ours with SQLite statements run on the event loop's thread, the
    package's documented fastest way on SQLite (see the README)."""

    name = "orchestrator_db inline"
    options = {"sqlite_execution": "inline"}


class AdvancedAlchemy(Contender):
    """advanced-alchemy 1.x: a repository per session, auto_commit."""

    name = "advanced-alchemy"

    async def start(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

        self.engines = [create_async_engine(url) for url in (self.url, self.bulk_url)]
        for engine in self.engines:
            if engine.dialect.name == "sqlite":
                event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = [async_sessionmaker(e, expire_on_commit=False) for e in self.engines]

    async def stop(self) -> None:
        for engine in self.engines:
            await engine.dispose()

    def operations(self) -> dict[str, Op]:
        from advanced_alchemy.filters import LimitOffset, OrderBy

        from bench.peer_models import AATask, AATaskRepository

        sessions, bulk_sessions = self.sessions

        async def bulk_into(maker: Any) -> None:
            async with maker() as session:
                repository = AATaskRepository(session=session)
                await repository.add_many([AATask(**_mapped(r)) for r in _rows(BULK)])
                await session.commit()

        async def get(i: int) -> None:
            async with sessions() as session:
                await AATaskRepository(session=session).get(self.ids[i])

        async def listed(i: int) -> None:
            async with sessions() as session:
                await AATaskRepository(session=session).list(
                    AATask.task_type == "review", LimitOffset(limit=50, offset=0)
                )

        async def paged(offset: int) -> None:
            async with sessions() as session:
                await AATaskRepository(session=session).list(
                    OrderBy(field_name="id", sort_order="asc"), LimitOffset(50, offset)
                )

        async def updated(i: int) -> None:
            async with sessions() as session:
                repository = AATaskRepository(session=session)
                await repository.update(
                    AATask(id=self.ids[i], title=f"aa {i}"), auto_commit=True, auto_refresh=False
                )

        async def deleted(i: int) -> None:
            async with sessions() as session:
                await AATaskRepository(session=session).delete(self.doomed.pop(), auto_commit=True)

        async def counted(i: int) -> None:
            async with sessions() as session:
                await AATaskRepository(session=session).count(AATask.task_type == "code")

        return _named(
            lambda i: bulk_into(bulk_sessions),
            lambda i: bulk_into(sessions),
            get,
            listed,
            lambda i: paged(0),
            lambda i: paged(DEEP),
            updated,
            deleted,
            counted,
        )


class TortoiseORM(Contender):
    """Tortoise ORM 1.x: statements in autocommit; update as one UPDATE
    (``filter().update()``), its fastest way."""

    name = "Tortoise ORM"

    async def start(self) -> None:
        from tortoise import Tortoise

        def tortoise_url(url: str) -> str:
            if url.startswith("sqlite"):
                return "sqlite://" + url.split("///", 1)[1] + "?synchronous=NORMAL"
            return url.replace("postgresql+asyncpg://", "asyncpg://", 1)

        await Tortoise.init(
            config={
                "connections": {
                    "default": tortoise_url(self.url),
                    "bulk": tortoise_url(self.bulk_url),
                },
                "apps": {
                    "models": {"models": ["bench.peer_models"], "default_connection": "default"}
                },
            }
        )

    async def stop(self) -> None:
        from tortoise import Tortoise

        await Tortoise.close_connections()

    def operations(self) -> dict[str, Op]:
        from tortoise import Tortoise

        from bench.peer_models import TortoiseTask

        async def bulk_into(connection: str) -> None:
            await TortoiseTask.bulk_create(
                [TortoiseTask(**_mapped(r)) for r in _rows(BULK)],
                using_db=Tortoise.get_connection(connection),
            )

        async def get(i: int) -> None:
            await TortoiseTask.get(id=self.ids[i])

        async def listed(i: int) -> None:
            await TortoiseTask.filter(task_type="review").limit(50)

        async def paged(offset: int) -> None:
            await TortoiseTask.all().order_by("id").offset(offset).limit(50)

        async def updated(i: int) -> None:
            await TortoiseTask.filter(id=self.ids[i]).update(title=f"tortoise {i}")

        async def deleted(i: int) -> None:
            await TortoiseTask.filter(id=self.doomed.pop()).delete()

        async def counted(i: int) -> None:
            await TortoiseTask.filter(task_type="code").count()

        return _named(
            lambda i: bulk_into("bulk"),
            lambda i: bulk_into("default"),
            get,
            listed,
            lambda i: paged(0),
            lambda i: paged(DEEP),
            updated,
            deleted,
            counted,
        )


class RawDriver(Contender):
    """aiosqlite or asyncpg, SQL by hand, one connection: the floor."""

    async def start(self) -> None:
        self.sqlite = self.url.startswith("sqlite")
        self.name = "aiosqlite" if self.sqlite else "asyncpg"
        if self.sqlite:
            self.connections = [
                await aiosqlite.connect(url.split("///", 1)[1]) for url in (self.url, self.bulk_url)
            ]
            for connection in self.connections:
                await connection.execute("PRAGMA synchronous=NORMAL")
        else:
            self.connections = [
                await asyncpg.connect(url.replace("+asyncpg", ""))
                for url in (self.url, self.bulk_url)
            ]

    async def stop(self) -> None:
        for connection in self.connections:
            await connection.close()

    def _sql(self, statement: str) -> str:
        if self.sqlite:
            return statement
        numbers = itertools.count(1)
        return "".join(f"${next(numbers)}" if c == "?" else c for c in statement)

    async def _run(self, connection: Any, statement: str, *args: Any, fetch: bool) -> None:
        sql = self._sql(statement)
        if self.sqlite:
            await connection.execute_fetchall(sql, args)
            if not fetch:
                await connection.commit()
        elif fetch:
            await connection.fetch(sql, *args)
        else:
            await connection.execute(sql, *args)

    def operations(self) -> dict[str, Op]:
        main, bulk = self.connections
        insert = self._sql(
            "INSERT INTO tasks (id, title, task_type, status, config) VALUES (?, ?, ?, ?, ?)"
        )

        async def bulk_into(connection: Any) -> None:
            rows = [
                (r["id"], r["title"], r["task_type"], "pending", '{"k": 1}') for r in _rows(BULK)
            ]
            if self.sqlite:
                await connection.executemany(insert, rows)
                await connection.commit()
            else:
                await connection.executemany(insert, rows)

        def read(sql: str, *args: Any) -> Awaitable[None]:
            return self._run(main, sql, *args, fetch=True)

        def write(sql: str, *args: Any) -> Awaitable[None]:
            return self._run(main, sql, *args, fetch=False)

        return _named(
            lambda i: bulk_into(bulk),
            lambda i: bulk_into(main),
            lambda i: read("SELECT * FROM tasks WHERE id = ?", self.ids[i]),
            lambda i: read("SELECT * FROM tasks WHERE task_type = ? LIMIT 50", "review"),
            lambda i: read("SELECT * FROM tasks ORDER BY id LIMIT 50"),
            lambda i: read("SELECT * FROM tasks ORDER BY id LIMIT 50 OFFSET ?", DEEP),
            lambda i: write("UPDATE tasks SET title = ? WHERE id = ?", f"raw {i}", self.ids[i]),
            lambda i: write("DELETE FROM tasks WHERE id = ?", self.doomed.pop()),
            lambda i: read("SELECT count(*) FROM tasks WHERE task_type = ?", "code"),
        )


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _named(*ops: Op) -> dict[str, Op]:
    return dict(zip(CALLS, ops, strict=True))


def _mapped(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "title", "task_type", "config")}  # the rest: defaults


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


async def _measure(
    contenders: Sequence[Contender], empty: Callable[[], Awaitable[None]]
) -> dict[str, dict[str, float]]:
    """Median seconds per call, per operation and contender."""
    times: dict[str, dict[str, list[float]]] = {
        op: {c.name: [] for c in contenders} for op in CALLS
    }
    operations = {c.name: c.operations() for c in contenders}
    for round_ in range(ROUNDS):
        # Each round starts with the next contender: who runs first after
        # the others' writes (a cold page cache, a checkpoint due) changes.
        shift = round_ % len(contenders)
        order = [*contenders[shift:], *contenders[:shift]]
        for op, calls in CALLS.items():
            for contender in order:
                if op.endswith("empty table"):
                    await empty()
                run = operations[contender.name][op]
                gc.collect()
                started = time.perf_counter()
                for i in range(calls):
                    await run(i)
                times[op][contender.name].append((time.perf_counter() - started) / calls)
    return {op: {n: statistics.median(t) for n, t in by.items()} for op, by in times.items()}


async def _prepare(url: str, contenders: Sequence[Contender]) -> None:
    db = Database(url)
    try:
        await db.migrate()
        for _ in range(ROWS // 10_000):
            async with db.unit_of_work() as uow:
                await uow.tasks.add_many([Task(**row) for row in _rows(10_000)])
                await uow.commit()
        async with db.unit_of_work(read_only=True) as uow:
            ids = [t.id for t in await uow.tasks.list(limit=max(CALLS.values()))]
        per_contender = ROUNDS * max(CALLS.values()) * 2
        for contender in contenders:
            async with db.unit_of_work() as uow:
                doomed = await uow.tasks.add_many([Task(**row) for row in _rows(per_contender)])
                await uow.commit()
            contender.ids, contender.doomed = list(ids), [t.id for t in doomed]
        if db.dialect == "postgresql":
            # Statistics as autovacuum would soon gather them (the server
            # these benchmarks run on may have it off).
            async with db.engine.begin() as connection:
                await connection.exec_driver_sql("ANALYZE")
    finally:
        await db.close()


def _report(title: str, found: dict[str, dict[str, float]], raw: str) -> None:
    print(f"\n{title}: time per call (median of {ROUNDS} interleaved rounds)")
    peers = ("advanced-alchemy", "Tortoise ORM")
    ours = [n for n in (Ours.name, OursInline.name) if n in next(iter(found.values()))]
    labels = {Ours.name: "ours", OursInline.name: "ours inline"}
    names = [labels[n] for n in ours] + ["adv.-alchemy", "Tortoise", raw]
    print(
        f"{'operation':40s} "
        + " ".join(f"{n:>11s}" for n in names)
        + "".join(f"  best peer / {labels[n]}" for n in ours)
    )
    for op, by in found.items():
        best = min(by[p] for p in peers)
        cells = [f"{by[name] * 1e6:9,.0f}us" for name in (*ours, *peers, raw)]
        ratios = [best / by[name] for name in ours]
        verdicts = " ".join(
            f"{ratio:12.2f}x {'ok' if ratio >= 1.0 else 'BEHIND':6s}" for ratio in ratios
        )
        print(f"{op:40s} {' '.join(cells)} {verdicts}")


async def _bare(url: str) -> None:
    """Our ``tasks`` table without its secondary indexes and its
    ``updated_at`` trigger: the table a peer would make for itself. (Names
    from our own metadata, not input.)"""
    db = Database(url)
    try:
        async with db.engine.begin() as connection:
            for index in Base.metadata.tables["tasks"].indexes:
                await connection.exec_driver_sql(f"DROP INDEX {index.name}")
            on = " ON tasks" if db.dialect == "postgresql" else ""
            await connection.exec_driver_sql(f"DROP TRIGGER trg_tasks_updated_at{on}")
    finally:
        await db.close()


async def _compare(
    title: str,
    raw: str,
    url: str,
    bulk_url: str,
    empty: Callable[[], Awaitable[None]],
    *,
    bare: bool,
) -> None:
    """Every contender on ``url`` (and ``bulk_url``, emptied by ``empty``
    before each bulk insert into an empty table); ``bare``: on tables
    without our secondary indexes and trigger, ours included."""
    kinds: list[type[Contender]] = [Ours, AdvancedAlchemy, TortoiseORM, RawDriver]
    if url.startswith("sqlite"):
        kinds.insert(1, OursInline)
    contenders = [c(url, bulk_url) for c in kinds]
    await _prepare(url, contenders)
    bulk = Database(bulk_url)
    await bulk.migrate()
    await bulk.close()
    if bare:
        await _bare(url)
        await _bare(bulk_url)
        title += ", tasks without our secondary indexes and trigger"
    for contender in contenders:
        await contender.start()
    try:
        found = await _measure(contenders, empty)
    finally:
        for contender in contenders:
            await contender.stop()
    _report(title, found, raw)


async def _sqlite(*, bare: bool) -> None:
    directory = Path(tempfile.mkdtemp(prefix="orchestrator_db-peers-"))

    async def empty() -> None:
        async with aiosqlite.connect(directory / "bulk.db") as connection:
            await connection.execute("DELETE FROM tasks")
            await connection.commit()

    try:
        url, bulk_url = (f"sqlite+aiosqlite:///{directory / n}" for n in ("main.db", "bulk.db"))
        await _compare("SQLite", "aiosqlite", url, bulk_url, empty, bare=bare)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _postgresql(*, bare: bool) -> None:
    try:
        await pg_admin("SELECT 1")
    except (OSError, asyncpg.PostgresError):
        print("\nPeers on PostgreSQL: SKIPPED, the server is not reachable")
        return
    server = PostgresServer(ADMIN_DSN)
    url = await server.create("odb_bench_peers")
    bulk_url = await server.create("odb_bench_peers_bulk")

    async def empty() -> None:
        connection = await asyncpg.connect(_dsn(bulk_url))
        await connection.execute("TRUNCATE tasks CASCADE")
        await connection.close()

    try:
        await _compare("PostgreSQL", "asyncpg", url, bulk_url, empty, bare=bare)
    finally:
        await server.drop("odb_bench_peers")
        await server.drop("odb_bench_peers_bulk")


async def run() -> None:
    """Each engine in a process of its own: Tortoise's models, once set up
    for one database, keep that database's SQL."""
    try:
        import advanced_alchemy  # noqa: F401
        import tortoise  # noqa: F401
    except ImportError:
        print("\nPeers: SKIPPED, install the bench extra (pip install -e '.[dev,bench]')")
        return
    for engine in ("sqlite", "postgresql"):
        for shape in ("ours", "bare"):
            done = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.peers", engine, shape
            )
            await done.wait()


if __name__ == "__main__":
    engine, shape = sys.argv[1:3]
    compare = _sqlite if engine == "sqlite" else _postgresql
    asyncio.run(compare(bare=shape == "bare"))
