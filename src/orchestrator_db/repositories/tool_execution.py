"""The tool-call audit log: start, finish, and per-tool statistics."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select

from orchestrator_db import values
from orchestrator_db.errors import InvalidTransitionError, ValidationError
from orchestrator_db.models.base import JSONDoc, check_values
from orchestrator_db.models.tool_execution import (
    FINISHED_TOOL_STATUSES,
    ToolExecution,
    ToolExecutionStatus,
)
from orchestrator_db.repositories.base import Repository, reads
from orchestrator_db.types import sorted_as_text, utc_now


@dataclass(frozen=True)
class ToolStats:
    """Aggregates of one tool's executions. Durations are of finished calls."""

    tool_name: str
    count: int
    failures: int
    mean_duration_ms: float | None
    p95_duration_ms: int | None


class ToolExecutionRepository(Repository[ToolExecution]):
    model_type = ToolExecution
    protected_fields = frozenset({"status", "completed_at", "duration_ms"})

    async def start(self, task_id: str, tool_name: str, arguments: JSONDoc) -> ToolExecution:
        """Record that a task started calling a tool; the row is ``running``."""
        return await self.add(
            ToolExecution(
                task_id=task_id,
                tool_name=tool_name,
                arguments=arguments,
                status=ToolExecutionStatus.RUNNING,
            )
        )

    async def finish(
        self,
        execution_id: str,
        status: ToolExecutionStatus | str,
        *,
        output: Any = None,
        error: str | None = None,
    ) -> ToolExecution:
        """Close an execution: completed, failed or timeout.

        Sets ``completed_at`` and ``duration_ms`` (from ``created_at``). An
        execution finishes once; finishing it again raises
        :class:`InvalidTransitionError`.
        """
        target = values.member(ToolExecutionStatus, status, "status")
        if target not in FINISHED_TOOL_STATUSES:
            raise ValidationError(
                f"finish() takes one of {', '.join(sorted(FINISHED_TOOL_STATUSES))}, "
                f"got {status!r}",
                field="status",
            )
        changes = check_values(self.model_type, {"output": output, "error": error})
        output, error = changes.get("output", output), changes.get("error", error)
        execution = await self.get(execution_id, for_update=True)
        if execution.status in FINISHED_TOOL_STATUSES:
            raise InvalidTransitionError(
                self.entity, execution_id, execution.status.value, target.value
            )
        now = utc_now()
        execution.status = target
        execution.output = output
        execution.error = error
        execution.completed_at = now
        execution.duration_ms = max(0, round((now - execution.created_at).total_seconds() * 1000))
        await self._flush_and_refresh(execution, execution_id)
        return execution

    @reads
    async def stats_by_tool(self, *, since: datetime | None = None) -> builtins.list[ToolStats]:
        """Per tool: calls, failures (failed or timeout), mean and p95 duration.

        The 95th percentile uses the nearest-rank method, computed in SQL with
        window functions so it works the same on SQLite and PostgreSQL.
        """
        te = ToolExecution
        scope = [te.created_at >= values.instant(since, "since")] if since is not None else []
        failed = [ToolExecutionStatus.FAILED, ToolExecutionStatus.TIMEOUT]
        totals = (
            select(
                te.tool_name.label("tool_name"),
                func.count().label("calls"),
                func.sum(case((te.status.in_(failed), 1), else_=0)).label("failures"),
                func.avg(te.duration_ms).label("mean_ms"),
            )
            .where(*scope)
            .group_by(te.tool_name)
            .subquery()
        )
        ranked = (
            select(
                te.tool_name.label("tool_name"),
                te.duration_ms.label("duration_ms"),
                func.row_number()
                .over(partition_by=te.tool_name, order_by=te.duration_ms)
                .label("position"),
                func.count().over(partition_by=te.tool_name).label("finished"),
            )
            .where(te.duration_ms.is_not(None), *scope)
            .subquery()
        )
        # Nearest rank: the ceil(0.95 * n)-th smallest duration.
        p95 = (
            select(ranked.c.tool_name, ranked.c.duration_ms.label("p95_ms"))
            .where(ranked.c.position == (ranked.c.finished * 95 + 99) // 100)
            .subquery()
        )
        statement = (
            select(totals, p95.c.p95_ms)
            .outerjoin(p95, p95.c.tool_name == totals.c.tool_name)
            .order_by(sorted_as_text(totals.c.tool_name))
        )
        rows = (await self._ex.execute(statement, entity=self.entity)).all()
        return [
            ToolStats(
                tool_name=row.tool_name,
                count=int(row.calls),
                failures=int(row.failures or 0),
                mean_duration_ms=float(row.mean_ms) if row.mean_ms is not None else None,
                p95_duration_ms=int(row.p95_ms) if row.p95_ms is not None else None,
            )
            for row in rows
        ]
