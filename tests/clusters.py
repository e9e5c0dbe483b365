"""PostgreSQL clusters of the tests' own: a primary and its streaming replica.

Made with Debian's ``pg_createcluster`` and ``pg_basebackup`` on free ports,
so that tests may stop, restart, pause and promote them without touching the
server every other test uses; removed with ``pg_dropcluster`` when done.
Needs root (as ``make test`` runs here) and the PostgreSQL server packages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.support import unavailable

_HBA = (
    "local all all trust\n"
    "host all all 127.0.0.1/32 trust\n"
    "host replication all 127.0.0.1/32 trust\n"
)
_OPTIONS = (
    "wal_level=replica",
    "max_wal_senders=5",
    "hot_standby=on",
    "fsync=off",  # scratch clusters: speed over durability
    "synchronous_commit=off",
    "shared_buffers=16MB",
    "max_connections=60",
)


def why_not() -> str | None:
    """Why these clusters cannot be made here, or ``None``."""
    if os.geteuid() != 0:
        return "making PostgreSQL clusters needs root"
    for tool in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster"):
        if not shutil.which(tool):
            return f"{tool} is missing (Debian's postgresql-common)"
    if not os.path.isdir("/etc/postgresql") or not os.listdir("/etc/postgresql"):
        return "no PostgreSQL server version is installed"
    return None


def _version() -> str:
    return sorted(os.listdir("/etc/postgresql"), key=float)[-1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()[-800:]}")


@dataclass
class Cluster:
    name: str
    port: int
    version: str

    @property
    def data(self) -> Path:
        return Path("/var/lib/postgresql") / self.version / self.name

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def ctl(self, action: str) -> None:
        _run("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action)

    def start(self) -> None:
        self.ctl("start")
        wait_until_answering(self.dsn())

    def stop(self) -> None:
        self.ctl("stop")

    async def sql(self, statement: str, *args: object, database: str = "postgres") -> object:
        connection = await asyncpg.connect(self.dsn(database), timeout=5)
        try:
            return await connection.fetchval(statement, *args)
        finally:
            await connection.close()

    def drop(self) -> None:
        subprocess.run(
            ["pg_dropcluster", "--stop", self.version, self.name],
            capture_output=True,
            check=False,
        )


def wait_until_answering(dsn: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = subprocess.run(["pg_isready", "-q", "-d", dsn], check=False)
        if result.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{dsn} did not come up")


def _create(name: str) -> Cluster:
    cluster = Cluster(name, _free_port(), _version())
    options = [f"--pgoption={option}" for option in _OPTIONS]
    _run("pg_createcluster", "-p", str(cluster.port), *options, cluster.version, name)
    (Path("/etc/postgresql") / cluster.version / name / "pg_hba.conf").write_text(_HBA)
    return cluster


def _make_replica_of(primary: Cluster, replica: Cluster) -> None:
    for entry in replica.data.iterdir():  # pg_basebackup fills an empty directory
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    _run(
        "runuser", "-u", "postgres", "--",
        "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
        "-D", str(replica.data), "-R", "-X", "stream", "-c", "fast",
    )  # fmt: skip
    replica.start()


@contextlib.contextmanager
def primary_and_replica(prefix: str) -> Iterator[tuple[Cluster, Cluster]]:
    """A new primary and its streaming replica, both running; dropped after."""
    made: list[Cluster] = []
    try:
        primary = _create(f"{prefix}_primary")
        made.append(primary)
        primary.start()
        replica = _create(f"{prefix}_replica")
        made.append(replica)
        _make_replica_of(primary, replica)
        yield primary, replica
    finally:
        for cluster in reversed(made):
            cluster.drop()


def for_tests(prefix: str) -> Iterator[tuple[Cluster, Cluster]]:
    """:func:`primary_and_replica` for a fixture: a test that cannot have
    them fails (engines named, as in CI) or is skipped (``auto``)."""
    why = why_not()
    if why is not None:
        unavailable("a primary and replica of the tests' own", why)
    with primary_and_replica(prefix) as made:
        yield made
