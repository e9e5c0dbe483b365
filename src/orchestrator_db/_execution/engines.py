"""Engines built from :class:`~orchestrator_db.settings.DatabaseSettings`, per backend.

Nothing here runs at import time; :func:`create_engine` is called by
:class:`~orchestrator_db.Database` and by the Alembic environment, so the
command line and the library talk to the database with the same settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

from orchestrator_db._execution.backend import Backend
from orchestrator_db._execution.postgresql import POSTGRESQL
from orchestrator_db._execution.sqlite import SQLITE
from orchestrator_db.settings import DatabaseSettings, normalize_url

_BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (SQLITE, POSTGRESQL)}


def backend_for(name: str) -> Backend:
    """The backend of a dialect (or URL backend) name."""
    return _BACKENDS[name]


def create_engine(
    url: str | URL, settings: DatabaseSettings | None = None, *, read_only: bool = False
) -> AsyncEngine:
    """The async engine for ``url`` with the package's settings applied.

    ``read_only`` (PostgreSQL) makes the engine of read-only units of work.
    ``settings.extra_engine_options`` are merged into the package's options
    (nested dictionaries such as ``connect_args`` key by key), except those
    that enforce read-only units and timeouts, which always win.
    """
    settings = settings or DatabaseSettings()
    parsed = normalize_url(url)
    backend = backend_for(parsed.get_backend_name())
    defaults, enforced = backend.engine_options(parsed, settings, read_only=read_only)
    # The settings' own options win over the same ones in extra_engine_options.
    enforced = merged({"echo": settings.echo, "pool_timeout": settings.pool_timeout}, enforced)
    options = merged(merged(defaults, settings.extra_engine_options), enforced)
    if "isolation_level" in enforced and isinstance(options.get("execution_options"), Mapping):
        # The enforced isolation level (autocommit of read-only units) is not
        # to be undone per connection either; enforcing it there instead
        # would cost every checkout a round of connection characteristics.
        options["execution_options"] = {
            name: value
            for name, value in options["execution_options"].items()
            if name != "isolation_level"
        }
    poolclass = options.get("poolclass")
    if poolclass is not None and not issubclass(poolclass, QueuePool):
        # NullPool / StaticPool take no sizing arguments.
        for key in ("pool_size", "max_overflow", "pool_timeout"):
            options.pop(key, None)
    engine = create_async_engine(parsed, **options)
    backend.configure(engine, settings)
    return engine


def create_read_engine(
    url: URL, settings: DatabaseSettings, write_engine: AsyncEngine | None = None
) -> AsyncEngine:
    """The engine of read-only units at ``url``: an engine of its own in
    autocommit, or a write engine (``write_engine``, else a new one) with
    read-only transactions (see :meth:`Backend.autocommit_reads`)."""
    backend = backend_for(url.get_backend_name())
    if backend.autocommit_reads(settings) and not backend.reads_share_the_pool:
        return create_engine(url, settings, read_only=True)
    engine = write_engine if write_engine is not None else create_engine(url, settings)
    return engine.execution_options(**backend.read_only_options())


def create_replica_engines(url: URL, settings: DatabaseSettings) -> tuple[AsyncEngine, AsyncEngine]:
    """The engine of read-only units on a read replica at ``url``, and the
    engine of its lag checks (no pool: a connection each)."""
    unpooled = settings.with_overrides(
        extra_engine_options={**settings.extra_engine_options, "poolclass": NullPool}
    )
    return create_read_engine(url, settings), create_read_engine(url, unpooled)


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``overrides``, dictionaries merged key by key."""
    result = dict(base)
    for key, value in overrides.items():
        current = result.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            result[key] = merged(current, value)
        else:
            result[key] = value
    return result
