"""A real PgBouncer in transaction pooling mode in front of the tests' PostgreSQL.

Each test process (each xdist worker) starts its own on a free local port,
in a directory of its own, and stops it when the process ends. Debian's
``pgbouncer`` is installed with ``apt-get`` when it is missing (as root);
when it still cannot run, :func:`start` returns why, and the engine
selection says so loudly.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from tests import pg

#: Server connections per database and user: few, so that transactions of
#: different clients really do share server connections.
POOL_SIZE = 4


@functools.cache
def _binary() -> str | None:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/sbin")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "pgbouncer"]
    if subprocess.run(install, capture_output=True, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, check=False)
        subprocess.run(install, capture_output=True, env=env, check=False)
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(directory: Path, port: int) -> Path:
    admin = urlsplit(pg.ADMIN_DSN)
    user = admin.username or "postgres"
    (directory / "userlist.txt").write_text(f'"{user}" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={admin.hostname or '127.0.0.1'} port={admin.port or 5432}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {directory / 'userlist.txt'}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {POOL_SIZE}\n"
        "max_client_conn = 1000\n"
        f"logfile = {directory / 'pgbouncer.log'}\n"
        f"pidfile = {directory / 'pgbouncer.pid'}\n"
    )
    return ini


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


@functools.cache
def start() -> tuple[int | None, str]:
    """Start this process's PgBouncer: ``(port, "")``, or ``(None, why not)``."""
    if not pg.ensure_server():
        return None, "PostgreSQL is not reachable"
    binary = _binary()
    if binary is None:
        return None, "pgbouncer is not installed and could not be installed (apt-get, as root)"
    directory = Path(tempfile.mkdtemp(prefix="odb-pgbouncer-"))
    port = _free_port()
    ini = _config(directory, port)
    command = [binary, "-d", str(ini)]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root.
        owner = pwd.getpwnam("postgres")
        os.chown(directory, owner.pw_uid, owner.pw_gid)
        for path in directory.iterdir():
            os.chown(path, owner.pw_uid, owner.pw_gid)
        command[1:1] = ["-u", "postgres"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    for _ in range(50):
        if _answers(port):
            break
        time.sleep(0.1)
    else:
        logfile = directory / "pgbouncer.log"
        log = logfile.read_text() if logfile.exists() else ""
        return None, f"pgbouncer did not start: {result.stderr.strip() or log[-500:]}"
    atexit.register(_stop, directory)
    return port, ""


def _stop(directory: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        pid = int((directory / "pgbouncer.pid").read_text())
        os.kill(pid, signal.SIGTERM)
    shutil.rmtree(directory, ignore_errors=True)


def through(url: str) -> str:
    """``url`` (a database of the tests' server) reached through this
    process's PgBouncer."""
    port, why = start()
    if port is None:
        raise RuntimeError(f"PgBouncer is not available: {why}")
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
