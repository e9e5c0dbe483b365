"""The event outbox: emitted in the transaction that caused them, handed to
exactly one consumer at a time."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from orchestrator_db.errors import ValidationError
from orchestrator_db.models.event import Event, EventType
from orchestrator_db.repositories.base import Repository
from orchestrator_db.sql import outbox
from orchestrator_db.types import new_id


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
        params: dict[str, Any] = {
            "consumer": consumer or new_id(),
            "lease_seconds": lease.total_seconds(),
            "limit": limit,
        }
        statement = outbox.claim_events_statement(self._ex.backend.name)
        events = await self._objects(statement, params, refresh=True)
        return sorted(events, key=lambda event: event.id)

    async def mark_processed(self, ids: Iterable[int], *, consumer: str | None = None) -> int:
        """Mark events processed; returns how many were. With ``consumer``,
        only events that consumer holds are marked."""
        wanted = list(ids)
        if not wanted:
            return 0
        params: dict[str, Any] = {"ids": wanted}
        if consumer is not None:
            params["consumer"] = consumer
        statement = outbox.mark_processed_statement(by_consumer=consumer is not None)
        return len(await self._changed(statement, params))
