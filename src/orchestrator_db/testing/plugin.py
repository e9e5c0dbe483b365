"""orchestrator_db's pytest plugin, loaded by pytest wherever the package is
installed with its ``testing`` extra (``pip install 'orchestrator_db[testing]'``).

Fixtures (:mod:`orchestrator_db.testing.fixtures`):

* ``odb_database``: a migrated :class:`~orchestrator_db.Database` of the
  test's own, closed after it;
* ``odb_uow``: a unit of work on it, rolled back after the test unless the
  test commits;
* ``odb_database_url``: the URL of that database, for code that opens its own;
* ``odb_settings``: the ``Database`` settings (override it in a conftest);
* ``odb_migrate``: what migrates the suite's database once (override it to
  apply your project's revisions too);
* ``odb_engine``: ``"sqlite"`` (the default) or ``"postgresql"``, chosen with
  ``--odb-engine`` or ``$ORCHESTRATOR_DB_TEST_ENGINE``; PostgreSQL needs a
  server, ``--odb-postgres-url`` or ``$ORCHESTRATOR_DB_TEST_POSTGRES_URL``,
  on which the plugin creates (and drops) databases of its own.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

ENGINES = ("sqlite", "postgresql")
ENGINE_VARIABLE = "ORCHESTRATOR_DB_TEST_ENGINE"
POSTGRES_VARIABLE = "ORCHESTRATOR_DB_TEST_POSTGRES_URL"
_MISSING = "pytest-asyncio is not installed: pip install 'orchestrator_db[testing]'"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("orchestrator_db", "orchestrator_db's fixtures")
    group.addoption(
        "--odb-engine",
        choices=ENGINES,
        help=f"the database of the odb_* fixtures (default: ${ENGINE_VARIABLE}, else sqlite)",
    )
    group.addoption(
        "--odb-postgres-url",
        metavar="URL",
        help="a PostgreSQL server on which the odb_* fixtures make their databases "
        f"(default: ${POSTGRES_VARIABLE})",
    )


def chosen_engine(config: pytest.Config) -> str:
    """``--odb-engine``, else ``$ORCHESTRATOR_DB_TEST_ENGINE``, else ``sqlite``."""
    engine = config.getoption("odb_engine") or os.environ.get(ENGINE_VARIABLE) or "sqlite"
    if engine not in ENGINES:
        raise pytest.UsageError(f"${ENGINE_VARIABLE} is {engine!r}, not one of {ENGINES}")
    return str(engine)


def postgres_server(config: pytest.Config) -> str:
    """``--odb-postgres-url``, else ``$ORCHESTRATOR_DB_TEST_POSTGRES_URL``."""
    url = config.getoption("odb_postgres_url") or os.environ.get(POSTGRES_VARIABLE)
    if not url:
        raise pytest.UsageError(
            f"--odb-engine postgresql needs a server: --odb-postgres-url or ${POSTGRES_VARIABLE}"
        )
    from orchestrator_db.errors import DataLayerError
    from orchestrator_db.settings import normalize_url

    try:
        backend = normalize_url(str(url)).get_backend_name()
    except DataLayerError:
        backend = None
    if backend != "postgresql":  # said without the URL: it may hold a password
        raise pytest.UsageError("--odb-postgres-url is not a PostgreSQL URL")
    return str(url)


def pytest_configure(config: pytest.Config) -> None:
    if chosen_engine(config) == "postgresql":
        postgres_server(config)  # asked for: its absence is a usage error, at once
    if importlib.util.find_spec("pytest_asyncio") is None:
        return  # the fixtures are async; pytest_report_header says why they are absent
    from orchestrator_db.testing import fixtures

    config.pluginmanager.register(fixtures, "orchestrator_db.fixtures")


def pytest_report_header(config: pytest.Config) -> str | None:
    if importlib.util.find_spec("pytest_asyncio") is None:
        return f"orchestrator_db: no odb_* fixtures, {_MISSING}"
    return None
