"""The claim: pick rows in order and mark them taken, atomically, in one statement.

Both the task queue and the outbox hand rows to one worker at a time this way
(the technique of procrastinate, River, Oban, pgqueuer):

* PostgreSQL picks the candidates in a CTE with ``FOR UPDATE SKIP LOCKED``,
  so concurrent claimers skip each other's rows instead of waiting or
  claiming twice; the CTE also keeps the planner from updating more rows
  than the ``LIMIT``.
* SQLite runs ``UPDATE ... WHERE id IN (SELECT ... LIMIT n)`` inside the unit
  of work's ``BEGIN IMMEDIATE``: one writer at a time, so no row can be
  picked twice.

Both return the claimed rows (``RETURNING``), in no particular order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Select, Table, Update, update


def claim_statement(
    dialect: str,
    table: Table,
    candidates: Select[Any],
    values: Mapping[str, Any],
    returning: Sequence[Any],
) -> Update:
    """Set ``values`` on the rows ``candidates`` selects (their primary key,
    in claim order, with a ``LIMIT``), returning ``returning``."""
    (key,) = table.primary_key.columns
    if dialect == "postgresql":
        picked = candidates.with_for_update(skip_locked=True).cte("candidates")
        statement = update(table).where(key == picked.c[key.name])
    else:
        statement = update(table).where(key.in_(candidates.scalar_subquery()))
    return statement.values(**values).returning(*returning)
