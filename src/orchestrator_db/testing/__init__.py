"""Test helpers for code built on orchestrator_db (``pip install orchestrator_db[testing]``).

* factory-boy factories that *build* model instances (they never touch a
  database themselves; persist them through a unit of work:
  ``await uow.tasks.add(TaskFactory())`` or
  ``await uow.tasks.add_many(TaskFactory.build_batch(100))``);
* :func:`create` and :func:`create_batch`, which build with those factories,
  make the rows an object needs (a ticket's project and worker types) and
  add it all through a unit of work: ``await create(uow, Ticket)``;
* :func:`migrated_database`, an async context manager yielding a migrated
  :class:`~orchestrator_db.Database` on a fresh SQLite file, removed afterwards;
* a pytest plugin (:mod:`orchestrator_db.testing.plugin`) whose ``odb_*``
  fixtures give each test a migrated database of its own.

Only :func:`migrated_database` works without factory-boy.
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
        create,
        create_batch,
    )


def __getattr__(name: str) -> Any:
    """The factories (and create), imported when first asked for: ``migrated_database``
    needs no factory-boy."""
    if name.endswith("Factory") or name in ("create", "create_batch"):
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
    "create",
    "create_batch",
    "migrated_database",
]
