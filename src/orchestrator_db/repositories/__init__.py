"""Typed repositories, one module per aggregate, over a generic base."""

from orchestrator_db.repositories.base import Page, Repository
from orchestrator_db.repositories.configuration import ConfigurationRepository
from orchestrator_db.repositories.session import SessionRepository
from orchestrator_db.repositories.task import TaskRepository
from orchestrator_db.repositories.tool_execution import ToolExecutionRepository, ToolStats
from orchestrator_db.repositories.workflow import WorkflowRepository, WorkflowTaskRepository

__all__ = [
    "ConfigurationRepository",
    "Page",
    "Repository",
    "SessionRepository",
    "TaskRepository",
    "ToolExecutionRepository",
    "ToolStats",
    "WorkflowRepository",
    "WorkflowTaskRepository",
]
