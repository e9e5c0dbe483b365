"""The event outbox: emitted in the transaction that caused them, handed to
exactly one consumer at a time."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from orchestrator_db import values
from orchestrator_db._execution import signals
from orchestrator_db.errors import ValidationError
from orchestrator_db.models.event import Event, EventType
from orchestrator_db.repositories.base import Repository, reads
from orchestrator_db.sql import IDS_PER_STATEMENT, outbox, retention
from orchestrator_db.types import new_id

#: How long a consumer holds the events it claimed unless it says otherwise.
DEFAULT_LEASE = timedelta(minutes=5)


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
        return await self.add(
            Event(
                event_type=values.member(EventType, event_type, "event_type"),
                project_id=project_id,
                ticket_id=ticket_id,
                worker_id=worker_id,
                stage=stage,
                reason=reason,
            )
        )

    async def add(self, obj: Event) -> Event:
        added = await super().add(obj)
        await self._ex.announce(signals.EVENTS)
        return added

    async def add_many(self, objs: Iterable[Event]) -> builtins.list[Event]:
        added = await super().add_many(objs)
        if added:
            await self._ex.announce(signals.EVENTS)
        return added

    async def claim_unprocessed(
        self,
        limit: int = 100,
        *,
        consumer: str | None = None,
        lease: timedelta | None = None,
        wait: timedelta | None = None,
    ) -> builtins.list[Event]:
        """Up to ``limit`` unprocessed events, oldest first, claimed for
        ``consumer`` (a fresh id when not given) for ``lease`` (5 minutes).

        Concurrent consumers never receive the same event while its claim
        lasts; an event not marked processed before the claim expires is
        handed out again (at-least-once, like the task queue).

        With ``wait``, when there is none the unit waits for events (woken
        as they are committed) for up to ``wait``, and returns ``[]`` if
        none came. It must come first in its unit (no statement before it,
        no object loaded): between its tries the unit's transaction is
        rolled back, so that no lock is held while it waits, and the unit
        is its own (other coroutines sharing the unit wait their turn; work
        they begin meanwhile ends the wait).
        """
        values.count(limit, "limit", minimum=1)
        lease = DEFAULT_LEASE if lease is None else values.duration(lease, "lease", positive=True)
        seconds = 0.0 if wait is None else values.duration(wait, "wait").total_seconds()
        params: dict[str, Any] = {
            "consumer": new_id() if consumer is None else _consumer(consumer),
            "lease_seconds": lease.total_seconds(),
            "limit": limit,
        }
        statement = outbox.claim_events_statement(self._ex.backend.name)

        async def attempt() -> builtins.list[Event]:
            events = await self._objects(statement, params, refresh=True)
            return sorted(events, key=lambda event: event.id)

        ex = self._ex
        if seconds <= 0 or ex.signals is None:
            return await attempt()

        others = False

        async def attempt_and_let_go() -> builtins.list[Event]:
            nonlocal others
            events = await attempt()
            if not events:
                # Another coroutine of the unit has begun work (objects
                # added, waiting for their statements): the wait ends here,
                # and the unit keeps its transaction for them.
                others = ex.holds_objects()
                if not others:
                    await ex.end_transaction()
            return events

        async with ex.turn:
            if ex.begun():
                raise ValidationError(
                    "claim_unprocessed(wait=...) must come first in its unit of work: "
                    "the unit's transaction is rolled back while it waits",
                    field="wait",
                )
            return await ex.signals.wait(
                signals.EVENTS, attempt_and_let_go, lambda events: bool(events) or others, seconds
            )

    async def mark_processed(self, ids: Iterable[int], *, consumer: str | None = None) -> int:
        """Mark events processed; returns how many were. With ``consumer``,
        only events that consumer holds are marked."""
        if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
            raise ValidationError("ids must be a collection of event ids", field="ids")
        wanted = sorted({values.integer(event_id, "ids") for event_id in ids})
        params: dict[str, Any] = {}
        if consumer is not None:
            params["consumer"] = _consumer(consumer)
        statement = outbox.mark_processed_statement(by_consumer=consumer is not None)
        marked = 0
        for start in range(0, len(wanted), IDS_PER_STATEMENT):
            chunk = {**params, "ids": wanted[start : start + IDS_PER_STATEMENT]}
            marked += len(await self._changed(statement, chunk))
        return marked

    async def prune(self, older_than: timedelta | datetime, *, limit: int = 1_000) -> int:
        """Delete up to ``limit`` events processed and created before
        ``older_than`` (an age or an instant), oldest first; returns how many."""
        return await self._prune_batch(retention.delete_events_statement(), older_than, limit)

    @reads
    async def prunable(self, older_than: timedelta | datetime) -> int:
        """How many events :meth:`prune` would delete, in all."""
        return await self._prunable(retention.prunable_events_statement(), older_than)


def _consumer(consumer: Any) -> str:
    return values.text(consumer, "consumer", min_length=1)
