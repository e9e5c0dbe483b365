"""Test helpers for code built on orchestrator_db (``pip install orchestrator_db[testing]``).

* factory-boy factories that *build* model instances (they never touch a
  database themselves; persist them through a unit of work:
  ``await uow.tasks.add(TaskFactory())`` or
  ``await uow.tasks.add_many(TaskFactory.build_batch(100))``);
* :func:`migrated_database`, an async context manager yielding a migrated
  :class:`~orchestrator_db.Database` on a fresh SQLite file, removed afterwards.
"""

from typing import TYPE_CHECKING, Any

from orchestrator_db.testing.database import migrated_database

if TYPE_CHECKING:
    from orchestrator_db.testing.factories import (
        ClientSessionFactory,
        CommentFactory,
        ConfigurationFactory,
        EventFactory,
        ProjectFactory,
        TaskFactory,
        TicketFactory,
        ToolExecutionFactory,
        WorkerFactory,
        WorkerTypeFactory,
        WorkflowFactory,
        WorkflowTaskFactory,
    )


def __getattr__(name: str) -> Any:
    """The factories, imported when first asked for: ``migrated_database``
    needs no factory-boy."""
    if name.endswith("Factory"):
        from orchestrator_db.testing import factories

        return getattr(factories, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ClientSessionFactory",
    "CommentFactory",
    "ConfigurationFactory",
    "EventFactory",
    "ProjectFactory",
    "TaskFactory",
    "TicketFactory",
    "ToolExecutionFactory",
    "WorkerFactory",
    "WorkerTypeFactory",
    "WorkflowFactory",
    "WorkflowTaskFactory",
    "migrated_database",
]
