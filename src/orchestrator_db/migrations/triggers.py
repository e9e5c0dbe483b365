"""Database triggers, declared next to the models and kept in step by Alembic.

A trigger is described once, as a :class:`Trigger` carrying its DDL for each
dialect. The models never call this module directly: a column declared with
``info={"maintained_by": "trigger"}`` (the ``updated_at`` columns) gets an
``updated_at`` trigger derived from the table, and a table may list further
triggers in ``Table.info["triggers"]``. :func:`declared_triggers` collects both
from a ``MetaData``; :func:`reflect_triggers` reads what a live database has.
:mod:`orchestrator_db.migrations.alembic_ext` compares the two during autogenerate.

Trigger and table names are identifiers chosen by this package, never user
input; they are still checked against a strict pattern before they go into DDL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, MetaData, Table, text

from orchestrator_db.models.base import MAINTAINED_BY_TRIGGER
from orchestrator_db.types import POSTGRESQL_NOW, SQLITE_NOW

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_DOLLAR_BODY = re.compile(r"\bAS\s+(\$[A-Za-z_0-9]*\$)(.*)\1", re.DOTALL)
_WHITESPACE = re.compile(r"\s+")


def _identifier(name: str) -> str:
    """Accept only plain lowercase identifiers in declarations."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain lowercase SQL identifier")
    return name


def _quoted(name: str) -> str:
    """Quote a name read back from a database (it may be anyone's trigger)."""
    if _IDENTIFIER.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Trigger:
    """A trigger on ``table`` with its DDL for each dialect it exists on.

    ``sqlite`` is the complete ``CREATE TRIGGER`` statement. ``postgresql``
    lists the statements that create it (normally the trigger function, then
    the trigger). ``postgresql_function`` names a function that belongs to this
    trigger alone and is dropped with it.
    """

    name: str
    table: str
    sqlite: str | None = None
    postgresql: tuple[str, ...] = ()
    postgresql_function: str | None = None

    def create_statements(self, dialect: str) -> tuple[str, ...]:
        if dialect == "sqlite":
            return (self.sqlite,) if self.sqlite else ()
        if dialect == "postgresql":
            return self.postgresql
        return ()

    def drop_statements(self, dialect: str) -> tuple[str, ...]:
        name, table = _quoted(self.name), _quoted(self.table)
        if dialect == "sqlite":
            return (f"DROP TRIGGER IF EXISTS {name}",)
        if dialect == "postgresql":
            statements = [f"DROP TRIGGER IF EXISTS {name} ON {table}"]
            if self.postgresql_function:
                statements.append(f"DROP FUNCTION IF EXISTS {_quoted(self.postgresql_function)}()")
            return tuple(statements)
        return ()

    def has_definition_for(self, dialect: str) -> bool:
        return bool(self.create_statements(dialect))

    def same_definition(self, other: Trigger, dialect: str) -> bool:
        """True when both define the same trigger on ``dialect``.

        SQLite keeps the statement as written, so texts are compared with
        whitespace collapsed. PostgreSQL rewrites trigger DDL, so only the
        function bodies (``pg_proc.prosrc``) and the schema-less trigger clause
        are compared.
        """
        if self.table != other.table:
            return False
        if dialect == "sqlite":
            return _squash(self.sqlite) == _squash(other.sqlite)
        if dialect == "postgresql":
            return [_pg_comparable(s) for s in self.postgresql] == [
                _pg_comparable(s) for s in other.postgresql
            ]
        return True


def _squash(sql: str | None) -> str:
    return _WHITESPACE.sub(" ", sql or "").strip().rstrip(";").strip()


def function_body(sql: str) -> str | None:
    """The dollar-quoted body of a ``CREATE FUNCTION`` statement, if it has one."""
    match = _DOLLAR_BODY.search(sql)
    return match.group(2) if match else None


def _pg_comparable(statement: str) -> str:
    body = function_body(statement)
    if body is not None:
        return "function:" + _squash(body)
    squashed = _squash(statement)
    # pg_get_triggerdef qualifies the table with its schema; declarations don't.
    squashed = re.sub(r"\bON \w+\.", "ON ", squashed)
    squashed = re.sub(r"\bEXECUTE (?:FUNCTION|PROCEDURE) \w+\.", "EXECUTE FUNCTION ", squashed)
    squashed = squashed.replace("EXECUTE PROCEDURE", "EXECUTE FUNCTION")
    return "trigger:" + squashed


def updated_at_trigger(table: str, column: str = "updated_at") -> Trigger:
    """The trigger that keeps ``table.column`` at the time of the last update.

    SQLite cannot assign ``NEW`` in a trigger, so an AFTER UPDATE trigger
    writes the column back. Its WHEN clause has two guards: the statement did
    not change the column itself (an explicit value is kept), and the value is
    not already "now" (``'now'`` is fixed within one statement step, so the
    trigger's own UPDATE cannot recurse when ``recursive_triggers`` is on).
    PostgreSQL uses a BEFORE UPDATE row trigger that assigns ``NEW`` directly.
    """
    table, column = _identifier(table), _identifier(column)
    name = f"trg_{table}_{column}"
    # DDL cannot bind identifiers; these passed _identifier() above.
    sqlite = (
        f"CREATE TRIGGER {name}\n"  # noqa: S608
        f"AFTER UPDATE ON {table}\n"
        "FOR EACH ROW\n"
        f"WHEN NEW.{column} IS OLD.{column}\n"
        f"  AND NEW.{column} IS NOT {SQLITE_NOW}\n"
        "BEGIN\n"
        f"  UPDATE {table} SET {column} = {SQLITE_NOW} WHERE rowid = NEW.rowid;\n"
        "END"
    )
    function = (
        f"CREATE OR REPLACE FUNCTION {name}()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        "AS $function$\n"
        "BEGIN\n"
        f"  IF NEW.{column} IS NOT DISTINCT FROM OLD.{column} THEN\n"
        f"    NEW.{column} := {POSTGRESQL_NOW};\n"
        "  END IF;\n"
        "  RETURN NEW;\n"
        "END;\n"
        "$function$"
    )
    trigger = (
        f"CREATE TRIGGER {name} BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()"
    )
    return Trigger(
        name=name,
        table=table,
        sqlite=sqlite,
        postgresql=(function, trigger),
        postgresql_function=name,
    )


def _table_triggers(table: Table) -> Iterator[Trigger]:
    for column in table.columns:
        if MAINTAINED_BY_TRIGGER.items() <= column.info.items():
            yield updated_at_trigger(table.name, column.name)
    yield from table.info.get("triggers", ())


def declared_triggers(metadata: MetaData | Iterable[MetaData]) -> dict[str, Trigger]:
    """Every trigger the models declare, by trigger name."""
    metadatas = [metadata] if isinstance(metadata, MetaData) else list(metadata)
    found: dict[str, Trigger] = {}
    for md in metadatas:
        for table in md.sorted_tables:
            for trigger in _table_triggers(table):
                if trigger.name in found:
                    raise ValueError(f"trigger {trigger.name!r} is declared twice")
                found[trigger.name] = trigger
    return found


_PG_TRIGGERS = text(
    """
    SELECT t.tgname AS name,
           c.relname AS table_name,
           pg_get_functiondef(p.oid) AS function_sql,
           pg_get_triggerdef(t.oid) AS trigger_sql,
           p.proname AS function_name,
           (SELECT count(*) FROM pg_trigger other WHERE other.tgfoid = t.tgfoid) AS users
    FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_proc p ON p.oid = t.tgfoid
    WHERE NOT t.tgisinternal AND n.nspname = current_schema()
    ORDER BY t.tgname
    """
)

_SQLITE_TRIGGERS = text(
    "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
)


def reflect_triggers(connection: Connection) -> dict[str, Trigger]:
    """The triggers that exist in the connected database, by name.

    The definitions are complete enough to re-create each trigger, which is
    what makes a generated ``drop_trigger`` reversible.
    """
    dialect = connection.dialect.name
    found: dict[str, Trigger] = {}
    if dialect == "sqlite":
        for name, table, sql in connection.execute(_SQLITE_TRIGGERS):
            found[name] = Trigger(name=name, table=table, sqlite=sql)
    elif dialect == "postgresql":
        for row in connection.execute(_PG_TRIGGERS).mappings():
            found[row["name"]] = Trigger(
                name=row["name"],
                table=row["table_name"],
                postgresql=(row["function_sql"].rstrip(), row["trigger_sql"]),
                # A function shared with other triggers is not ours to drop.
                postgresql_function=row["function_name"] if row["users"] == 1 else None,
            )
    return found
