"""Workflows and the tasks they group, in sequence."""

from __future__ import annotations

import enum

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator_db.models.base import Base, CreatedAt, JSONDoc, Timestamps, enum_type
from orchestrator_db.types import JSONDocument, UUIDString, new_id


class WorkflowStatus(enum.StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    ARCHIVED = "archived"
    PAUSED = "paused"


class Workflow(Timestamps, Base):
    """A named workflow definition."""

    __tablename__ = "workflows"
    __table_args__ = (
        Index("idx_workflows_status", "status"),
        Index("idx_workflows_created", "created_at", "id"),
        Index("idx_workflows_name", "name"),
    )
    __repr_attrs__ = ("name", "status")

    id: Mapped[str] = mapped_column(UUIDString(), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    definition: Mapped[JSONDoc] = mapped_column(JSONDocument(), nullable=False)
    status: Mapped[WorkflowStatus] = mapped_column(
        enum_type(WorkflowStatus, "status"),
        nullable=False,
        default=WorkflowStatus.DRAFT,
        server_default=WorkflowStatus.DRAFT.value,
    )


class WorkflowTask(CreatedAt, Base):
    """Membership of a task in a workflow, at a position (``sequence``).

    The primary key ``(workflow_id, task_id)`` already serves lookups by
    workflow, so there is no separate workflow index; ``idx_workflow_tasks_sequence``
    is ``(workflow_id, sequence)``, the order ``tasks_of`` reads in, and
    ``idx_workflow_tasks_task`` makes the cascade from ``tasks`` an index lookup.
    Several tasks may share a sequence number (they may run in parallel).
    """

    __tablename__ = "workflow_tasks"
    __table_args__ = (
        CheckConstraint("sequence >= 0", name="sequence_not_negative"),
        Index("idx_workflow_tasks_task", "task_id"),
        Index("idx_workflow_tasks_sequence", "workflow_id", "sequence"),
    )
    __repr_attrs__ = ("sequence",)

    workflow_id: Mapped[str] = mapped_column(
        UUIDString(), ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True
    )
    task_id: Mapped[str] = mapped_column(
        UUIDString(), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    sequence: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
