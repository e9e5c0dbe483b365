"""The local PostgreSQL server used by the tests: reachability and scratch databases."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import subprocess
import time

import asyncpg

#: Maintenance connection used to create and drop the tests' own databases.
ADMIN_DSN = os.environ.get("ORCHESTRATOR_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
_SAFE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


async def _ping() -> bool:
    try:
        connection = await asyncpg.connect(ADMIN_DSN, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


def _start_cluster() -> None:
    if not shutil.which("pg_ctlcluster") or not os.path.isdir("/etc/postgresql"):
        return
    for version in sorted(os.listdir("/etc/postgresql")):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            capture_output=True,
            check=False,
        )


@functools.cache
def ensure_server() -> bool:
    """True when PostgreSQL answers, starting the local cluster if it is down."""
    if asyncio.run(_ping()):
        return True
    _start_cluster()
    for _ in range(20):
        if asyncio.run(_ping()):
            return True
        time.sleep(0.5)
    return False


def url_for(name: str) -> str:
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_database(name: str) -> str:
    """Create (or re-create) database ``name``; returns its SQLAlchemy URL."""
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"unsafe database name {name!r}")
    # Identifiers cannot be bound as parameters; the name is checked above.
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    return url_for(name)


def drop_database(name: str) -> None:
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"unsafe database name {name!r}")
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
