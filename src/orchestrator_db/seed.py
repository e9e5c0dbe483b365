"""An idempotent demo data set for the ticket pipeline (``make seed``).

:func:`seed_demo` creates a project with three worker types and three
tickets, identified by fixed keys. What exists already is left as it is, so
running it twice changes nothing; it reports what it created.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator_db.database import Database
from orchestrator_db.models import Project, Ticket, WorkerType

DEMO_PROJECT = "acme/orchestrator"

_WORKER_TYPES = {
    "planner": "You turn a ticket into a plan of small, testable steps.",
    "coder": "You implement one step of the plan and keep the tests green.",
    "reviewer": "You review the change for correctness, clarity and tests.",
}

_TICKETS = {
    "DEMO-1": ("Add a health endpoint", ["planner", "coder", "reviewer"]),
    "DEMO-2": ("Fix the flaky retry test", ["coder", "reviewer"]),
    "DEMO-3": ("Refactor the scheduler", ["planner", "coder", "reviewer", "coder", "reviewer"]),
}


@dataclass
class SeedReport:
    created: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created)


async def seed_demo(db: Database) -> SeedReport:
    """Create the demo project, worker types and tickets that are missing."""
    report = SeedReport()
    async with db.unit_of_work() as uow:
        if await uow.projects.get_or_none(DEMO_PROJECT) is None:
            await uow.projects.add(
                Project(
                    repository_name=DEMO_PROJECT,
                    path="/srv/acme/orchestrator",
                    short_description="Demo project seeded by orchestrator_db",
                )
            )
            report.created.append(f"project {DEMO_PROJECT}")
        existing = {t.worker_type for t in await uow.worker_types.for_project(DEMO_PROJECT)}
        for name, prompt in _WORKER_TYPES.items():
            if name not in existing:
                await uow.worker_types.add(
                    WorkerType(project_id=DEMO_PROJECT, worker_type=name, system_prompt=prompt)
                )
                report.created.append(f"worker type {name}")
        for ticket_id, (title, plan) in _TICKETS.items():
            if await uow.tickets.get_or_none(ticket_id) is None:
                await uow.tickets.add(
                    Ticket(
                        ticket_id=ticket_id,
                        project_id=DEMO_PROJECT,
                        title=title,
                        execution_plan=plan,
                    )
                )
                report.created.append(f"ticket {ticket_id}")
        await uow.commit()
    return report
