"""Tickets through their execution plan, and the comments on them."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from orchestrator_db import values
from orchestrator_db.errors import InvalidTransitionError, NotFoundError, ValidationError
from orchestrator_db.models.event import EventType
from orchestrator_db.models.ticket import PLANNED, Comment, Ticket
from orchestrator_db.repositories.base import Repository, one_statement, reads
from orchestrator_db.repositories.event import EventRepository
from orchestrator_db.repositories.project import ProjectRepository, WorkerTypeRepository
from orchestrator_db.types import utc_now


@dataclass(frozen=True)
class Stage:
    """A position in a ticket's plan: ``number`` is 1-based."""

    number: int
    worker_type: str
    of: int


class TicketRepository(Repository[Ticket]):
    model_type = Ticket
    protected_fields = frozenset({"last_completed_stage", "stages_completed", "closed_at"})

    async def add(self, obj: Ticket) -> Ticket:
        """Add a ticket whose plan names only worker types of its project."""
        self._check_instance(obj)
        await self._check_plan(obj.project_id, obj.execution_plan)
        return await super().add(obj)

    async def add_many(self, objs: Iterable[Ticket]) -> builtins.list[Ticket]:
        items = [self._check_instance(obj) for obj in objs]
        for item in items:
            await self._check_plan(item.project_id, item.execution_plan)
        return await super().add_many(items)

    @one_statement(
        when=lambda repository, dialect, key, **changes: (
            "execution_plan" not in changes and repository._alone(changes)
        )
    )
    async def update(self, key: Any, **changes: Any) -> Ticket:
        """Change a ticket; a new plan is checked against the project's worker
        types and cannot drop stages already completed."""
        if "execution_plan" in changes:
            ticket = await self.get(key)
            plan = changes["execution_plan"]
            await self._check_plan(changes.get("project_id", ticket.project_id), plan)
            done = ticket.execution_plan[: ticket.stages_completed]
            if list(plan[: ticket.stages_completed]) != done:
                raise ValidationError(
                    f"the new plan must keep the {ticket.stages_completed} completed stage(s) "
                    f"{done}",
                    field="execution_plan",
                )
        return await super().update(key, **changes)

    async def advance(self, ticket_id: str, stage: str, *, worker_id: str | None = None) -> Ticket:
        """Record that ``stage`` (a worker type) completed on the ticket.

        Only the next stage of the plan is accepted (anything else raises
        :class:`InvalidTransitionError`); a ``ticket_stage_completed`` event
        is emitted in the same transaction; completing the last stage closes
        the ticket.
        """
        values.text(stage, "stage")
        ticket = await self.get(ticket_id, for_update=True)
        following = self._next(ticket)
        if following is None:
            raise InvalidTransitionError(self.entity, ticket_id, "closed", stage)
        if stage != following:
            raise InvalidTransitionError(self.entity, ticket_id, ticket.last_completed_stage, stage)
        now = utc_now()
        ticket.stages_completed += 1
        ticket.last_completed_stage = stage
        if ticket.stages_completed == len(ticket.execution_plan):
            ticket.closed_at = now
        await self._flush_and_refresh(ticket, ticket_id)
        await self._sibling(EventRepository).emit(
            EventType.TICKET_STAGE_COMPLETED,
            project_id=ticket.project_id,
            ticket_id=ticket.ticket_id,
            worker_id=worker_id,
            stage=stage,
        )
        return ticket

    @reads
    async def current_stage(self, ticket_id: str) -> str:
        """The last completed stage (a worker type), ``"Planned"`` before any."""
        return (await self.get(ticket_id)).last_completed_stage

    @reads
    async def next_worker_type(self, ticket_id: str) -> str | None:
        """The worker type that works the ticket next; ``None`` once closed."""
        return self._next(await self.get(ticket_id))

    @reads
    async def next_stage(self, ticket_id: str) -> Stage | None:
        """The stage to work next, with its number; ``None`` once closed."""
        ticket = await self.get(ticket_id)
        following = self._next(ticket)
        if following is None:
            return None
        return Stage(ticket.stages_completed + 1, following, len(ticket.execution_plan))

    @reads
    async def open_tickets(self, project_id: str) -> builtins.list[Ticket]:
        """Tickets of a project not closed yet, oldest first."""
        return await self.list(project_id=project_id, closed_at=None)

    @staticmethod
    def _next(ticket: Ticket) -> str | None:
        if ticket.closed_at is not None or ticket.stages_completed >= len(ticket.execution_plan):
            return None
        return ticket.execution_plan[ticket.stages_completed]

    async def _check_plan(self, project_id: str, plan: Any) -> None:
        if not (isinstance(plan, list) and plan and all(isinstance(s, str) and s for s in plan)):
            raise ValidationError(
                "execution_plan must be a non-empty list of worker type names",
                field="execution_plan",
            )
        values.json_value(plan, "execution_plan")
        if project_id is None:
            raise ValidationError("a ticket needs a project_id", field="project_id")
        if await self._sibling(ProjectRepository).get_or_none(project_id) is None:
            raise NotFoundError("Project", project_id)
        unknown = await self._sibling(WorkerTypeRepository).missing(project_id, plan)
        if unknown:
            raise ValidationError(
                f"the plan names worker types project {project_id!r} does not define: "
                f"{', '.join(unknown)}",
                field="execution_plan",
            )


class CommentRepository(Repository[Comment]):
    model_type = Comment

    @reads
    async def for_ticket(
        self, ticket_id: str, *, stage_number: int | None = None
    ) -> builtins.list[Comment]:
        """A ticket's comments in the order they were written; with
        ``stage_number``, those of that stage only."""
        ticket_id = self._value(Comment.ticket_id, ticket_id, "ticket_id")
        statement = select(Comment).where(Comment.ticket_id == ticket_id)
        if stage_number is not None:
            stage_number = values.integer(stage_number, "stage_number")
            statement = statement.where(Comment.stage_number == stage_number)
        statement = statement.order_by(Comment.stage_number, Comment.id)
        return await self._ex.scalars(statement, entity=self.entity)

    @reads
    async def by_stage(self, ticket_id: str) -> dict[int | None, builtins.list[Comment]]:
        """A ticket's comments grouped by stage number, each group in order."""
        grouped: dict[int | None, builtins.list[Comment]] = {}
        for comment in await self.for_ticket(ticket_id):
            grouped.setdefault(comment.stage_number, []).append(comment)
        return grouped


__all__ = ["PLANNED", "CommentRepository", "Stage", "TicketRepository"]
