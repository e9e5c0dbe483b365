"""Typed repositories, one module per aggregate, over a generic base."""

from orchestrator_db.repositories.base import Page, Plan, Repository, one_statement, reads
from orchestrator_db.repositories.configuration import ConfigurationRepository
from orchestrator_db.repositories.event import EventRepository
from orchestrator_db.repositories.project import ProjectRepository, WorkerTypeRepository
from orchestrator_db.repositories.session import SessionRepository
from orchestrator_db.repositories.task import QueueStats, TaskRepository
from orchestrator_db.repositories.ticket import CommentRepository, Stage, TicketRepository
from orchestrator_db.repositories.tool_execution import ToolExecutionRepository, ToolStats
from orchestrator_db.repositories.worker import WorkerRepository
from orchestrator_db.repositories.workflow import WorkflowRepository, WorkflowTaskRepository

__all__ = [
    "CommentRepository",
    "ConfigurationRepository",
    "EventRepository",
    "Page",
    "Plan",
    "ProjectRepository",
    "QueueStats",
    "Repository",
    "SessionRepository",
    "Stage",
    "TaskRepository",
    "TicketRepository",
    "ToolExecutionRepository",
    "ToolStats",
    "WorkerRepository",
    "WorkerTypeRepository",
    "WorkflowRepository",
    "WorkflowTaskRepository",
    "one_statement",
    "reads",
]
