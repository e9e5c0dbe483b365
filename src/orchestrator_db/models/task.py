"""Tasks: the unit of work an orchestrator runs for an agent."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator_db.models.base import Base, JSONDoc, Timestamps, enum_type
from orchestrator_db.types import JSONDocument, UUIDString, new_id


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: The lifecycle ``TaskRepository.update_status`` enforces: target -> allowed sources.
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.RUNNING: frozenset({TaskStatus.PENDING}),
    TaskStatus.COMPLETED: frozenset({TaskStatus.RUNNING}),
    TaskStatus.FAILED: frozenset({TaskStatus.RUNNING}),
    TaskStatus.CANCELLED: frozenset({TaskStatus.PENDING, TaskStatus.RUNNING}),
}


class Task(Timestamps, Base):
    """A task of some ``task_type`` (code, research, review, ...).

    ``idx_tasks_created`` covers ``(created_at, id)`` rather than ``created_at``
    alone: it serves date-range queries and is the keyset order of
    ``TaskRepository.page``, so a deep page is an index seek.
    """

    __tablename__ = "tasks"
    __table_args__ = (
        Index("idx_tasks_status", "status"),
        Index("idx_tasks_type", "task_type"),
        Index("idx_tasks_created", "created_at", "id"),
        Index("idx_tasks_workspace", "workspace_path"),
    )
    __repr_attrs__ = ("title", "task_type", "status")

    id: Mapped[str] = mapped_column(UUIDString(), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    task_type: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[TaskStatus] = mapped_column(
        enum_type(TaskStatus, "status"),
        nullable=False,
        default=TaskStatus.PENDING,
        server_default=TaskStatus.PENDING.value,
    )
    config: Mapped[JSONDoc] = mapped_column(JSONDocument(), nullable=False)
    metadata_: Mapped[JSONDoc | None] = mapped_column("metadata", JSONDocument())
    workspace_path: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
