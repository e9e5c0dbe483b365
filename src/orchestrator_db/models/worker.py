"""Workers: processes that work tickets for a project, and their lifecycle."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator_db.models.base import Base, enum_type
from orchestrator_db.types import UTCDateTime, utc_now, utc_now_sql


class WorkerStatus(enum.StrEnum):
    SPAWNING = "spawning"
    ACTIVE = "active"
    IDLE = "idle"
    FINISHED = "finished"
    FAILED = "failed"


#: Target -> statuses it may be reached from.
WORKER_TRANSITIONS: dict[WorkerStatus, frozenset[WorkerStatus]] = {
    WorkerStatus.ACTIVE: frozenset({WorkerStatus.SPAWNING, WorkerStatus.IDLE}),
    WorkerStatus.IDLE: frozenset({WorkerStatus.ACTIVE}),
    WorkerStatus.FINISHED: frozenset({WorkerStatus.ACTIVE, WorkerStatus.IDLE}),
    WorkerStatus.FAILED: frozenset({WorkerStatus.SPAWNING, WorkerStatus.ACTIVE, WorkerStatus.IDLE}),
}
STOPPED_WORKER_STATUSES = frozenset({WorkerStatus.FINISHED, WorkerStatus.FAILED})


class Worker(Base):
    """A worker process of a project.

    ``worker_type`` is not a foreign key to ``worker_types``: a worker's
    record outlives a change of the project's worker types, and the
    repository checks the type exists when the worker is registered.
    ``idx_workers_activity`` serves ``stale()``, ``idx_workers_project``
    listings per project and status.
    """

    __tablename__ = "workers"
    __table_args__ = (
        Index("idx_workers_project", "project_id", "status"),
        Index("idx_workers_activity", "last_activity"),
    )
    __repr_attrs__ = ("project_id", "worker_type", "status")

    worker_id: Mapped[str] = mapped_column(Text, primary_key=True)
    project_id: Mapped[str] = mapped_column(
        Text, ForeignKey("projects.repository_name", ondelete="CASCADE"), nullable=False
    )
    worker_type: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[WorkerStatus] = mapped_column(
        enum_type(WorkerStatus, "status"),
        nullable=False,
        default=WorkerStatus.SPAWNING,
        server_default=text("'spawning'"),
    )
    pid: Mapped[int | None] = mapped_column(Integer)
    queue_name: Mapped[str] = mapped_column(Text, nullable=False)
    started_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utc_now, server_default=utc_now_sql()
    )
    last_activity: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utc_now, server_default=utc_now_sql()
    )
