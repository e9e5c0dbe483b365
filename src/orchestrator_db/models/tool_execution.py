"""The audit log of tool calls made while running a task."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator_db.models.base import Base, CreatedAt, JSONDoc, enum_type
from orchestrator_db.types import JSONDocument, UUIDString, new_id


class ToolExecutionStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"


#: Statuses that end an execution; ``finish`` accepts only these.
FINISHED_TOOL_STATUSES = frozenset(
    {ToolExecutionStatus.COMPLETED, ToolExecutionStatus.FAILED, ToolExecutionStatus.TIMEOUT}
)


class ToolExecution(CreatedAt, Base):
    """One tool invocation. ``created_at`` is when it started.

    Rows belong to their task and go with it (ON DELETE CASCADE): the column is
    NOT NULL, so the log cannot outlive the task. The seed's separate
    ``idx_tool_executions_task_fk`` duplicated ``idx_tool_executions_task``;
    the single ``(task_id, created_at)`` index serves the foreign key, the
    cascade and "a task's calls in order".
    """

    __tablename__ = "tool_executions"
    __table_args__ = (
        CheckConstraint("duration_ms >= 0", name="duration_not_negative"),
        Index("idx_tool_executions_task", "task_id", "created_at"),
        Index("idx_tool_executions_tool", "tool_name"),
        Index("idx_tool_executions_status", "status"),
        Index("idx_tool_executions_created", "created_at", "id"),
    )
    __repr_attrs__ = ("tool_name", "status")

    id: Mapped[str] = mapped_column(UUIDString(), primary_key=True, default=new_id)
    task_id: Mapped[str] = mapped_column(
        UUIDString(), ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
    )
    tool_name: Mapped[str] = mapped_column(Text, nullable=False)
    arguments: Mapped[JSONDoc] = mapped_column(JSONDocument(), nullable=False)
    output: Mapped[Any | None] = mapped_column(JSONDocument())
    status: Mapped[ToolExecutionStatus] = mapped_column(
        enum_type(ToolExecutionStatus, "status"),
        nullable=False,
        default=ToolExecutionStatus.PENDING,
        server_default=ToolExecutionStatus.PENDING.value,
    )
    error: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None] = mapped_column()
    duration_ms: Mapped[int | None] = mapped_column(Integer)
