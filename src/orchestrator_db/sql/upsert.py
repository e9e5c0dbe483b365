"""Insert a row, or update the one with the same key: one statement, per dialect."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.dml import Insert


def upsert_statement(
    dialect: str,
    table: Table,
    values: Mapping[str, Any],
    conflict: Sequence[str],
    changes: Mapping[str, Any],
) -> Insert:
    """INSERT ``values``; on a conflict on ``conflict`` columns, set ``changes``.
    Safe against a concurrent upsert of the same key on both engines."""
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(table).values(dict(values))
    return statement.on_conflict_do_update(index_elements=list(conflict), set_=dict(changes))
