"""Events: the outbox that tells the orchestrator what to do next."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator_db.models.base import Base, CreatedAt, enum_type, partial_index


class EventType(enum.StrEnum):
    TICKET_STAGE_COMPLETED = "ticket_stage_completed"
    WORKER_STOPPED = "worker_stopped"


class Event(CreatedAt, Base):
    """Something that happened and that a consumer must act on, once.

    The original design left ``ticket_id`` and ``worker_id`` loose. Here they
    are foreign keys that cascade: an event about a ticket or a worker that
    no longer exists cannot be acted on, and a consumer must never be handed
    one whose subject it cannot load. ``project_id`` is added (and cascades)
    so that every event, a worker's included, goes with its project, and so
    that consumers can be partitioned per project.

    Delivery: ``claim_unprocessed`` marks events claimed by a consumer for a
    lease (``claimed_by``, ``claim_expires_at``); ``mark_processed`` ends
    them. An event whose consumer died is claimable again when the lease
    ends. ``idx_events_unprocessed`` is partial: it holds only the events
    still to process, in order; ``idx_events_processed`` holds the others by
    age, for ``Database.prune``.
    """

    __tablename__ = "events"
    __table_args__ = (
        partial_index(
            "idx_events_unprocessed",
            "id",
            where="processed = false",
        ),
        partial_index(
            "idx_events_processed",
            "created_at",
            "id",
            where="processed = true",
        ),
        Index("idx_events_ticket", "ticket_id"),
        Index("idx_events_worker", "worker_id"),
        Index("idx_events_project", "project_id"),
    )
    __repr_attrs__ = ("event_type", "ticket_id", "worker_id", "processed")

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_type: Mapped[EventType] = mapped_column(
        enum_type(EventType, "event_type"), nullable=False
    )
    project_id: Mapped[str] = mapped_column(
        Text, ForeignKey("projects.repository_name", ondelete="CASCADE"), nullable=False
    )
    ticket_id: Mapped[str | None] = mapped_column(
        Text, ForeignKey("tickets.ticket_id", ondelete="CASCADE")
    )
    worker_id: Mapped[str | None] = mapped_column(
        Text, ForeignKey("workers.worker_id", ondelete="CASCADE")
    )
    stage: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    processed: Mapped[bool] = mapped_column(
        Boolean(create_constraint=True, name="processed"),
        nullable=False,
        default=False,
        server_default=text("false"),
    )
    claimed_by: Mapped[str | None] = mapped_column(Text)
    claim_expires_at: Mapped[datetime | None] = mapped_column()
