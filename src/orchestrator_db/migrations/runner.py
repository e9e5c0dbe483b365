"""Running the package's Alembic migrations, from the CLI or from Python.

The script directory (``env.py``, ``script.py.mako``, ``versions/``) is this
package, ``orchestrator_db/migrations``, beside the trigger declarations and
the Alembic extension, so migrations work from an installed wheel as well as
from a checkout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, MetaData
from sqlalchemy.engine import Dialect

from orchestrator_db._execution.engines import backend_for
from orchestrator_db.errors import UnknownRevisionError, ValidationError
from orchestrator_db.settings import normalize_url, url_from_env

MIGRATIONS_DIR = Path(__file__).parent

_ALEMBIC_CHECK_PLUGINS = ["alembic.autogenerate.*", "alembic.ext.checkconstraint_byname"]


def alembic_config(
    connection: Connection | None = None,
    *,
    script_location: Path | None = None,
    target_metadata: MetaData | None = None,
) -> Config:
    """An Alembic ``Config`` for the package's script directory.

    With ``connection``, ``env.py`` migrates over it instead of opening its own.
    ``script_location`` and ``target_metadata`` replace the package's script
    directory and models (for tools and tests that generate revisions).
    """
    config = Config()
    config.set_main_option("script_location", str(script_location or MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    if target_metadata is not None:
        config.attributes["target_metadata"] = target_metadata
    return config


@functools.cache
def head_revision() -> str | None:
    """The newest revision this installed package ships (read once)."""
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision this installed package ships."""
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    return frozenset(revision.revision for revision in script.walk_revisions())


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def checked_revision(connection: Connection) -> str | None:
    """The database's revision (``None`` before the first migration); a
    revision this package does not know is an :class:`UnknownRevisionError`."""
    heads = MigrationContext.configure(connection).get_current_heads()
    for head in heads:
        if head not in known_revisions():
            raise UnknownRevisionError(head, head_revision())
    return heads[0] if heads else None


def run(command: Callable[[Config], None], connection: Connection) -> None:
    """Run an Alembic command over ``connection``, after checking the
    database's revision is one this package knows; Alembic's refusals (an
    unknown target revision, say) are :class:`ValidationError`."""
    checked_revision(connection)
    if connection.in_transaction():
        # The check's read began one: Alembic must begin (and commit) its own.
        connection.rollback()
    try:
        command(alembic_config(connection))
    except (CommandError, RevisionError, AssertionError) as error:
        # Alembic's word on a target revision it cannot reach (it asserts on
        # some malformed ones, such as "@@").
        reason = str(error) or "malformed revision"
        raise ValidationError(f"alembic refused: {reason}", field="revision") from None


def resolve_url(config: Config, x_arguments: Mapping[str, str]) -> str:
    """``-x url=...``, else ``sqlalchemy.url`` from the ini file, else
    ``ORCHESTRATOR_DB_URL``, else the default SQLite file."""
    url = x_arguments.get("url") or config.get_main_option("sqlalchemy.url") or url_from_env()
    return normalize_url(url).render_as_string(hide_password=False)


def _include_object(dialect: Dialect) -> Callable[..., bool]:
    """Leave out CHECKs that a type creates only on some dialects.

    ``Boolean(create_constraint=True)`` adds ``CHECK (x IN (0, 1))`` where
    there is no native boolean (SQLite) and nothing on PostgreSQL; without
    this filter the comparison would ask to add it to PostgreSQL.
    """
    compiler_stub = SimpleNamespace(dialect=dialect)

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "check_constraint" and not reflected:
            create_rule = getattr(obj, "_create_rule", None)
            if create_rule is not None and not create_rule(compiler_stub):
                return False
        return True

    return include


def context_options(
    dialect: Dialect | None, target_metadata: MetaData | None = None
) -> dict[str, Any]:
    """The migration context options shared by every way of running Alembic."""
    from orchestrator_db.migrations import alembic_ext
    from orchestrator_db.models import Base

    options: dict[str, Any] = (
        {} if dialect is None else {"include_object": _include_object(dialect)}
    )
    return options | {
        "target_metadata": target_metadata if target_metadata is not None else Base.metadata,
        # SQLite can ALTER almost nothing; batch mode rebuilds tables there and
        # is a plain ALTER on PostgreSQL.
        "render_as_batch": True,
        "render_item": alembic_ext.render_item,
        "compare_type": True,
        "autogenerate_plugins": _ALEMBIC_CHECK_PLUGINS,
        # SQLite supports transactional DDL too: a failed revision leaves
        # nothing half-applied on either engine.
        "transactional_ddl": True,
    }


class MigrationEnvironment(Protocol):
    """What ``configure_and_run`` needs of ``alembic.context`` (the module)."""

    def configure(self, **kw: Any) -> None: ...

    def begin_transaction(self) -> AbstractContextManager[Any]: ...

    def run_migrations(self, **kw: Any) -> None: ...


def configure_and_run(
    context: MigrationEnvironment,
    *,
    connection: Connection | None = None,
    url: str | None = None,
    target_metadata: MetaData | None = None,
) -> None:
    """Configure ``context`` and run the migrations it was asked for."""
    if connection is None:
        context.configure(url=url, literal_binds=True, **context_options(None, target_metadata))
        with context.begin_transaction():
            context.run_migrations()
        return

    backend = backend_for(connection.dialect.name)
    with backend.migrating(connection):
        context.configure(
            connection=connection, **context_options(connection.dialect, target_metadata)
        )
        with context.begin_transaction():
            backend.lock_migrations(connection)
            context.run_migrations()
            backend.check_migrations(connection)
