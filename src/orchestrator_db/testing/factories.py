"""factory-boy factories for every model. They build; units of work persist."""

from __future__ import annotations

import factory

from orchestrator_db.models import (
    ClientSession,
    Comment,
    Configuration,
    ConnectionType,
    Event,
    EventType,
    Project,
    Task,
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
from orchestrator_db.types import new_id


class TaskFactory(factory.Factory):  # type: ignore[misc]
    class Meta:
        model = Task

    id = factory.LazyFunction(new_id)
    title = factory.Sequence(lambda n: f"task {n}")
    description = factory.Faker("sentence")
    task_type = factory.Iterator(["code", "research", "review"])
    status = TaskStatus.PENDING
    config = factory.LazyFunction(lambda: {"lang": "python"})
    metadata_ = None
    workspace_path = factory.Sequence(lambda n: f"/work/{n}")


class WorkflowFactory(factory.Factory):  # type: ignore[misc]
    class Meta:
        model = Workflow

    id = factory.LazyFunction(new_id)
    name = factory.Sequence(lambda n: f"workflow {n}")
    description = None
    definition = factory.LazyFunction(lambda: {"steps": []})
    status = WorkflowStatus.DRAFT


class WorkflowTaskFactory(factory.Factory):  # type: ignore[misc]
    """Needs ``workflow_id`` and ``task_id`` of persisted rows."""

    class Meta:
        model = WorkflowTask

    sequence = factory.Sequence(int)


class ToolExecutionFactory(factory.Factory):  # type: ignore[misc]
    """Needs ``task_id`` of a persisted task."""

    class Meta:
        model = ToolExecution

    id = factory.LazyFunction(new_id)
    tool_name = factory.Iterator(["shell", "http", "search"])
    arguments = factory.LazyFunction(lambda: {"cmd": "ls"})
    status = ToolExecutionStatus.RUNNING


class ClientSessionFactory(factory.Factory):  # type: ignore[misc]
    class Meta:
        model = ClientSession

    id = factory.LazyFunction(new_id)
    client_id = factory.Sequence(lambda n: f"client-{n}")
    user_id = None
    connection_type = ConnectionType.WEBSOCKET
    is_active = True
    metadata_ = None


class ConfigurationFactory(factory.Factory):  # type: ignore[misc]
    """A string entry; use ``uow.configurations.set`` for typed values."""

    class Meta:
        model = Configuration

    key = factory.Sequence(lambda n: f"setting.{n}")
    value = factory.Sequence(lambda n: f"value {n}")
    value_type = ValueType.STRING
    description = None
    is_secret = False


class ProjectFactory(factory.Factory):  # type: ignore[misc]
    class Meta:
        model = Project

    repository_name = factory.Sequence(lambda n: f"acme/repo-{n}")
    path = factory.LazyAttribute(lambda o: f"/srv/{o.repository_name}")
    short_description = None


class WorkerTypeFactory(factory.Factory):  # type: ignore[misc]
    """Needs ``project_id`` of a stored project."""

    class Meta:
        model = WorkerType

    worker_type = factory.Iterator(["planner", "coder", "reviewer"])
    system_prompt = factory.LazyAttribute(lambda o: f"You are the {o.worker_type}.")


class TicketFactory(factory.Factory):  # type: ignore[misc]
    """Needs ``project_id`` and an ``execution_plan`` of its worker types."""

    class Meta:
        model = Ticket

    ticket_id = factory.Sequence(lambda n: f"T-{n}")
    title = factory.Sequence(lambda n: f"ticket {n}")
    execution_plan = factory.LazyFunction(lambda: ["coder"])


class CommentFactory(factory.Factory):  # type: ignore[misc]
    """Needs ``ticket_id`` of a stored ticket."""

    class Meta:
        model = Comment

    worker_type = "coder"
    stage_number = 1
    content = factory.Faker("sentence")


class WorkerFactory(factory.Factory):  # type: ignore[misc]
    """Needs ``project_id`` and a ``worker_type`` the project defines."""

    class Meta:
        model = Worker

    worker_id = factory.Sequence(lambda n: f"worker-{n}")
    worker_type = "coder"
    status = WorkerStatus.SPAWNING
    queue_name = factory.LazyAttribute(lambda o: f"queue.{o.worker_type}")
    pid = factory.Sequence(lambda n: 10_000 + n)


class EventFactory(factory.Factory):  # type: ignore[misc]
    """Needs ``project_id`` (and the ticket or worker it is about)."""

    class Meta:
        model = Event

    event_type = EventType.TICKET_STAGE_COMPLETED
    stage = "coder"
