"""Migrations: the round trip, and autogenerate's handling of triggers.

Autogenerate is exercised through Alembic's own commands on real databases:
revisions are generated into a copy of the package's script directory and
then applied, so what is tested is what a user gets from
``alembic revision --autogenerate``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Column,
    Connection,
    Enum,
    Integer,
    MetaData,
    Table,
    bindparam,
    inspect,
    select,
    text,
)

from orchestrator_db import Database, Task, migrations
from orchestrator_db.migrations.alembic_ext import CreateTriggerOp, DropTriggerOp, render_item
from orchestrator_db.migrations.runner import (
    MIGRATIONS_DIR,
    alembic_config,
    context_options,
    head_revision,
)
from orchestrator_db.migrations.triggers import declared_triggers, reflect_triggers
from orchestrator_db.models import Base
from orchestrator_db.sql.queue import GRAPH_LOCK_KEY
from orchestrator_db.types import UTCDateTime
from tests import pg
from tests.conftest import ENGINES
from tests.helpers import add_tasks, assert_facts_hold, task
from tests.support import ROOT, is_sqlite, run_alembic, schema_objects


@pytest.fixture
async def empty_url(engine: str, tmp_path: Path) -> AsyncIterator[str]:
    """A URL to an empty database (no schema at all) of ``engine``."""
    if is_sqlite(engine):
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"odb_mig_{os.getpid()}_{tmp_path.name[-12:].replace('-', '_').lower()}"
    url = await asyncio.to_thread(pg.create_database, name)
    try:
        yield url
    finally:
        await asyncio.to_thread(pg.drop_database, name)


@pytest.fixture
async def scratch_url(empty_url: str) -> str:
    """A database of its own at head, for tests that alter the schema."""
    db = Database(empty_url)
    await db.migrate()
    await db.close()
    return empty_url


async def _on(url: str, fn: Callable[[Connection], Any]) -> Any:
    db = Database(url)
    try:
        async with db.engine.connect() as connection:
            result = await connection.run_sync(fn)
            await connection.commit()
            return result
    finally:
        await db.close()


def _at(code: str, call: str, name: str) -> int:
    """Where ``op.<call>('<name>'`` starts in rendered code (any layout)."""
    match = re.search(rf"{re.escape(call)}\(\s*'{re.escape(name)}'", code)
    assert match, f"{call}({name!r}) not rendered"
    return match.start()


def _context(connection: Connection, metadata: MetaData | None = None) -> MigrationContext:
    return MigrationContext.configure(
        connection, opts=context_options(connection.dialect, metadata)
    )


# ---------------------------------------------------------------- round trip


async def test_round_trip_leaves_nothing_behind(empty_url: str) -> None:
    db = Database(empty_url)
    try:
        await db.migrate()
        assert await db.current_revision() == head_revision()
        await add_tasks(db, task())
        await db.downgrade("base")
        assert await db.current_revision() is None
        async with db.engine.connect() as connection:
            left = await connection.run_sync(schema_objects)
        assert left.tables == {"alembic_version"}
        assert not left.indexes and not left.triggers and not left.functions
        await db.migrate()
        await db.migrate()  # already at head: nothing to do
        async with db.engine.connect() as connection:
            again = await connection.run_sync(schema_objects)
        assert {t.name for t in Base.metadata.sorted_tables} < again.tables
        assert set(declared_triggers(Base.metadata)) == again.triggers
    finally:
        await db.close()


def test_alembic_cli_round_trip_and_check(engine: str, empty_url: str) -> None:
    for step in (["upgrade", "head"], ["check"], ["downgrade", "base"], ["upgrade", "head"]):
        result = run_alembic(*step, url=empty_url)
        assert result.returncode == 0, result.stderr
    check = run_alembic("check", url=empty_url)
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout


# ---------------------------------------------------- autogenerate: triggers


async def test_autogenerate_from_empty_emits_triggers_with_their_tables(empty_url: str) -> None:
    def produce(connection: Connection) -> tuple[str, str]:
        script = produce_migrations(_context(connection), Base.metadata)
        options = {"render_as_batch": True, "render_item": render_item}
        return (
            render_python_code(script.upgrade_ops, **options),  # type: ignore[arg-type]
            render_python_code(script.downgrade_ops, **options),  # type: ignore[arg-type]
        )

    upgrade, downgrade = await _on(empty_url, produce)
    for name in declared_triggers(Base.metadata):
        table = name.removeprefix("trg_").removesuffix("_updated_at")
        assert _at(upgrade, "op.create_table", table) < _at(upgrade, "op.create_trigger", name)
        assert _at(downgrade, "op.drop_trigger", name) < _at(downgrade, "op.drop_table", table)
    assert "sqlite=" in upgrade and "postgresql=" in upgrade


@pytest.mark.skipif("postgresql" not in ENGINES, reason="needs both engines")
async def test_revisions_render_identically_on_both_engines(tmp_path: Path) -> None:
    def produce(connection: Connection) -> str:
        script = produce_migrations(_context(connection), Base.metadata)
        return render_python_code(
            script.upgrade_ops,  # type: ignore[arg-type]
            render_as_batch=True,
            render_item=render_item,
            migration_context=_context(connection),
        )

    name = f"odb_render_{os.getpid()}"
    postgres_url = await asyncio.to_thread(pg.create_database, name)
    try:
        on_sqlite = await _on(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", produce)
        on_postgres = await _on(postgres_url, produce)
    finally:
        await asyncio.to_thread(pg.drop_database, name)
    assert on_sqlite == on_postgres


async def test_a_missing_trigger_is_noticed(scratch_url: str) -> None:
    async with Database(scratch_url).engine.begin() as connection:
        dialect = connection.dialect.name
        for statement in declared_triggers(Base.metadata)["trg_tasks_updated_at"].drop_statements(
            dialect
        ):
            await connection.exec_driver_sql(statement)
    diffs = await _on(scratch_url, lambda c: compare_metadata(_context(c), Base.metadata))
    assert diffs == [("add_trigger", "tasks", "trg_tasks_updated_at")]


async def test_a_changed_enum_check_is_replaced_with_its_values_quoted(empty_url: str) -> None:
    def flags(*values: str) -> MetaData:
        metadata = MetaData(naming_convention=Base.metadata.naming_convention)
        state = Enum(*values, name="flag_state", native_enum=False, create_constraint=True)
        Table("flags", metadata, Column("id", Integer, primary_key=True), Column("state", state))
        return metadata

    await _on(empty_url, flags("on", "o'k").create_all)
    widened = flags("on", "o'k", "off")
    diffs = await _on(empty_url, lambda c: compare_metadata(_context(c, widened), widened))
    assert [(kind, constraint.name) for kind, constraint in diffs] == [
        ("remove_constraint", "ck_flags_flag_state"),
        ("add_constraint", "ck_flags_flag_state"),
    ]
    assert {str(constraint.sqltext) for _, constraint in diffs} == {
        "state IN ('on', 'o''k')",
        "state IN ('on', 'o''k', 'off')",
    }


FOREIGN_TRIGGER = {
    "sqlite": [
        "CREATE TRIGGER audit_tasks AFTER DELETE ON tasks "
        "BEGIN INSERT INTO configurations (key, value, value_type) "
        "VALUES ('deleted:' || OLD.id, OLD.title, 'string'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION audit_tasks() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN INSERT INTO configurations (key, value, value_type) "
        "VALUES ('deleted:' || OLD.id, OLD.title, 'string'); RETURN OLD; END $$",
        "CREATE TRIGGER audit_tasks AFTER DELETE ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION audit_tasks()",
    ],
}


async def test_an_extra_trigger_is_dropped_reversibly(scratch_url: str) -> None:
    db = Database(scratch_url)
    try:
        async with db.engine.begin() as connection:
            for statement in FOREIGN_TRIGGER[connection.dialect.name]:
                await connection.exec_driver_sql(statement)

        def produce(connection: Connection) -> Any:
            return produce_migrations(_context(connection), Base.metadata)

        script = await _on(scratch_url, produce)
        (drop,) = script.upgrade_ops.ops
        (create,) = script.downgrade_ops.ops
        assert isinstance(drop, DropTriggerOp)
        assert isinstance(create, CreateTriggerOp)
        assert create.trigger.name == "audit_tasks"
        assert create.trigger.has_definition_for(db.dialect)

        def run(connection: Connection, op: Any) -> None:
            from alembic.operations import Operations

            Operations(_context(connection)).invoke(op)

        await _on(scratch_url, lambda c: run(c, drop))
        assert "audit_tasks" not in await _on(scratch_url, reflect_triggers)
        await _on(scratch_url, lambda c: run(c, create))  # the downgrade restores it
        (victim,) = await add_tasks(db, task(title="audited"))
        async with db.unit_of_work() as uow:
            await uow.tasks.delete(victim.id)
            await uow.commit()
        async with db.unit_of_work() as uow:
            assert await uow.configurations.get_value(f"deleted:{victim.id}") == "audited"
    finally:
        await db.close()


async def test_a_changed_trigger_is_replaced(scratch_url: str) -> None:
    db = Database(scratch_url)
    try:
        async with db.engine.begin() as connection:
            if connection.dialect.name == "sqlite":
                await connection.exec_driver_sql("DROP TRIGGER trg_tasks_updated_at")
                await connection.exec_driver_sql(
                    "CREATE TRIGGER trg_tasks_updated_at AFTER UPDATE ON tasks BEGIN "
                    "UPDATE tasks SET updated_at = '2000-01-01T00:00:00.000Z' "
                    "WHERE rowid = NEW.rowid AND updated_at IS NOT '2000-01-01T00:00:00.000Z'; END"
                )
            else:
                # Same trigger, edited function body: only pg_proc.prosrc changes.
                await connection.exec_driver_sql(
                    "CREATE OR REPLACE FUNCTION trg_tasks_updated_at() RETURNS trigger "
                    "LANGUAGE plpgsql AS $function$ BEGIN RETURN NEW; END; $function$"
                )
        diffs = await _on(scratch_url, lambda c: compare_metadata(_context(c), Base.metadata))
        assert diffs == [
            ("remove_trigger", "tasks", "trg_tasks_updated_at"),
            ("add_trigger", "tasks", "trg_tasks_updated_at"),
        ]
    finally:
        await db.close()


# ------------------------------------------- autogenerate: SQLite batch mode


def _claim_index_definition(connection: Connection) -> str:
    if connection.dialect.name == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE name = 'idx_tasks_claim'"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_tasks_claim'"
    return str(connection.execute(text(query)).scalar_one())


def _models_with_a_new_task_column() -> MetaData:
    """The package's models plus a column SQLite can only add by rebuilding."""
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    metadata.tables["tasks"].append_column(
        Column("attempts", Integer, nullable=False, server_default=text("0"))
    )
    return metadata


async def test_a_batch_rebuild_keeps_the_trigger(scratch_url: str, tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    models = _models_with_a_new_task_column()
    db = Database(scratch_url)
    (before,) = await add_tasks(db, task(title="survives"))

    def alembic(connection: Connection, action: Callable[[Any], Any]) -> None:
        action(alembic_config(connection, script_location=scripts, target_metadata=models))

    try:
        async with db.engine.connect() as connection:
            await connection.run_sync(
                alembic,
                lambda config: command.revision(
                    config, message="add attempts", autogenerate=True, rev_id="9001"
                ),
            )
        (revision,) = scripts.glob("versions/9001_*.py")
        source = revision.read_text()
        upgrade = source[source.index("def upgrade") : source.index("def downgrade")]
        dropped = _at(upgrade, "op.drop_trigger", "trg_tasks_updated_at")
        rebuilt = _at(upgrade, "op.batch_alter_table", "tasks")
        created = _at(upgrade, "op.create_trigger", "trg_tasks_updated_at")
        assert dropped < rebuilt < created
        # The DESC claim index would come back ascending from a rebuild.
        assert _at(upgrade, "op.drop_index", "idx_tasks_claim") < rebuilt
        assert rebuilt < _at(upgrade, "op.create_index", "idx_tasks_claim")

        long_ago = before.created_at - timedelta(days=1)
        for step, action in enumerate(
            (
                lambda config: command.upgrade(config, "head"),
                lambda config: command.downgrade(config, "-1"),
            )
        ):
            async with db.engine.connect() as connection:
                await connection.run_sync(alembic, action)
            assert "trg_tasks_updated_at" in await _on(scratch_url, reflect_triggers)
            assert "priority DESC" in await _on(scratch_url, _claim_index_definition)
            async with db.unit_of_work() as uow:
                await uow.tasks.update(before.id, updated_at=long_ago)
                await uow.commit()
            async with db.unit_of_work() as uow:
                touched = await uow.tasks.update(before.id, title=f"after step {step}")
                await uow.commit()
            assert touched.updated_at > long_ago  # the trigger still fires
            async with db.unit_of_work() as uow:
                assert await uow.tasks.count() == 1
    finally:
        await db.close()


# ------------------------------------------------------------- concurrency


def test_concurrent_upgrades_apply_each_revision_once(engine: str, empty_url: str) -> None:
    """Two processes starting at once end with one correct schema."""
    alembic = Path(sys.executable).with_name("alembic")
    processes = [
        subprocess.Popen(
            [str(alembic), "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
            cwd=ROOT,
            env={**os.environ, "ORCHESTRATOR_DB_URL": empty_url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    check = run_alembic("check", url=empty_url)
    assert check.returncode == 0, check.stderr

    async def versions() -> list[str]:
        db = Database(empty_url)
        try:
            async with db.engine.connect() as connection:
                rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
                return [row[0] for row in rows]
        finally:
            await db.close()

    assert asyncio.run(versions()) == [head_revision()]


# ----------------------------------------------------------------- packaging


def test_the_wheel_ships_the_migrations_and_they_run_from_it(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("orchestrator_db-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert "orchestrator_db/py.typed" in names
    assert "orchestrator_db/migrations/env.py" in names
    assert "orchestrator_db/migrations/script.py.mako" in names
    assert any(n.startswith("orchestrator_db/migrations/versions/0001_") for n in names)

    script = (
        "import asyncio, os, orchestrator_db\n"
        "from orchestrator_db import Database\n"
        "assert orchestrator_db.__file__.startswith(os.environ['PYTHONPATH'])\n"
        "async def main():\n"
        "    async with Database('sqlite+aiosqlite:///wheel.db') as db:\n"
        "        await db.migrate()\n"
        "        print(await db.current_revision())\n"
        "asyncio.run(main())\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == head_revision()


# ------------------------------------------------------- data across 0002


async def test_the_queue_revision_keeps_every_row_both_ways(empty_url: str) -> None:
    """0001 -> head with data present keeps every row; head -> 0001 keeps every
    task, mapping blocked/ready to pending as the revision documents."""
    db = Database(empty_url)
    try:
        await db.migrate("0001")
        ids = [str(uuid.uuid4()) for _ in range(4)]
        statuses = ["pending", "running", "completed", "cancelled"]
        async with db.engine.begin() as connection:
            for task_id, status in zip(ids, statuses, strict=True):
                await connection.execute(
                    text(
                        "INSERT INTO tasks (id, title, task_type, status, config) "
                        "VALUES (:id, :title, 'code', :status, :config)"
                    ),
                    {"id": task_id, "title": f"task {status}", "status": status, "config": "{}"},
                )
        await db.migrate()
        async with db.unit_of_work() as uow:
            kept = {t.id: t for t in await uow.tasks.list()}
            assert set(kept) == set(ids)
            assert [kept[i].status.value for i in ids] == statuses
            assert all(t.priority == 5 and t.max_retries == 3 for t in kept.values())
            blocked = await uow.tasks.submit(
                Task(title="blocked", task_type="code", config={}), depends_on=[ids[0]]
            )
            ready = await uow.tasks.submit(Task(title="ready", task_type="code", config={}))
            await uow.tasks.update(ids[0], title="touched after the rebuild")
            await uow.commit()
        async with db.unit_of_work() as uow:
            touched = await uow.tasks.get(ids[0])
        assert touched.updated_at > touched.created_at  # the trigger survived

        await db.downgrade("0001")
        async with db.engine.connect() as connection:
            result = await connection.execute(text("SELECT id, status FROM tasks"))
            rows = {str(task_id): str(status) for task_id, status in result.all()}
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
        assert "task_dependencies" not in tables
        assert rows.pop(blocked.id) == "pending"
        assert rows.pop(ready.id) == "pending"
        assert rows == dict(zip(ids, statuses, strict=True))
        await db.migrate()
        async with db.unit_of_work() as uow:
            assert await uow.tasks.count() == 6
    finally:
        await db.close()


async def test_the_pipeline_revision_round_trips_with_data(empty_url: str) -> None:
    """0002 with data -> head -> 0002: queue data untouched both ways; the
    pipeline tables come and go with their rows."""
    db = Database(empty_url)
    try:
        await db.migrate("0002")
        async with db.engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO tasks (id, title, task_type, status, config, priority) "
                    "VALUES (:id, 'kept', 'code', 'ready', '{}', 7)"
                ),
                {"id": str(uuid.uuid4())},
            )
        await db.migrate()
        from orchestrator_db.seed import seed_demo

        assert (await seed_demo(db)).changed
        async with db.unit_of_work() as uow:
            (kept,) = await uow.tasks.list()
            assert (kept.title, kept.priority) == ("kept", 7)
            assert await uow.tickets.count() == 3
        await db.downgrade("0002")
        async with db.engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            titles = (await connection.execute(text("SELECT title FROM tasks"))).scalars().all()
        assert not tables & {"projects", "worker_types", "tickets", "comments", "workers", "events"}
        assert titles == ["kept"]
        await db.migrate()
        async with db.unit_of_work() as uow:
            assert await uow.tickets.count() == 0
            assert await uow.tasks.count() == 1
    finally:
        await db.close()


# ------------------------------------------------------- data across 0004


async def test_the_agent_task_revision_computes_the_facts_and_round_trips(
    empty_url: str,
) -> None:
    """0003 with a dependency graph -> head: depth, type, blocking counts and
    calculated priorities computed for every row, updated_at untouched;
    head -> 0003 keeps every task and edge; and up again."""
    db = Database(empty_url)
    try:
        await db.migrate("0003")
        ids = {name: str(uuid.uuid4()) for name in "abcde"}
        statuses = {"a": "completed", "b": "ready", "c": "ready", "d": "blocked", "e": "blocked"}
        edges = [("b", "a"), ("c", "a"), ("d", "b"), ("d", "c"), ("e", "d"), ("e", "b")]
        deadline = {"c": datetime(2099, 1, 1, tzinfo=UTC)}
        async with db.engine.begin() as connection:
            for name, task_id in ids.items():
                await connection.execute(
                    text(
                        "INSERT INTO tasks (id, title, task_type, status, config, deadline) "
                        "VALUES (:id, :title, 'code', :status, '{}', :deadline)"
                    ).bindparams(bindparam("deadline", type_=UTCDateTime())),
                    {
                        "id": task_id,
                        "title": name,
                        "status": statuses[name],
                        "deadline": deadline.get(name),
                    },
                )
            for task_id, depends_on in edges:
                await connection.execute(
                    text(
                        "INSERT INTO task_dependencies (task_id, depends_on_id) "
                        "VALUES (:task_id, :depends_on_id)"
                    ),
                    {"task_id": ids[task_id], "depends_on_id": ids[depends_on]},
                )
        async with db.engine.connect() as connection:
            result = await connection.execute(select(Task.title, Task.updated_at))
            stamped = {title: stamp for title, stamp in result.all()}

        await db.migrate()
        async with db.unit_of_work(read_only=True) as uow:
            kept = {t.title: t for t in await uow.tasks.list()}
        assert {n: t.status.value for n, t in kept.items()} == statuses
        assert {n: t.updated_at for n, t in kept.items()} == stamped
        assert {n: t.dependency_depth for n, t in kept.items()} == {
            "a": 0, "b": 1, "c": 1, "d": 2, "e": 3
        }  # fmt: skip
        assert {n: t.dependency_type.value for n, t in kept.items()} == {
            "a": "sequential", "b": "sequential", "c": "sequential",
            "d": "parallel", "e": "sequential",
        }  # fmt: skip
        assert {n: t.blocking_count for n, t in kept.items()} == {
            "a": 0, "b": 2, "c": 2, "d": 1, "e": 0
        }  # fmt: skip
        assert kept["c"].reprioritize_at is not None and kept["c"].deadline is not None
        assert all(t.source.value == "human" for t in kept.values())
        await assert_facts_hold(db)
        async with db.unit_of_work() as uow:
            first = await uow.tasks.claim_next("w")
            assert first is not None and first.title == "c"  # its deadline ranks it first
            await uow.commit()

        await db.downgrade("0003")
        async with db.engine.connect() as connection:
            rows = (await connection.execute(text("SELECT title, status FROM tasks"))).all()
            stored_edges = (
                await connection.execute(text("SELECT count(*) FROM task_dependencies"))
            ).scalar_one()
            columns = await connection.run_sync(
                lambda c: {column["name"] for column in inspect(c).get_columns("tasks")}
            )
        assert {str(title) for title, _ in rows} == set(ids)
        assert stored_edges == len(edges)
        assert not columns & {"summary", "calculated_priority", "dependency_depth", "source"}
        await db.migrate()
        await assert_facts_hold(db)
    finally:
        await db.close()


def test_a_minimal_alembic_ini_of_a_users_project(tmp_path: Path) -> None:
    """Two lines of alembic.ini in a project that installed the package:
    no logging sections, the revisions from the package."""
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = orchestrator_db:migrations\n")
    executable = Path(sys.executable).with_name("alembic")
    database = tmp_path / "app.db"
    for step in (["upgrade", "head"], ["check"], ["current"]):
        done = subprocess.run(
            [str(executable), "-c", str(ini), *step],
            cwd=tmp_path,
            env={**os.environ, "ORCHESTRATOR_DB_URL": f"sqlite+aiosqlite:///{database}"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    assert str(head_revision()) in done.stdout


def test_the_delete_function_takes_the_graphs_lock() -> None:
    """Revision 0006's function holds the lock every change to the graph takes."""
    path = Path(migrations.__file__).parent / "versions" / "0006_delete_unlinked_task_function.py"
    spec = importlib.util.spec_from_file_location("revision_0006", path)
    assert spec is not None and spec.loader is not None
    revision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(revision)
    assert f"pg_advisory_xact_lock({GRAPH_LOCK_KEY})" in revision.FUNCTION
