"""The local PostgreSQL server used by the tests: reachability and scratch databases."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
import time

import asyncpg

from orchestrator_db.testing.database import PostgresServer

#: Maintenance connection used to create and drop the tests' own databases.
ADMIN_DSN = os.environ.get("ORCHESTRATOR_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


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
    return PostgresServer(ADMIN_DSN).url_of(name)


def create_database(name: str) -> str:
    """Create (or re-create) database ``name``; returns its SQLAlchemy URL."""
    return asyncio.run(PostgresServer(ADMIN_DSN).create(name))


def drop_database(name: str) -> None:
    asyncio.run(PostgresServer(ADMIN_DSN).drop(name))
