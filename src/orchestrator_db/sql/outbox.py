"""SQL of the event outbox: events handed to one consumer at a time, under a lease."""

from __future__ import annotations

import functools
from typing import Any, cast

from sqlalchemy import Float, Table, Update, bindparam, literal_column, or_, select, update

from orchestrator_db.models.event import Event
from orchestrator_db.sql.claim import claim_statement
from orchestrator_db.types import utc_now_plus, utc_now_sql

_EVENTS = cast(Table, Event.__table__)
_E = _EVENTS.c
EVENT_COLUMNS = tuple(_E)


@functools.cache
def claim_events_statement(dialect: str) -> Update:
    """Claim up to ``:limit`` unprocessed events whose claim is free (or
    expired), oldest first, for ``:consumer`` for ``:lease_seconds``;
    returns every column of the events."""
    candidates = (
        select(_E.id)
        .with_hint(_EVENTS, "INDEXED BY idx_events_unprocessed", "sqlite")
        .where(
            # Literal, to match the partial index's predicate.
            _E.processed == literal_column("false"),
            or_(_E.claim_expires_at.is_(None), _E.claim_expires_at < utc_now_sql()),
        )
        .order_by(_E.id)
        .limit(bindparam("limit"))
    )
    values = {
        "claimed_by": bindparam("consumer"),
        "claim_expires_at": utc_now_plus(bindparam("lease_seconds", type_=Float())),
    }
    return claim_statement(dialect, _EVENTS, candidates, values, EVENT_COLUMNS)


@functools.cache
def mark_processed_statement(*, by_consumer: bool) -> Update:
    """Mark the unprocessed events ``:ids`` processed (only those
    ``:consumer`` holds, ``by_consumer``); returns their ids."""
    criteria: list[Any] = [_E.id.in_(bindparam("ids", expanding=True)), _E.processed.is_(False)]
    if by_consumer:
        criteria.append(_E.claimed_by == bindparam("consumer"))
    return (
        update(_EVENTS)
        .where(*criteria)
        .values(processed=True, claim_expires_at=None)
        .returning(_E.id)
    )
