"""factory-boy factories for every model. They build; units of work
persist, or :func:`create` does both, with the rows an object needs."""

from __future__ import annotations

from typing import Any, TypeVar

import factory

from orchestrator_db import values
from orchestrator_db.errors import ValidationError
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
from orchestrator_db.models.base import Base
from orchestrator_db.repositories import (
    CommentRepository,
    ConfigurationRepository,
    EventRepository,
    ProjectRepository,
    Repository,
    SessionRepository,
    TaskRepository,
    TicketRepository,
    ToolExecutionRepository,
    WorkerRepository,
    WorkerTypeRepository,
    WorkflowRepository,
    WorkflowTaskRepository,
)
from orchestrator_db.types import new_id
from orchestrator_db.unit_of_work import UnitOfWork


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


# Rows with everything they need -------------------------------------------

ModelT = TypeVar("ModelT", bound=Base)

_FACTORIES: dict[type[Base], type[factory.Factory]] = {
    built._meta.model: built
    for built in (
        TaskFactory,
        WorkflowFactory,
        WorkflowTaskFactory,
        ToolExecutionFactory,
        ClientSessionFactory,
        ConfigurationFactory,
        ProjectFactory,
        WorkerTypeFactory,
        TicketFactory,
        CommentFactory,
        WorkerFactory,
        EventFactory,
    )
}

_REPOSITORIES: dict[type[Base], type[Repository[Any]]] = {
    repository.model_type: repository
    for repository in (
        TaskRepository,
        WorkflowRepository,
        WorkflowTaskRepository,
        ToolExecutionRepository,
        SessionRepository,
        ConfigurationRepository,
        ProjectRepository,
        WorkerTypeRepository,
        TicketRepository,
        CommentRepository,
        WorkerRepository,
        EventRepository,
    )
}


async def create(uow: UnitOfWork, model: type[ModelT], /, **fields: Any) -> ModelT:
    """Build a ``model`` with its factory (``fields`` override it), make the
    rows it needs that ``fields`` do not name (a ticket's project and the
    worker types of its plan, a worker's project and type, a comment's
    ticket, a tool execution's task...), and add it through its repository,
    in ``uow``; the stored object. ``model`` may also be a factory of one
    of the package's models (a subclass of one of these). A refused object
    raises its typed error; the rows made for it stay in the unit, which
    the test rolls back (``odb_uow`` does unless committed)."""
    built_by: Any  # a factory class (factory-boy is untyped), or None
    if isinstance(model, type) and issubclass(model, factory.Factory):
        built_by = model
    elif model in _FACTORIES:
        built_by = _FACTORIES[model]
    else:
        built_by = None
    if built_by is None or built_by._meta.model not in _REPOSITORIES:
        raise ValidationError(
            "create() makes the package's models (or a factory of one): "
            + ", ".join(sorted(m.__name__ for m in _FACTORIES)),
            field="model",
        )
    try:
        obj = built_by.build(**fields)
    except TypeError as error:  # a field the model does not have
        raise ValidationError(str(error), field="fields") from None
    await _provide(uow, obj)
    stored: ModelT = await uow.repository(_REPOSITORIES[type(obj)]).add(obj)
    return stored


async def create_batch(
    uow: UnitOfWork, model: type[ModelT], size: int, /, **fields: Any
) -> list[ModelT]:
    """:func:`create` ``size`` times (each with rows of its own where
    ``fields`` name none)."""
    return [await create(uow, model, **fields) for _ in range(size)]


async def _provide(uow: UnitOfWork, obj: Base) -> None:
    """Make the rows ``obj`` refers to but does not name."""
    if isinstance(obj, ToolExecution) and obj.task_id is None:
        obj.task_id = (await create(uow, Task)).id
    elif isinstance(obj, WorkflowTask):
        if obj.workflow_id is None:
            obj.workflow_id = (await create(uow, Workflow)).id
        if obj.task_id is None:
            obj.task_id = (await create(uow, Task)).id
    elif isinstance(obj, Comment) and obj.ticket_id is None:
        obj.ticket_id = (await create(uow, Ticket)).ticket_id
    elif isinstance(obj, Event) and obj.project_id is None:
        if obj.ticket_id is not None:
            obj.project_id = (await uow.tickets.get(obj.ticket_id)).project_id
        elif obj.worker_id is not None:
            obj.project_id = (await uow.workers.get(obj.worker_id)).project_id
        else:
            obj.project_id = (await create(uow, Project)).repository_name
    elif isinstance(obj, WorkerType | Ticket | Worker):
        if obj.project_id is None:
            obj.project_id = (await create(uow, Project)).repository_name
        else:
            await uow.projects.get(obj.project_id)  # NotFoundError names the project
        if isinstance(obj, Ticket):
            plan = values.texts(obj.execution_plan, "execution_plan")
            await _worker_types(uow, obj.project_id, plan)
        elif isinstance(obj, Worker):
            await _worker_types(uow, obj.project_id, [values.text(obj.worker_type, "worker_type")])


async def _worker_types(uow: UnitOfWork, project_id: str, names: list[str]) -> None:
    for name in await uow.worker_types.missing(project_id, list(names)):
        await create(uow, WorkerType, project_id=project_id, worker_type=name)
