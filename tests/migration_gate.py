"""The migration gate run by ``make test``, through the real ``alembic`` CLI.

On an empty database of each engine: upgrade head, check, downgrade base
(verifying nothing but ``alembic_version`` is left: no table, index, trigger
or function), upgrade head, check. Exits non-zero on the first failure.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from orchestrator_db import Database
from tests import pg
from tests.support import (
    engine_url,
    postgres_skipped,
    run_alembic,
    schema_objects,
    selected_engines,
)

STEPS = (
    ("upgrade", "head"),
    ("check",),
    ("downgrade", "base"),
    ("upgrade", "head"),
    ("check",),
)


async def _leftovers(url: str) -> list[str]:
    db = Database(url)
    try:
        async with db.engine.connect() as connection:
            found = await connection.run_sync(schema_objects)
    finally:
        await db.close()
    problems = [f"table {t}" for t in sorted(found.tables - {"alembic_version"})]
    problems += [f"index {i}" for i in sorted(found.indexes)]
    problems += [f"trigger {t}" for t in sorted(found.triggers)]
    problems += [f"function {f}" for f in sorted(found.functions)]
    return problems


def gate(engine: str, url: str) -> bool:
    print(f"== migration gate on {engine}")
    for step in STEPS:
        result = run_alembic(*step, url=url)
        output = (result.stdout + result.stderr).strip().splitlines()
        print(f"   alembic {' '.join(step)}: {'ok' if result.returncode == 0 else 'FAILED'}")
        if result.returncode != 0:
            print("\n".join("     " + line for line in output[-15:]))
            return False
        if step == ("downgrade", "base"):
            leftovers = asyncio.run(_leftovers(url))
            if leftovers:
                print(f"   downgrade base left behind: {', '.join(leftovers)}")
                return False
            print("   downgrade base left no table, index, trigger or function")
    return True


def main() -> int:
    ok = True
    for engine in selected_engines():
        if engine == "sqlite-inline":
            continue  # the revisions are the same; "sqlite" gates them
        if engine == "sqlite":
            with tempfile.TemporaryDirectory() as directory:
                ok &= gate(engine, f"sqlite+aiosqlite:///{Path(directory) / 'gate.db'}")
        else:
            name = f"odb_gate_{os.getpid()}_{engine}"
            url = engine_url(engine, pg.create_database(name))
            if engine == "pgbouncer":
                url += "?pgbouncer=true"  # the CLI takes the setting from the URL
            try:
                ok &= gate(engine, url)
            finally:
                pg.drop_database(name)
    if postgres_skipped():
        print("!! PostgreSQL was not reachable: the gate ran on SQLite only")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
