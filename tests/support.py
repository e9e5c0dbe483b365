"""Helpers shared by the fixtures, the tests and the migration gate."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, inspect, text

from tests import pg, pgbouncer

ROOT = Path(__file__).resolve().parent.parent


def postgres_skipped() -> bool:
    """True when ``auto`` mode left PostgreSQL out because it did not answer."""
    return os.environ.get("ORCHESTRATOR_TEST_ENGINES", "auto") == "auto" and not pg.ensure_server()


def pgbouncer_skipped() -> str | None:
    """Why ``auto`` mode left PgBouncer out, if it did."""
    if os.environ.get("ORCHESTRATOR_TEST_ENGINES", "auto") != "auto" or not pg.ensure_server():
        return None
    return pgbouncer.start()[1] or None


#: Test engines: a database and the ``Database`` settings it runs with.
#: ``sqlite-inline`` is SQLite with statements run on the event loop's thread;
#: ``pgbouncer`` is the PostgreSQL database through a real PgBouncer in
#: transaction pooling mode (see ``tests/pgbouncer.py``).
ENGINE_OPTIONS: dict[str, dict[str, Any]] = {
    "sqlite": {},
    "sqlite-inline": {"sqlite_execution": "inline"},
    "postgresql": {},
    "pgbouncer": {"pgbouncer": True},
}


def is_sqlite(engine: str) -> bool:
    return engine.startswith("sqlite")


def engine_url(engine: str, postgres_url: str) -> str:
    """The URL by which ``engine`` reaches the PostgreSQL database ``postgres_url``."""
    return pgbouncer.through(postgres_url) if engine == "pgbouncer" else postgres_url


def unavailable(what: str, why: str) -> None:
    """Fail a test that needs ``what`` when the engines were named (as CI
    names them), skip it in ``auto`` mode; either way, say why."""
    message = f"{what} is not available here: {why}"
    if os.environ.get("ORCHESTRATOR_TEST_ENGINES", "auto") == "auto":
        pytest.skip(message)
    pytest.fail(message)


def selected_engines() -> list[str]:
    """Engines named by ``ORCHESTRATOR_TEST_ENGINES`` (``auto`` by default)."""
    setting = os.environ.get("ORCHESTRATOR_TEST_ENGINES", "auto")
    if setting == "auto":
        if not pg.ensure_server():
            warnings.warn("PostgreSQL is not reachable: SQLite only", stacklevel=1)
            return ["sqlite", "sqlite-inline"]
        engines = ["sqlite", "sqlite-inline", "postgresql"]
        port, why = pgbouncer.start()
        if port is None:
            warnings.warn(f"PgBouncer left out: {why}", stacklevel=1)
            return engines
        return [*engines, "pgbouncer"]
    engines = [name.strip() for name in setting.split(",") if name.strip()]
    unknown = set(engines) - set(ENGINE_OPTIONS)
    if unknown:
        raise SystemExit(f"unknown engines in ORCHESTRATOR_TEST_ENGINES: {sorted(unknown)}")
    if {"postgresql", "pgbouncer"} & set(engines) and not pg.ensure_server():
        raise SystemExit(f"PostgreSQL required but not reachable at {pg.ADMIN_DSN}")
    if "pgbouncer" in engines:
        port, why = pgbouncer.start()
        if port is None:
            raise SystemExit(f"PgBouncer required but it cannot run: {why}")
    return engines


def run_alembic(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """Run this checkout's ``alembic`` command line against ``url``."""
    executable = Path(sys.executable).with_name("alembic")
    return subprocess.run(
        [str(executable), "-c", str(ROOT / "alembic.ini"), *args],
        cwd=ROOT,
        env={**os.environ, "ORCHESTRATOR_DB_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )


@dataclass(frozen=True)
class SchemaObjects:
    tables: frozenset[str]
    indexes: frozenset[str]
    triggers: frozenset[str]
    functions: frozenset[str]


def schema_objects(connection: Connection) -> SchemaObjects:
    """Every table, index, trigger and (PostgreSQL) function in the database."""
    inspector = inspect(connection)
    tables = frozenset(inspector.get_table_names())
    indexes = frozenset(
        index["name"] for table in tables for index in inspector.get_indexes(table) if index["name"]
    )
    if connection.dialect.name == "sqlite":
        triggers = frozenset(
            connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            .scalars()
            .all()
        )
        functions: frozenset[str] = frozenset()
    else:
        triggers = frozenset(
            connection.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))
            .scalars()
            .all()
        )
        functions = frozenset(
            connection.execute(
                text(
                    "SELECT p.proname FROM pg_proc p JOIN pg_namespace n "
                    "ON n.oid = p.pronamespace WHERE n.nspname = current_schema()"
                )
            )
            .scalars()
            .all()
        )
    return SchemaObjects(tables, indexes, triggers, functions)
