"""The orchestrator_db models, one module per aggregate."""

from orchestrator_db.models.base import NAMING_CONVENTION, Base, JSONDoc
from orchestrator_db.models.configuration import Configuration, SecretText, ValueType
from orchestrator_db.models.event import Event, EventType
from orchestrator_db.models.project import Project, WorkerType
from orchestrator_db.models.session import ClientSession, ConnectionType
from orchestrator_db.models.task import (
    FINISHED_TASK_STATUSES,
    TASK_TRANSITIONS,
    DependencyType,
    Task,
    TaskDependency,
    TaskSource,
    TaskStatus,
)
from orchestrator_db.models.ticket import PLANNED, Comment, Ticket
from orchestrator_db.models.tool_execution import (
    FINISHED_TOOL_STATUSES,
    ToolExecution,
    ToolExecutionStatus,
)
from orchestrator_db.models.worker import (
    STOPPED_WORKER_STATUSES,
    WORKER_TRANSITIONS,
    Worker,
    WorkerStatus,
)
from orchestrator_db.models.workflow import Workflow, WorkflowStatus, WorkflowTask

__all__ = [
    "FINISHED_TASK_STATUSES",
    "FINISHED_TOOL_STATUSES",
    "NAMING_CONVENTION",
    "PLANNED",
    "STOPPED_WORKER_STATUSES",
    "TASK_TRANSITIONS",
    "WORKER_TRANSITIONS",
    "Base",
    "ClientSession",
    "Comment",
    "Configuration",
    "ConnectionType",
    "DependencyType",
    "Event",
    "EventType",
    "JSONDoc",
    "Project",
    "SecretText",
    "Task",
    "TaskDependency",
    "TaskSource",
    "TaskStatus",
    "Ticket",
    "ToolExecution",
    "ToolExecutionStatus",
    "ValueType",
    "Worker",
    "WorkerStatus",
    "WorkerType",
    "Workflow",
    "WorkflowStatus",
    "WorkflowTask",
]
