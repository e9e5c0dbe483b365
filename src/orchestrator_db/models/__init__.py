"""The orchestrator_db models, one module per aggregate."""

from orchestrator_db.models.base import NAMING_CONVENTION, Base, JSONDoc
from orchestrator_db.models.configuration import Configuration, SecretText, ValueType
from orchestrator_db.models.session import ClientSession, ConnectionType
from orchestrator_db.models.task import (
    FINISHED_TASK_STATUSES,
    TASK_TRANSITIONS,
    Task,
    TaskDependency,
    TaskStatus,
)
from orchestrator_db.models.tool_execution import (
    FINISHED_TOOL_STATUSES,
    ToolExecution,
    ToolExecutionStatus,
)
from orchestrator_db.models.workflow import Workflow, WorkflowStatus, WorkflowTask

__all__ = [
    "FINISHED_TASK_STATUSES",
    "FINISHED_TOOL_STATUSES",
    "NAMING_CONVENTION",
    "TASK_TRANSITIONS",
    "Base",
    "ClientSession",
    "Configuration",
    "ConnectionType",
    "JSONDoc",
    "SecretText",
    "Task",
    "TaskDependency",
    "TaskStatus",
    "ToolExecution",
    "ToolExecutionStatus",
    "ValueType",
    "Workflow",
    "WorkflowStatus",
    "WorkflowTask",
]
