"""The event outbox: emitted in the transaction that caused them, handed to
exactly one consumer at a time."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Float, Table, bindparam, literal_column, or_, select, update
from sqlalchemy.sql.selectable import ExecutableReturnsRows

from orchestrator_db.errors import ValidationError
from orchestrator_db.models.event import Event, EventType
from orchestrator_db.repositories.base import Repository
from orchestrator_db.types import new_id, utc_now_plus, utc_now_sql

_EVENTS = cast(Table, Event.__table__)


@functools.cache
def _claim_statement(dialect: str) -> ExecutableReturnsRows:
    """Claim up to ``:limit`` unprocessed, unclaimed (or lease-expired) events,
    oldest first: the same technique as the task claim (see task_queue)."""
    candidates = (
        select(Event.id)
        .with_hint(Event, "INDEXED BY idx_events_unprocessed", "sqlite")
        .where(
            # Literal, to match the partial index's predicate.
            Event.processed == literal_column("false"),
            or_(Event.claim_expires_at.is_(None), Event.claim_expires_at < utc_now_sql()),
        )
        .order_by(Event.id)
        .limit(bindparam("limit"))
    )
    values = {
        "claimed_by": bindparam("consumer"),
        "claim_expires_at": utc_now_plus(bindparam("lease_seconds", type_=Float())),
    }
    if dialect == "postgresql":
        picked = candidates.with_for_update(skip_locked=True).cte("candidates")
        statement = update(Event).where(Event.id == picked.c.id)
    else:
        statement = update(Event).where(Event.id.in_(candidates.scalar_subquery()))
    return (
        select(Event)
        .from_statement(statement.values(**values).returning(Event))
        .execution_options(populate_existing=True)
    )


class EventRepository(Repository[Event]):
    model_type = Event

    async def emit(
        self,
        event_type: EventType | str,
        *,
        project_id: str,
        ticket_id: str | None = None,
        worker_id: str | None = None,
        stage: str | None = None,
        reason: str | None = None,
    ) -> Event:
        """Record an event in the current transaction: it exists if and only
        if what caused it is committed."""
        try:
            kind = EventType(event_type)
        except ValueError:
            raise ValidationError(
                f"unknown event type {event_type!r}", field="event_type"
            ) from None
        return await self.add(
            Event(
                event_type=kind,
                project_id=project_id,
                ticket_id=ticket_id,
                worker_id=worker_id,
                stage=stage,
                reason=reason,
            )
        )

    async def claim_unprocessed(
        self, limit: int = 100, *, consumer: str | None = None, lease: timedelta | None = None
    ) -> builtins.list[Event]:
        """Up to ``limit`` unprocessed events, oldest first, claimed for
        ``consumer`` (a fresh id when not given) for ``lease`` (5 minutes).

        Concurrent consumers never receive the same event while its claim
        lasts; an event not marked processed before the claim expires is
        handed out again (at-least-once, like the task queue).
        """
        if limit < 1:
            raise ValidationError("limit must be at least 1", field="limit")
        lease = timedelta(minutes=5) if lease is None else lease
        if lease <= timedelta(0):
            raise ValidationError("lease must be positive", field="lease")
        bind = self.session.bind
        assert bind is not None
        params: dict[str, Any] = {
            "consumer": consumer or new_id(),
            "lease_seconds": lease.total_seconds(),
            "limit": limit,
        }
        try:
            events = list(
                (await self.session.scalars(_claim_statement(bind.dialect.name), params)).all()
            )
        except Exception as error:
            await self._raise_translated(error)
        return sorted(events, key=lambda event: event.id)

    async def mark_processed(self, ids: Iterable[int], *, consumer: str | None = None) -> int:
        """Mark events processed; returns how many were. With ``consumer``,
        only events that consumer holds are marked."""
        wanted = list(ids)
        if not wanted:
            return 0
        criteria: builtins.list[ColumnElement[bool]] = [
            _EVENTS.c.id.in_(wanted),
            _EVENTS.c.processed.is_(False),
        ]
        if consumer is not None:
            criteria.append(_EVENTS.c.claimed_by == consumer)
        statement = (
            update(_EVENTS)
            .where(*criteria)
            .values(processed=True, claim_expires_at=None)
            .returning(_EVENTS.c.id)
        )
        return len(await self._bulk_update(statement))
