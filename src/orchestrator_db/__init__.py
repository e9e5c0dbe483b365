"""orchestrator_db: the persistence layer of an AI-agent orchestrator.

Quick start::

    from orchestrator_db import Database, Task

    db = Database("sqlite+aiosqlite:///./orchestrator.db")
    await db.migrate()
    async with db.unit_of_work() as uow:
        await uow.tasks.add(Task(title="Build", task_type="code", config={}))
        await uow.commit()
    await db.close()
"""

from orchestrator_db._execution.replicas import ReplicaStatus
from orchestrator_db.database import Database, DatabaseOptions
from orchestrator_db.health import HealthReport, Metrics, PoolStatus
from orchestrator_db.models import (
    ClientSession,
    Comment,
    Configuration,
    ConnectionType,
    DependencyType,
    Event,
    EventType,
    Project,
    Task,
    TaskDependency,
    TaskSource,
    TaskStatus,
    Ticket,
    ToolExecution,
    ToolExecutionStatus,
    ValueType,
    Worker,
    WorkerStatus,
    WorkerType,
    Workflow,
    WorkflowStatus,
    WorkflowTask,
)
from orchestrator_db.queue_worker import QueueWorker
from orchestrator_db.repositories import Page, QueueStats, Repository, Stage, ToolStats
from orchestrator_db.settings import DatabaseSettings, SQLiteExecution
from orchestrator_db.unit_of_work import AbstractUnitOfWork, UnitOfWork

__version__ = "0.1.0"

__all__ = [
    "AbstractUnitOfWork",
    "ClientSession",
    "Comment",
    "Configuration",
    "ConnectionType",
    "Database",
    "DatabaseOptions",
    "DatabaseSettings",
    "DependencyType",
    "Event",
    "EventType",
    "HealthReport",
    "Metrics",
    "Page",
    "PoolStatus",
    "Project",
    "QueueStats",
    "QueueWorker",
    "ReplicaStatus",
    "Repository",
    "SQLiteExecution",
    "Stage",
    "Task",
    "TaskDependency",
    "TaskSource",
    "TaskStatus",
    "Ticket",
    "ToolExecution",
    "ToolExecutionStatus",
    "ToolStats",
    "UnitOfWork",
    "ValueType",
    "Worker",
    "WorkerStatus",
    "WorkerType",
    "Workflow",
    "WorkflowStatus",
    "WorkflowTask",
]
