"""Alembic in a project that uses orchestrator_db: its tables beside ours.

The package's revisions stay in the package and in its version table
(``alembic_version``): ``orchestrator-db migrate``, ``Database.migrate()``
or an ``alembic.ini`` with ``script_location = orchestrator_db:migrations``
apply them. A project keeps its own revisions in its own script directory
and its own version table (:data:`PROJECT_VERSION_TABLE` unless it says
otherwise), so the two histories never meet:

* the project's ``env.py`` is :func:`run` (``orchestrator-db init-alembic``
  writes one): its autogenerate and ``alembic check`` see the project's
  tables only;
* :func:`referencing` gives the project's models the package's tables to
  point foreign keys at (``ForeignKey("tasks.id")``), without making them
  the project's;
* the package's ``alembic check`` leaves every table it does not declare
  alone (:func:`~orchestrator_db.migrations.runner.context_options`).

Apply the package's revisions first (the project's may reference our
tables), then the project's; downgrade in the other order.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
from pathlib import Path
from typing import Any

import alembic
from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData
from sqlalchemy.engine import Dialect
from sqlalchemy.pool import NullPool

from orchestrator_db._execution.engines import create_engine
from orchestrator_db.errors import ValidationError
from orchestrator_db.migrations.runner import configure_and_run, resolve_url
from orchestrator_db.settings import DatabaseSettings, normalize_url, split_url

#: The package's version table, and a project's by default.
PACKAGE_VERSION_TABLE = "alembic_version"
PROJECT_VERSION_TABLE = "alembic_version_project"


def package_tables() -> frozenset[str]:
    """The names of the package's tables (and its version table)."""
    from orchestrator_db.models import Base

    return frozenset(Base.metadata.tables) | {PACKAGE_VERSION_TABLE}


def referencing(metadata: MetaData) -> MetaData:
    """``metadata`` with a copy of each of the package's tables, so that
    the project's foreign keys to them resolve; :func:`run` leaves them out
    of the project's migrations (and so do the copies: no triggers)."""
    from orchestrator_db.models import Base

    for table in Base.metadata.sorted_tables:
        if table.name not in metadata.tables:
            copy = table.to_metadata(metadata)
            copy.info = {}
            for column in copy.columns:
                column.info = {}
    return metadata


def _ours(obj: Any, name: str | None, type_: str) -> bool:
    ours = package_tables()
    if type_ == "table":
        return name in ours
    table = getattr(obj, "table", None)
    return table is not None and table.name in ours


def include_project_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """The project's migrations leave the package's tables (and what is on
    them) to the package."""
    return not _ours(obj, name, type_)


def run(
    context: Any, target_metadata: MetaData, *, version_table: str = PROJECT_VERSION_TABLE
) -> None:
    """The whole of a project's ``env.py``: its revisions, against the
    database of ``-x url=...``, ``sqlalchemy.url`` or ``$ORCHESTRATOR_DB_URL``
    (with the package's settings: ``?pgbouncer=true`` included), migrated
    as the package's are (foreign keys off around SQLite's table rebuilds,
    the migration lock)."""
    from orchestrator_db.migrations.alembic_ext import render_item
    from orchestrator_db.models import Base

    if target_metadata is Base.metadata:
        raise ValidationError(
            "a project's models need a MetaData (a declarative Base) of their own, "
            "not orchestrator_db.models.Base: its tables are the package's",
            field="target_metadata",
        )

    def options(dialect: Dialect | None) -> dict[str, Any]:
        return {
            "target_metadata": target_metadata,
            "version_table": version_table,
            "include_object": include_project_object,
            "render_item": render_item,  # the package's column types, imported
            "render_as_batch": True,  # SQLite alters tables by rebuilding them
            "compare_type": True,
            "transactional_ddl": True,
        }

    config = context.config
    url = resolve_url(config, context.get_x_argument(as_dictionary=True))
    if context.is_offline_mode():
        configure_and_run(context, url=url, options=options)
        return

    async def online() -> None:
        parsed, from_url = split_url(normalize_url(url))
        settings = DatabaseSettings(extra_engine_options={"poolclass": NullPool}, **from_url)
        engine = create_engine(parsed, settings)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(
                    lambda sync: configure_and_run(context, connection=sync, options=options)
                )
        finally:
            await engine.dispose()

    asyncio.run(online())


def upgrade(config_file: str | Path, url: str, revision: str = "head") -> None:
    """Apply a project's revisions (those of its ``alembic.ini``) to the
    database at ``url``, as ``alembic -x url=URL upgrade REVISION`` does;
    for a project's tests (the pytest plugin's ``odb_migrate``) and its
    deployment code. Call it where no event loop runs (or in a thread)."""
    if not Path(config_file).is_file():  # Alembic would read an empty configuration
        raise FileNotFoundError(f"no Alembic configuration at {config_file}")
    options = argparse.Namespace(x=[f"url={url}"])
    config = Config(str(config_file), cmd_opts=options, stdout=io.StringIO())
    command.upgrade(config, revision)


_INI = """\
# Alembic for this project's own tables; orchestrator_db's tables and
# revisions are the package's (`orchestrator-db migrate` applies them first).
# The database: -x url=..., sqlalchemy.url below, or $ORCHESTRATOR_DB_URL.
[alembic]
script_location = %(here)s/{folder}
prepend_sys_path = .
path_separator = os
# sqlalchemy.url = postgresql+asyncpg://user@host/db

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
"""

_ENV = """\
\"\"\"Alembic environment of this project's own tables.

orchestrator_db's tables are the package's: its revisions apply them
(`orchestrator-db migrate`, `Database.migrate()`), and this project's
revisions leave them alone, with a version table of their own.
\"\"\"

from alembic import context
from sqlalchemy import MetaData

from orchestrator_db.migrations.project import referencing, run

# The metadata of this project's models, e.g.
#     from myapp.models import Base
#     metadata = Base.metadata
metadata = MetaData()

# Foreign keys to orchestrator_db's tables (ForeignKey("tasks.id")) resolve.
referencing(metadata)
run(context, metadata)
"""


def init(directory: Path, *, folder: str = "migrations") -> list[Path]:
    """Write ``alembic.ini`` and a script directory (``env.py``,
    ``script.py.mako``, ``versions/``) for a project's own revisions into
    ``directory``; the files written. Nothing is overwritten."""
    ini = directory / "alembic.ini"
    scripts = directory / folder
    for path in (ini, scripts):
        if path.exists():
            raise FileExistsError(f"{path} exists already")
    try:
        (scripts / "versions").mkdir(parents=True)
        ini.write_text(_INI.format(folder=folder))
        (scripts / "env.py").write_text(_ENV)
        template = Path(alembic.__file__).parent / "templates" / "generic" / "script.py.mako"
        shutil.copyfile(template, scripts / "script.py.mako")
    except BaseException:  # all or nothing: a second try finds no half of a project
        shutil.rmtree(scripts, ignore_errors=True)
        ini.unlink(missing_ok=True)
        raise
    return [ini, scripts / "env.py", scripts / "script.py.mako", scripts / "versions"]
