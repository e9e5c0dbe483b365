"""Alembic support for triggers: operations, rendering and autogenerate.

Importing this module (the package's ``env.py`` does) registers:

* ``op.create_trigger(name, table, sqlite=..., postgresql=(...), postgresql_function=...)``
  and ``op.drop_trigger(...)`` with the same arguments. Each operation carries
  the full definition for both dialects, so every generated revision is
  reversible and runs unchanged on SQLite and PostgreSQL; on a dialect the
  trigger has no definition for, the operation does nothing.
* a renderer that writes those calls into revision files;
* a comparator that runs after the table comparison and emits:
  - ``create_trigger`` for declared triggers missing from the database
    (placed right after the ``create_table`` of a new table);
  - ``drop_trigger`` for triggers on the package's tables that are no longer
    declared (placed before the ``drop_table`` of a removed table), with the
    definition read from the database so that the downgrade can restore it;
  - a drop and a create for a trigger whose definition changed;
  - around every table change that makes SQLite rebuild the table (batch
    mode copies it into a new table, which silently loses its triggers), a
    drop before and a create after, so the rebuilt table keeps its triggers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

from alembic.autogenerate import comparators, renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations, ops
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import (
    CheckConstraint,
    ClauseElement,
    Column,
    DefaultClause,
    Enum,
    Index,
    MetaData,
    String,
    Table,
    TextClause,
    text,
)
from sqlalchemy import column as sql_column
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.schema import DDL
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression, conv

from orchestrator_db.migrations.triggers import Trigger, declared_triggers, reflect_triggers

log = logging.getLogger(__name__)


class _TriggerOp(MigrateOperation):
    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger


@Operations.register_operation("create_trigger")
class CreateTriggerOp(_TriggerOp):
    """Create a trigger (and, on PostgreSQL, its function)."""

    @classmethod
    def create_trigger(
        cls,
        operations: Operations,
        name: str,
        table: str,
        *,
        sqlite: str | None = None,
        postgresql: Iterable[str] = (),
        postgresql_function: str | None = None,
    ) -> None:
        trigger = Trigger(
            name=name,
            table=table,
            sqlite=sqlite,
            postgresql=tuple(postgresql),
            postgresql_function=postgresql_function,
        )
        operations.invoke(cls(trigger))

    def reverse(self) -> DropTriggerOp:
        return DropTriggerOp(self.trigger)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("add_trigger", self.trigger.table, self.trigger.name)


@Operations.register_operation("drop_trigger")
class DropTriggerOp(_TriggerOp):
    """Drop a trigger if it exists (with its function on PostgreSQL).

    Autogenerate builds it with the full definition, read from the database,
    which is what lets it reverse into a ``create_trigger``; a rendered
    ``op.drop_trigger(...)`` needs only the names.
    """

    @classmethod
    def drop_trigger(
        cls,
        operations: Operations,
        name: str,
        table: str,
        *,
        postgresql_function: str | None = None,
    ) -> None:
        trigger = Trigger(name=name, table=table, postgresql_function=postgresql_function)
        operations.invoke(cls(trigger))

    def reverse(self) -> CreateTriggerOp:
        return CreateTriggerOp(self.trigger)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("remove_trigger", self.trigger.table, self.trigger.name)


def _execute_all(operations: Operations, statements: Iterable[str]) -> None:
    for statement in statements:
        # DDL() passes the text through untouched (no bind-parameter parsing of
        # ':' as text() would do) and also works in offline --sql mode; its
        # only substitution is %-formatting, hence the escaping.
        operations.execute(DDL(statement.replace("%", "%%")))  # type: ignore[no-untyped-call]


@Operations.implementation_for(CreateTriggerOp)
def _create_trigger(operations: Operations, operation: CreateTriggerOp) -> None:
    dialect = operations.get_context().dialect.name
    statements = operation.trigger.create_statements(dialect)
    if not statements:
        log.warning("trigger %s has no %s definition; not created", operation.trigger.name, dialect)
    _execute_all(operations, statements)


@Operations.implementation_for(DropTriggerOp)
def _drop_trigger(operations: Operations, operation: DropTriggerOp) -> None:
    dialect = operations.get_context().dialect.name
    _execute_all(operations, operation.trigger.drop_statements(dialect))


# --------------------------------------------------------------------- render


def _render_sql(text: str, indent: str) -> str:
    lines = text.splitlines(keepends=True)
    if len(lines) <= 1:
        return repr(text)
    inner = "".join(f"{indent}    {line!r}\n" for line in lines)
    return f"(\n{inner}{indent})"


def _render_trigger_call(function: str, trigger: Trigger, *, definition: bool) -> str:
    indent = "    "
    parts = [repr(trigger.name), repr(trigger.table)]
    if definition and trigger.sqlite:
        parts.append(f"sqlite={_render_sql(trigger.sqlite, indent)}")
    if definition and trigger.postgresql:
        statements = "".join(
            f"{indent}    {_render_sql(s, indent + '    ')},\n" for s in trigger.postgresql
        )
        parts.append(f"postgresql=(\n{statements}{indent})")
    if trigger.postgresql_function:
        parts.append(f"postgresql_function={trigger.postgresql_function!r}")
    body = "".join(f"{indent}{part},\n" for part in parts)
    return f"op.{function}(\n{body})"


@renderers.dispatch_for(CreateTriggerOp)
def _render_create_trigger(autogen_context: AutogenContext, op: CreateTriggerOp) -> str:
    return _render_trigger_call("create_trigger", op.trigger, definition=True)


@renderers.dispatch_for(DropTriggerOp)
def _render_drop_trigger(autogen_context: AutogenContext, op: DropTriggerOp) -> str:
    return _render_trigger_call("drop_trigger", op.trigger, definition=False)


# ------------------------------------------------------------------- compare


def _needs_sqlite_rebuild(modify: ops.ModifyTableOps) -> bool:
    """Mirror of Alembic's SQLite ``requires_recreate_in_batch`` on op objects."""
    for op in modify.ops:
        if isinstance(op, ops.CreateIndexOp | ops.DropIndexOp):
            continue
        if isinstance(op, ops.AddColumnOp):
            default = op.column.server_default
            if isinstance(default, DefaultClause) and isinstance(default.arg, ClauseElement):
                return True
            if op.column.computed is not None and op.column.computed.persisted:
                return True
            continue
        return True
    return False


def _metadatas(autogen_context: AutogenContext) -> list[MetaData]:
    metadata = autogen_context.metadata
    if metadata is None:
        return []
    return [metadata] if isinstance(metadata, MetaData) else list(metadata)


def _index_where(
    op_list: list[MigrateOperation], predicate: Callable[[MigrateOperation], bool]
) -> int | None:
    for index, op in enumerate(op_list):
        if predicate(op):
            return index
    return None


@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def compare_triggers(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: set[str | None]
) -> PriorityDispatchResult:
    """Autogenerate trigger operations; see the module docstring."""
    if None not in schemas or autogen_context.connection is None:
        return PriorityDispatchResult.CONTINUE
    dialect = autogen_context.connection.dialect.name
    metadatas = _metadatas(autogen_context)
    # The tables the environment compares (its include_object): a project's
    # migrations leave the package's tables, and their triggers, alone.
    model_tables = {
        table.name
        for md in metadatas
        for table in md.tables.values()
        if autogen_context.run_object_filters(table, table.name, "table", False, None)
    }
    declared = {
        name: trigger
        for name, trigger in declared_triggers(metadatas).items()
        if trigger.table in model_tables
    }
    existing = reflect_triggers(autogen_context.connection)

    ops_list = upgrade_ops.ops
    created = {op.table_name for op in ops_list if isinstance(op, ops.CreateTableOp)}
    dropped = {op.table_name for op in ops_list if isinstance(op, ops.DropTableOp)}
    rebuilt = {
        op.table_name
        for op in ops_list
        if isinstance(op, ops.ModifyTableOps) and _needs_sqlite_rebuild(op)
    }

    def insert_after_table_op(kind: type[MigrateOperation], table: str, op: _TriggerOp) -> None:
        position = _index_where(
            ops_list, lambda o: isinstance(o, kind) and getattr(o, "table_name", None) == table
        )
        assert position is not None
        # After the table op and any trigger ops already placed behind it.
        position += 1
        while position < len(ops_list) and isinstance(ops_list[position], _TriggerOp):
            position += 1
        ops_list.insert(position, op)

    def insert_before_table_op(kind: type[MigrateOperation], table: str, op: _TriggerOp) -> None:
        position = _index_where(
            ops_list, lambda o: isinstance(o, kind) and getattr(o, "table_name", None) == table
        )
        assert position is not None
        ops_list.insert(position, op)

    for name, trigger in declared.items():
        current = existing.get(name)
        if trigger.table in created:
            insert_after_table_op(ops.CreateTableOp, trigger.table, CreateTriggerOp(trigger))
        elif trigger.table in rebuilt:
            # Batch mode on SQLite recreates the table and loses its triggers:
            # drop before, create after. The drop carries the old definition
            # so that the downgrade restores exactly what was there.
            if current is not None:
                old = trigger if trigger.same_definition(current, dialect) else current
                insert_before_table_op(ops.ModifyTableOps, trigger.table, DropTriggerOp(old))
            insert_after_table_op(ops.ModifyTableOps, trigger.table, CreateTriggerOp(trigger))
        elif current is None:
            ops_list.append(CreateTriggerOp(trigger))
        elif not trigger.same_definition(current, dialect):
            ops_list.append(DropTriggerOp(current))
            ops_list.append(CreateTriggerOp(trigger))

    for name, trigger in existing.items():
        if name in declared:
            continue
        if trigger.table in dropped:
            insert_before_table_op(ops.DropTableOp, trigger.table, DropTriggerOp(trigger))
        elif trigger.table in rebuilt:
            insert_before_table_op(ops.ModifyTableOps, trigger.table, DropTriggerOp(trigger))
        elif trigger.table in model_tables:
            ops_list.append(DropTriggerOp(trigger))
        # Triggers on tables the models do not know are someone else's.

    _preserve_ordered_indexes(autogen_context, ops_list, metadatas)
    return PriorityDispatchResult.CONTINUE


def _descending(index: Index) -> bool:
    return any(
        isinstance(expression, UnaryExpression) and expression.modifier is operators.desc_op
        for expression in index.expressions
    )


def _preserve_ordered_indexes(
    autogen_context: AutogenContext, ops_list: list[MigrateOperation], metadatas: list[MetaData]
) -> None:
    """Keep indexes with DESC columns out of SQLite batch operations.

    SQLite's reflection does not report column order, so a batch rebuild
    re-creates such an index ascending, and Alembic's batch cannot create one
    inside a rebuild at all. Their create/drop operations move out of the
    batch block, and around a rebuild they are dropped before and re-created
    after, from the model's definition.
    """
    assert autogen_context.inspector is not None
    tables = {table.name: table for md in metadatas for table in md.tables.values()}
    for modify in [op for op in ops_list if isinstance(op, ops.ModifyTableOps)]:
        table = tables.get(modify.table_name)
        ordered = {} if table is None else {str(i.name): i for i in table.indexes if _descending(i)}
        if not ordered:
            continue
        before: list[MigrateOperation] = []
        after: list[MigrateOperation] = []
        for op in list(modify.ops):
            if isinstance(op, ops.CreateIndexOp) and op.index_name in ordered:
                modify.ops.remove(op)
                after.append(op)
            elif isinstance(op, ops.DropIndexOp) and op.index_name in ordered:
                modify.ops.remove(op)
                before.append(op)
        if _needs_sqlite_rebuild(modify):
            handled = {getattr(op, "index_name", None) for op in before + after}
            reflected = autogen_context.inspector.get_indexes(modify.table_name)
            existing = {ix["name"] for ix in reflected}
            for name, index in ordered.items():
                if name in existing and name not in handled:
                    before.append(ops.DropIndexOp.from_index(index))
                    after.append(ops.CreateIndexOp.from_index(index))
        position = ops_list.index(modify)
        ops_list[position : position + 1] = [*before, *([modify] if modify.ops else []), *after]


# --------------------------------------------------------- enum CHECKs

_QUOTED = re.compile(r"'((?:[^']|'')*)'")


def _enum_checks(table: Table) -> list[tuple[str, str, list[str]]]:
    """(constraint name, column, allowed values) of every CHECK-backed Enum."""
    found = []
    for constraint in table.constraints:
        type_bound = getattr(constraint, "_type_bound", False)
        if not (isinstance(constraint, CheckConstraint) and type_bound):
            continue
        column = getattr(constraint.sqltext, "left", None)
        while column is not None and not isinstance(column, Column):
            column = getattr(column, "clause", None)  # type_coerce() around it
        if isinstance(column, Column) and isinstance(column.type, Enum) and constraint.name:
            found.append((str(constraint.name), column.name, list(column.type.enums)))
    return found


def _in_list_check(table: str, name: str, column: str, values: Iterable[str]) -> CheckConstraint:
    """``column IN ('a', 'b')`` as plain text: identical SQL on both dialects.

    DDL takes no bind parameters, so SQLAlchemy renders the values as
    literals (quoting and escaping them) with its generic dialect.
    """
    condition = sql_column(column, String).in_(list(values))
    rendered = condition.compile(dialect=DefaultDialect(), compile_kwargs={"literal_binds": True})
    holder = Table(table, MetaData(), Column(column, String))
    return CheckConstraint(text(str(rendered)), name=conv(name), table=holder)


@comparators.dispatch_for("table")
def compare_enum_checks(
    autogen_context: AutogenContext,
    modify_table_ops: ops.ModifyTableOps,
    schema: str | None,
    tname: str,
    conn_table: Table | None,
    metadata_table: Table | None,
) -> PriorityDispatchResult:
    """Notice a CHECK-backed Enum whose allowed values changed.

    Alembic compares neither CHECK expressions nor Enum values, so widening a
    status enum would otherwise produce an empty revision. The comparison is
    on the set of quoted values in the reflected CHECK, which works whatever
    text the database rewrote the constraint into.
    """
    if conn_table is None or metadata_table is None or autogen_context.inspector is None:
        return PriorityDispatchResult.CONTINUE
    reflected = {
        check["name"]: check["sqltext"]
        for check in autogen_context.inspector.get_check_constraints(tname, schema=schema)
        if check.get("name")
    }
    for name, column, values in _enum_checks(metadata_table):
        if name not in reflected:
            continue  # missing altogether: the named-CHECK comparison adds it
        current = [m.replace("''", "'") for m in _QUOTED.findall(reflected[name])]
        if sorted(current) == sorted(values):
            continue
        old = _in_list_check(tname, name, column, current)
        new = _in_list_check(tname, name, column, values)
        modify_table_ops.ops.append(ops.DropConstraintOp.from_constraint(old))
        modify_table_ops.ops.append(ops.AddConstraintOp.from_constraint(new))
        log.info("Detected changed values of enum check %r on %r", name, tname)
    return PriorityDispatchResult.CONTINUE


# ------------------------------------------------------------ render_item


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """``render_item`` hook: render the package's types and server defaults
    by reference, so a revision compiles them for whichever engine runs it."""
    from orchestrator_db import types

    if type_ == "type" and isinstance(obj, types.UTCDateTime | types.UUIDString | types.JSONValue):
        autogen_context.imports.add("import orchestrator_db.types")
        return f"orchestrator_db.types.{type(obj).__name__}()"
    if type_ == "server_default" and isinstance(obj, DefaultClause):
        if isinstance(obj.arg, types.utc_now_sql):
            autogen_context.imports.add("import orchestrator_db.types")
            return "orchestrator_db.types.utc_now_sql()"
        if isinstance(obj.arg, TextClause):
            # As written in the model; SQLite's renderer would add parentheses,
            # making revisions differ by the engine they were generated on.
            return f"sa.text({obj.arg.text!r})"
    return False
