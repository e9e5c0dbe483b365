"""Tickets moving through their execution plan, and the comments on them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator_db.models.base import Base, CreatedAt, Timestamps
from orchestrator_db.types import JSONDocument

#: ``last_completed_stage`` of a ticket no stage has completed yet.
PLANNED = "Planned"


class Ticket(Timestamps, Base):
    """A unit of work of a project, executed stage by stage.

    ``execution_plan`` lists the worker types that work the ticket, in order.
    ``stages_completed`` counts the stages done, so a plan may name the same
    worker type twice (coder, reviewer, coder); ``last_completed_stage`` is
    the worker type of the last one (``"Planned"`` before any), as in the
    original design. ``closed_at`` is set when the last stage completes.
    """

    __tablename__ = "tickets"
    __table_args__ = (
        CheckConstraint("stages_completed >= 0", name="stages_completed_not_negative"),
        Index("idx_tickets_project", "project_id", "closed_at"),
    )
    __repr_attrs__ = ("project_id", "title", "last_completed_stage")

    ticket_id: Mapped[str] = mapped_column(Text, primary_key=True)
    project_id: Mapped[str] = mapped_column(
        Text, ForeignKey("projects.repository_name", ondelete="CASCADE"), nullable=False
    )
    title: Mapped[str] = mapped_column(Text, nullable=False)
    execution_plan: Mapped[list[str]] = mapped_column(JSONDocument(), nullable=False)
    last_completed_stage: Mapped[str] = mapped_column(
        Text, nullable=False, default=PLANNED, server_default=text("'Planned'")
    )
    stages_completed: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    closed_at: Mapped[datetime | None] = mapped_column()


class Comment(CreatedAt, Base):
    """A message on a ticket, from a worker (or a person) at some stage.

    ``idx_comments_ticket`` is ``(ticket_id, stage_number, id)``: the
    conversation of a ticket, stage by stage, in the order it was written.
    """

    __tablename__ = "comments"
    __table_args__ = (Index("idx_comments_ticket", "ticket_id", "stage_number", "id"),)
    __repr_attrs__ = ("ticket_id", "worker_type", "stage_number")

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(
        Text, ForeignKey("tickets.ticket_id", ondelete="CASCADE"), nullable=False
    )
    worker_type: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(Text)
    stage_number: Mapped[int | None] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text, nullable=False)
