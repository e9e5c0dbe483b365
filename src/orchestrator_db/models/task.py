"""Tasks: the unit of work an orchestrator runs for an agent."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CheckConstraint, Double, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator_db import values
from orchestrator_db.models.base import (
    Base,
    CreatedAt,
    JSONDoc,
    Timestamps,
    enum_type,
    partial_index,
)
from orchestrator_db.models.priority import initial_priority, initial_reprioritize_at
from orchestrator_db.types import JSONDocument, JSONValue, UUIDString, new_id


class TaskStatus(enum.StrEnum):
    """Where a task is in its life.

    ``pending`` tasks are stored but not queued (``add``); ``submit`` queues
    them as ``blocked`` (waiting for prerequisites) or ``ready`` (claimable);
    a claim makes them ``running`` under a lease; they end ``completed``,
    ``failed`` or ``cancelled``.
    """

    PENDING = "pending"
    BLOCKED = "blocked"
    READY = "ready"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskSource(enum.StrEnum):
    """Who asked for a task: a person, or an agent at some stage of its work.
    Part of the calculated priority (people first)."""

    HUMAN = "human"
    AGENT_REQUIREMENTS = "agent_requirements"
    AGENT_PLANNER = "agent_planner"
    AGENT_IMPLEMENTATION = "agent_implementation"


class DependencyType(enum.StrEnum):
    """How a task's prerequisites relate, kept by the package.

    ``parallel`` when the task waits for two or more prerequisites none of
    which depends on another (directly or through others): they can run at
    the same time. ``sequential`` otherwise (no prerequisite, one, or a
    chain). Readiness is the same for both: every prerequisite completed.
    """

    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"


#: Statuses a task never leaves.
FINISHED_TASK_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})

#: The manual lifecycle ``TaskRepository.update_status`` enforces (target ->
#: allowed sources). Queue moves (submit, claim, retry) have their own methods.
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.RUNNING: frozenset({TaskStatus.PENDING}),
    TaskStatus.COMPLETED: frozenset({TaskStatus.RUNNING}),
    TaskStatus.FAILED: frozenset({TaskStatus.RUNNING}),
    TaskStatus.CANCELLED: frozenset({TaskStatus.PENDING, TaskStatus.RUNNING}),
}

DEFAULT_PRIORITY = 5
DEFAULT_MAX_RETRIES = 3
#: Back-off before retry n (1-based) is ``RETRY_BASE_DELAY * 2 ** (n - 1)``,
#: capped at ``RETRY_MAX_DELAY``.
RETRY_BASE_DELAY = timedelta(seconds=2)
RETRY_MAX_DELAY = timedelta(minutes=10)
#: The error of an attempt whose lease ran out.
TIMED_OUT = "timed out"


def backoff(attempt: int) -> timedelta:
    """Delay before retry ``attempt`` (1-based): exponential, capped."""
    values.count(attempt, "attempt")
    if attempt > 20:  # far past the cap; keeps the shift small
        return RETRY_MAX_DELAY
    delay: timedelta = RETRY_BASE_DELAY * (1 << max(attempt - 1, 0))
    return min(delay, RETRY_MAX_DELAY)


#: The longest ``summary``.
SUMMARY_LENGTH = 140
_READY = "status = 'ready'"
#: The finished statuses in the order of ``idx_tasks_finished``'s predicate:
#: SQLite uses a partial index only for a query that repeats its IN list as is.
FINISHED_IN_INDEX_ORDER = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
_FINISHED = "status IN ({})".format(", ".join(f"'{s.value}'" for s in FINISHED_IN_INDEX_ORDER))


class Task(Timestamps, Base):
    """A task of some ``task_type`` (code, research, review, ...).

    ``idx_tasks_created`` covers ``(created_at, id)`` rather than ``created_at``
    alone: it serves date-range queries and is the keyset order of
    ``TaskRepository.page``, so a deep page is an index seek.

    Queue indexes are partial, so they hold only the rows the queue looks for
    and stay small however many tasks have finished: ``idx_tasks_claim`` is
    the claim order of ready tasks (the claim reads its first entries),
    ``idx_tasks_claim_type`` the same per task type, ``idx_tasks_lease`` the
    running tasks by lease expiry (for ``requeue_expired``).
    ``idx_tasks_claim_agent`` serves claims by agent type.

    Seed 003 names some columns differently; one column holds each:
    ``input_data`` is ``config``, ``result_data`` is ``result``,
    ``error_message`` is ``error``, ``submitted_at`` is ``created_at``,
    ``last_updated_at`` is ``updated_at``, ``max_execution_timeout_seconds``
    is ``timeout_seconds`` (optional here: no timeout when unset), and the
    ``dependencies`` JSON list is the ``task_dependencies`` table.

    Kept by the package, not set by hand: ``dependency_depth`` (0 without
    prerequisites, else 1 + the deepest prerequisite), ``dependency_type``
    (see :class:`DependencyType`), ``blocking_count`` (the unfinished tasks
    that wait for this one, transitively, through unfinished tasks),
    ``calculated_priority`` (the claim key; see
    :mod:`orchestrator_db.models.priority`) and ``reprioritize_at`` (when
    the deadline's urgency next needs a recomputation).
    """

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint("priority BETWEEN 0 AND 10", name="priority_range"),
        CheckConstraint("retry_count >= 0", name="retry_count_not_negative"),
        CheckConstraint("max_retries >= 0", name="max_retries_not_negative"),
        CheckConstraint("timeout_seconds > 0", name="timeout_positive"),
        CheckConstraint(f"length(summary) <= {SUMMARY_LENGTH}", name="summary_length"),
        CheckConstraint("dependency_depth >= 0", name="dependency_depth_not_negative"),
        CheckConstraint("blocking_count >= 0", name="blocking_count_not_negative"),
        CheckConstraint("estimated_duration_seconds > 0", name="estimated_duration_positive"),
        # Equality on the status or the type, then keyset order: a filtered
        # list() or page() is an index range scan, never a sort.
        Index("idx_tasks_status", "status", "created_at", "id"),
        Index("idx_tasks_type", "task_type", "created_at", "id"),
        Index("idx_tasks_created", "created_at", "id"),
        Index("idx_tasks_workspace", "workspace_path"),
        partial_index(
            "idx_tasks_lease",
            "lease_expires_at",
            where="status = 'running'",
        ),
        partial_index(
            "idx_tasks_parent",
            "parent_task_id",
            where="parent_task_id IS NOT NULL",
        ),
        partial_index(
            "idx_tasks_session",
            "session_id",
            where="session_id IS NOT NULL",
        ),
        partial_index(
            "idx_tasks_deadline",
            "deadline",
            where="deadline IS NOT NULL",
        ),
        partial_index(
            "idx_tasks_feature_branch",
            "feature_branch",
            where="feature_branch IS NOT NULL",
        ),
        partial_index(
            "idx_tasks_agent_type",
            "agent_type",
            where="agent_type IS NOT NULL",
        ),
        partial_index(
            "idx_tasks_reprioritize",
            "reprioritize_at",
            where="reprioritize_at IS NOT NULL",
        ),
        partial_index(
            "idx_tasks_finished",
            "updated_at",
            "id",
            where=_FINISHED,
        ),
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
    # The work queue (revision 0002).
    priority: Mapped[int] = mapped_column(
        Integer, nullable=False, default=DEFAULT_PRIORITY, server_default=text("5")
    )
    retry_count: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    max_retries: Mapped[int] = mapped_column(
        Integer, nullable=False, default=DEFAULT_MAX_RETRIES, server_default=text("3")
    )
    timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    deadline: Mapped[datetime | None] = mapped_column()
    parent_task_id: Mapped[str | None] = mapped_column(
        UUIDString(), ForeignKey("tasks.id", ondelete="SET NULL")
    )
    session_id: Mapped[str | None] = mapped_column(
        UUIDString(), ForeignKey("sessions.id", ondelete="SET NULL")
    )
    worker_id: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    run_after: Mapped[datetime | None] = mapped_column()
    result: Mapped[Any] = mapped_column(JSONValue(), nullable=True)
    # The agent task model of seed 003 (revision 0004).
    summary: Mapped[str | None] = mapped_column(String(SUMMARY_LENGTH))
    agent_type: Mapped[str | None] = mapped_column(Text)
    source: Mapped[TaskSource] = mapped_column(
        enum_type(TaskSource, "source"),
        nullable=False,
        default=TaskSource.HUMAN,
        server_default=TaskSource.HUMAN.value,
    )
    created_by: Mapped[str | None] = mapped_column(Text)
    estimated_duration_seconds: Mapped[int | None] = mapped_column(Integer)
    feature_branch: Mapped[str | None] = mapped_column(Text)
    task_branch: Mapped[str | None] = mapped_column(Text)
    worktree_path: Mapped[str | None] = mapped_column(Text)
    dependency_type: Mapped[DependencyType] = mapped_column(
        enum_type(DependencyType, "dependency_type"),
        nullable=False,
        default=DependencyType.SEQUENTIAL,
        server_default=DependencyType.SEQUENTIAL.value,
    )
    dependency_depth: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    blocking_count: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    # Last: their defaults read the values above (already checked).
    calculated_priority: Mapped[float] = mapped_column(
        Double(), nullable=False, default=initial_priority, server_default=text("0")
    )
    reprioritize_at: Mapped[datetime | None] = mapped_column(default=initial_reprioritize_at)


# Declared after the class: a DESC column must be the column object itself,
# which autogenerate compares like any index (a textual "priority DESC" is an
# expression index, which it cannot reflect on SQLite).
partial_index(
    "idx_tasks_claim",
    Task.calculated_priority.desc(),
    Task.created_at,
    Task.id,
    where=_READY,
)
partial_index(
    "idx_tasks_claim_type",
    Task.task_type,
    Task.calculated_priority.desc(),
    Task.created_at,
    Task.id,
    where=_READY,
)
partial_index(
    "idx_tasks_claim_agent",
    Task.agent_type,
    Task.calculated_priority.desc(),
    Task.created_at,
    Task.id,
    where=_READY,
)


class TaskDependency(CreatedAt, Base):
    """``task_id`` may run only once ``depends_on_id`` has completed.

    Both sides cascade: deleting either task removes the edge. The primary key
    ``(task_id, depends_on_id)`` serves "what does this task wait for";
    ``idx_task_dependencies_depends_on`` serves "who waits for this task", the
    question every completion asks.
    """

    __tablename__ = "task_dependencies"
    __table_args__ = (
        CheckConstraint("task_id <> depends_on_id", name="no_self_dependency"),
        Index("idx_task_dependencies_depends_on", "depends_on_id"),
    )

    task_id: Mapped[str] = mapped_column(
        UUIDString(), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    depends_on_id: Mapped[str] = mapped_column(
        UUIDString(), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
