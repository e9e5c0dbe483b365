"""Helpers shared by the fixtures, the tests and the migration gate."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect, text

from tests import pg

ROOT = Path(__file__).resolve().parent.parent


def postgres_skipped() -> bool:
    """True when ``auto`` mode left PostgreSQL out because it did not answer."""
    return os.environ.get("ORCHESTRATOR_TEST_ENGINES", "auto") == "auto" and not pg.ensure_server()


#: Test engines: a database and the ``Database`` settings it runs with.
#: ``sqlite-inline`` is SQLite with statements run on the event loop's thread.
ENGINE_OPTIONS: dict[str, dict[str, Any]] = {
    "sqlite": {},
    "sqlite-inline": {"sqlite_execution": "inline"},
    "postgresql": {},
}


def is_sqlite(engine: str) -> bool:
    return engine.startswith("sqlite")


def selected_engines() -> list[str]:
    """Engines named by ``ORCHESTRATOR_TEST_ENGINES`` (``auto`` by default)."""
    setting = os.environ.get("ORCHESTRATOR_TEST_ENGINES", "auto")
    if setting == "auto":
        if pg.ensure_server():
            return ["sqlite", "sqlite-inline", "postgresql"]
        warnings.warn("PostgreSQL is not reachable: SQLite only", stacklevel=1)
        return ["sqlite", "sqlite-inline"]
    engines = [name.strip() for name in setting.split(",") if name.strip()]
    unknown = set(engines) - set(ENGINE_OPTIONS)
    if unknown:
        raise SystemExit(f"unknown engines in ORCHESTRATOR_TEST_ENGINES: {sorted(unknown)}")
    if "postgresql" in engines and not pg.ensure_server():
        raise SystemExit(f"PostgreSQL required but not reachable at {pg.ADMIN_DSN}")
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
