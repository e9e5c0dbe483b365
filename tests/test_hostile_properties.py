"""Hostile values thrown at every public method, on every engine at once.

For each public repository method, each ``QueueWorker`` method and the
``Database`` methods that take arguments (units, ``run``, health), hypothesis
draws arguments that mix sensible values with hostile ones (NUL bytes, lone
surrogates, huge and negative numbers, floats where integers go, years 1 and
9999 in far time zones, naive datetimes, deep and odd JSON, tampered cursors,
wrong types, unknown ids). Each example runs on every selected engine, in one
unit of work each or as calls on the ``Database`` (``db.tasks.update(...)``,
each call a unit of its own: see :mod:`orchestrator_db.calls`), from the
same state. The contract:

* every outcome is a success or a ``DataLayerError`` (nothing else escapes);
* the outcome is the same on every engine (the same error class);
* a refused unit leaves nothing written (the tables it touches are unchanged);
* a value written is read back, in a new unit, as the package normalises it
  (UTC to the millisecond, enumeration members, canonical UUIDs), else equal.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, select

from orchestrator_db import (
    ClientSession,
    Comment,
    Configuration,
    ConnectionType,
    Database,
    Event,
    EventType,
    Project,
    Task,
    TaskStatus,
    Ticket,
    ToolExecution,
    ToolExecutionStatus,
    UnitOfWork,
    ValueType,
    Worker,
    WorkerStatus,
    WorkerType,
    Workflow,
    WorkflowStatus,
)
from orchestrator_db.errors import DataLayerError
from orchestrator_db.models import Base
from orchestrator_db.types import JSONValue, UTCDateTime, UUIDString
from orchestrator_db.values import encode_cursor
from tests.conftest import ENGINES, sqlite_copy
from tests.support import ENGINE_OPTIONS, is_sqlite

#: Examples per test (times 8 for the domain methods, 4 for the queue worker).
#: ``ORCHESTRATOR_HOSTILE_EXAMPLES=500`` hunts further, with random examples;
#: by default the same examples run every time: CI is not a lottery.
EXAMPLES = int(os.environ.get("ORCHESTRATOR_HOSTILE_EXAMPLES", "0")) or 15
HOSTILE_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="ORCHESTRATOR_HOSTILE_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ------------------------------------------------------------ the fixture

PROJECT = "acme/app"
TICKET = "T-1"
WORKER = "W-1"
HOLDER = "holder-1"
TASK_PENDING = "018f0000-0000-7000-8000-000000000001"
TASK_READY = "018f0000-0000-7000-8000-000000000002"
TASK_RUNNING = "018f0000-0000-7000-8000-000000000003"
TASK_CHILD = "018f0000-0000-7000-8000-000000000004"
WORKFLOW = "018f0000-0000-7000-8000-000000000010"
EXECUTION = "018f0000-0000-7000-8000-000000000020"
SESSION = "018f0000-0000-7000-8000-000000000030"
CONFIG = "cfg.colour"
TASK_IDS = [TASK_PENDING, TASK_READY, TASK_RUNNING, TASK_CHILD]


async def populate(db: Database) -> None:
    """The same rows, with the same keys, on every engine."""
    async with db.unit_of_work() as uow:
        await uow.projects.add(Project(repository_name=PROJECT, path="/srv/app"))
        for name in ("planner", "coder"):
            await uow.worker_types.add(
                WorkerType(project_id=PROJECT, worker_type=name, system_prompt="p")
            )
        await uow.tickets.add(
            Ticket(ticket_id=TICKET, project_id=PROJECT, title="t", execution_plan=["planner"])
        )
        await uow.workers.add(
            Worker(worker_id=WORKER, project_id=PROJECT, worker_type="coder", queue_name="q")
        )
        await uow.comments.add(Comment(ticket_id=TICKET, content="hello", stage_number=1))
        await uow.events.emit(EventType.WORKER_STOPPED, project_id=PROJECT, worker_id=WORKER)
        await uow.tasks.add(Task(id=TASK_PENDING, title="p", task_type="code", config={}))
        await uow.tasks.submit(Task(id=TASK_RUNNING, title="r", task_type="code", config={}))
        await uow.tasks.submit(
            Task(id=TASK_READY, title="q", task_type="code", config={}, priority=1)
        )
        await uow.tasks.submit(
            Task(id=TASK_CHILD, title="c", task_type="code", config={}), depends_on=[TASK_READY]
        )
        await uow.workflows.add(Workflow(id=WORKFLOW, name="wf", definition={"steps": []}))
        await uow.workflows.attach_task(WORKFLOW, TASK_READY)
        await uow.tool_executions.add(
            ToolExecution(id=EXECUTION, task_id=TASK_PENDING, tool_name="sh", arguments={})
        )
        await uow.sessions.add(
            ClientSession(id=SESSION, client_id="c", connection_type=ConnectionType.HTTP)
        )
        await uow.configurations.set(CONFIG, "blue")
        await uow.commit()
    async with db.unit_of_work() as uow:
        claimed = await uow.tasks.claim_next(HOLDER)  # the highest priority: TASK_RUNNING
        assert claimed is not None and claimed.id == TASK_RUNNING
        await uow.commit()


@dataclass
class Engines:
    """One event loop and a database per selected engine."""

    loop: asyncio.AbstractEventLoop
    databases: dict[str, Database] = field(default_factory=dict)

    def run(self, coroutine: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coroutine)


@pytest.fixture
def engines(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engines]:
    harness = Engines(asyncio.new_event_loop())
    try:
        for engine in ENGINES:
            if is_sqlite(engine):
                template = request.getfixturevalue("sqlite_template")
                folder = tmp_path / engine
                folder.mkdir()
                url = sqlite_copy(template, folder)
            else:
                fixture = "pgbouncer" if engine == "pgbouncer" else "postgres"
                url = request.getfixturevalue(f"{fixture}_database_url")
            db = Database(url, **ENGINE_OPTIONS[engine])
            harness.databases[engine] = db
            harness.run(populate(db))
        yield harness
    finally:
        for db in harness.databases.values():
            harness.run(db.close())
        harness.loop.close()


# ------------------------------------------------------------- strategies

NASTY_CHARACTERS = st.sampled_from(["\x00", "\ud800", "\udfff", "'", '"', "%", "\\", "é", "🚀"])
NASTY_TEXT = st.one_of(
    st.text(st.one_of(NASTY_CHARACTERS, st.characters(codec=None)), max_size=20),
    st.sampled_from(["x" * 301, "🚀" * 300]),
)
WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.decimals(allow_nan=True),
    st.binary(max_size=5),
    st.tuples(st.integers()),
    st.sets(st.integers(), max_size=2),
    st.just(object()),
)
#: Waits for work: none, short ones, and refused ones (never a long valid
#: one: an example would sit through it).
WAITS = st.one_of(
    st.none(),
    st.sampled_from(
        [timedelta(0), timedelta(milliseconds=20), timedelta(seconds=-1), timedelta.max]
    ),
    WRONG,
)
WORDS = st.sampled_from(["code", "w", "planner", "coder", "x", ""])
TEXT = st.one_of(WORDS, NASTY_TEXT, WRONG)
INTEGERS = st.one_of(
    st.integers(min_value=-3, max_value=12),
    st.sampled_from([2**31 - 1, 2**31, -(2**31) - 1, 2**63, -(2**63) - 1]),
    WRONG,
)
ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-14)), timezone.min]
)
INSTANTS = st.one_of(
    st.datetimes(timezones=ZONES),
    st.sampled_from(
        [
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(1, 1, 1, 0, 0, 0, 999, tzinfo=UTC),
            datetime(1, 1, 1, 0, 0, 0, 1000, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(2030, 1, 1),  # naive
        ]
    ),
    WRONG,
)
DURATIONS = st.one_of(
    st.timedeltas(),
    st.sampled_from([timedelta(0), timedelta(seconds=30), timedelta(days=3_000_000)]),
    WRONG,
)
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(),
    NASTY_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.one_of(NASTY_TEXT, st.integers()), children, max_size=3),
        st.tuples(children),
    ),
    max_leaves=8,
)


def deeply(depth: int) -> Any:
    document: Any = []
    for _ in range(depth):
        document = [document]
    return document


JSON = st.one_of(JSON_VALUES, st.sampled_from([deeply(99), deeply(100), deeply(1000)]), WRONG)
UUIDS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids(),
    TEXT,
)
CURSORS = st.one_of(
    st.none(),
    NASTY_TEXT,
    JSON_VALUES.map(
        lambda value: base64.urlsafe_b64encode(json.dumps(value, default=str).encode()).decode()
    ),
    st.just(base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).decode()),
    st.just(encode_cursor(["x", "y"])),
    WRONG,
)


def known_or(values: list[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(values), hostile)


TASK_ID = known_or(TASK_IDS, UUIDS)
HOLDERS = known_or([HOLDER], TEXT)


def kind_of(column: Any) -> st.SearchStrategy[Any]:
    """Hostile values for a column, by its type."""
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return INSTANTS
    if isinstance(kind, JSONValue):
        return JSON
    if isinstance(kind, UUIDString):
        return UUIDS
    enum_class = getattr(kind, "enum_class", None)
    if enum_class is not None:
        return st.one_of(st.sampled_from(list(enum_class)), TEXT)
    python = kind.python_type
    if python is bool:
        return st.one_of(st.booleans(), WRONG)
    if python is int:
        return INTEGERS
    return TEXT


# ------------------------------------------------------------ expectations


def expected(column: Any, value: Any) -> Any:
    """What a successfully written value reads back as, worked out here
    independently of the package."""
    kind = column.type
    if value is None:
        return None
    if isinstance(kind, UTCDateTime):
        utc = value.astimezone(UTC)
        return utc.replace(microsecond=utc.microsecond // 1000 * 1000)
    if isinstance(kind, UUIDString):
        return str(uuid.UUID(str(value)))
    enum_class = getattr(kind, "enum_class", None)
    if enum_class is not None and not isinstance(value, Enum):
        return enum_class(value)
    return value


async def fingerprint(db: Database) -> dict[str, list[Any]]:
    """Every row of every table (the fixture holds few)."""
    found: dict[str, list[Any]] = {}
    async with db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = await connection.execute(select(table))
            found[table.name] = sorted(repr(tuple(row)) for row in rows)
    return found


#: Runs on a unit of work's repositories, or on the Database's calls
#: (``db.tasks``: each call a unit of its own), which have the same names.
Call = Callable[[Any], Awaitable[Any]]
#: Where a call runs: in a unit of work, or as calls on the Database.
VIA = st.sampled_from(["unit", "database"])
Check = Callable[[UnitOfWork, Any], Awaitable[None]]


async def attempt(db: Database, call: Call, check: Check | None, via: str) -> str:
    """Run ``call`` in a unit, or ``via`` the Database's calls; the
    outcome's name ("ok" or the error class)."""
    before = await fingerprint(db)
    refused: DataLayerError | None = None
    try:
        if via == "database":
            result = await call(db)
        else:
            async with db.unit_of_work() as uow:
                result = await call(uow)
                await uow.commit()
    except DataLayerError as error:
        refused = error
    except Exception as error:  # pragma: no cover - the failure this test is for
        pytest.fail(f"a raw {type(error).__name__} escaped: {error!r}")
    if refused is not None:
        assert await fingerprint(db) == before, f"refused with {refused!r}, yet wrote"
        return type(refused).__name__
    if check is not None:
        async with db.unit_of_work(read_only=True) as uow:
            await check(uow, result)
    return "ok"


def same_everywhere(
    engines: Engines, call: Call, check: Check | None = None, *, via: str = "unit"
) -> None:
    outcomes = {
        engine: engines.run(attempt(db, call, check, via))
        for engine, db in engines.databases.items()
    }
    assert len(set(outcomes.values())) == 1, f"engines disagree: {outcomes}"


# ------------------------------------------- generic methods, every model

#: Each model, how to make a valid one, and its repository's attribute.
MODELS: dict[str, tuple[type[Base], Callable[[], dict[str, Any]]]] = {
    "tasks": (Task, lambda: {"title": "t", "task_type": "code", "config": {}}),
    "workflows": (Workflow, lambda: {"name": "w", "definition": {"steps": []}}),
    "tool_executions": (
        ToolExecution,
        lambda: {"task_id": TASK_PENDING, "tool_name": "sh", "arguments": {}},
    ),
    "sessions": (ClientSession, lambda: {"client_id": "c", "connection_type": "http"}),
    "configurations": (
        Configuration,
        lambda: {"key": f"k.{uuid.uuid4()}", "value": "v", "value_type": ValueType.STRING},
    ),
    "projects": (Project, lambda: {"repository_name": f"r/{uuid.uuid4()}", "path": "/p"}),
    "worker_types": (
        WorkerType,
        lambda: {"project_id": PROJECT, "worker_type": f"t{uuid.uuid4()}", "system_prompt": "s"},
    ),
    "tickets": (
        Ticket,
        lambda: {
            "ticket_id": f"T-{uuid.uuid4()}",
            "project_id": PROJECT,
            "title": "t",
            "execution_plan": ["planner"],
        },
    ),
    "comments": (Comment, lambda: {"ticket_id": TICKET, "content": "c"}),
    "workers": (
        Worker,
        lambda: {
            "worker_id": f"W-{uuid.uuid4()}",
            "project_id": PROJECT,
            "worker_type": "coder",
            "queue_name": "q",
        },
    ),
    "events": (
        Event,
        lambda: {"event_type": EventType.WORKER_STOPPED, "project_id": PROJECT},
    ),
}
KEYS: dict[str, list[Any]] = {
    "tasks": TASK_IDS,
    "workflows": [WORKFLOW],
    "tool_executions": [EXECUTION],
    "sessions": [SESSION],
    "configurations": [CONFIG],
    "projects": [PROJECT],
    "worker_types": [1, 2],
    "tickets": [TICKET],
    "comments": [1],
    "workers": [WORKER],
    "events": [1],
}


def columns(model: type[Base]) -> dict[str, Any]:
    return {attr.key: attr.columns[0] for attr in inspect(model).column_attrs}


def key_of(model: type[Base], obj: Any) -> Any:
    mapper = inspect(model)
    parts = [getattr(obj, mapper.get_property_by_column(c).key) for c in mapper.primary_key]
    return parts[0] if len(parts) == 1 else tuple(parts)


def draw_attribute(data: st.DataObject, model: type[Base]) -> tuple[str, Any]:
    """An attribute of ``model`` and a hostile value for it."""
    attributes = columns(model)
    name = data.draw(st.sampled_from(sorted(attributes)), label="attribute")
    return name, data.draw(kind_of(attributes[name]), label="value")


def read_back(repository: str, name: str, value: Any) -> Check:
    model = MODELS[repository][0]
    column = columns(model)[name]

    async def check(uow: UnitOfWork, written: Any) -> None:
        stored = await getattr(uow, repository).get(key_of(model, written))
        if value is None and (
            column.default is not None or column.server_default is not None or column.primary_key
        ):
            return  # the column's default (or generated key) was written instead
        assert getattr(stored, name) == expected(column, value)

    return check


@pytest.mark.parametrize("repository", sorted(MODELS))
@HOSTILE_SETTINGS
@given(data=st.data())
def test_add_and_update_with_hostile_values(
    engines: Engines, repository: str, data: st.DataObject
) -> None:
    model, valid = MODELS[repository]
    name, value = draw_attribute(data, model)

    async def add(uow: UnitOfWork) -> Any:
        values = {**valid(), name: value}
        return await getattr(uow, repository).add(model(**values))

    via = data.draw(VIA, label="via")
    same_everywhere(engines, add, read_back(repository, name, value), via=via)
    key = data.draw(st.sampled_from(KEYS[repository]), label="key")

    async def update(uow: UnitOfWork) -> Any:
        return await getattr(uow, repository).update(key, **{name: value})

    same_everywhere(engines, update, read_back(repository, name, value), via=via)


@pytest.mark.parametrize("repository", sorted(MODELS))
@HOSTILE_SETTINGS
@given(data=st.data())
def test_reads_and_deletes_with_hostile_arguments(
    engines: Engines, repository: str, data: st.DataObject
) -> None:
    model = MODELS[repository][0]
    attributes = columns(model)
    key = data.draw(known_or(KEYS[repository], st.one_of(UUIDS, INTEGERS)), label="key")
    name = data.draw(st.sampled_from([*sorted(attributes), "no_such_attribute"]), label="filter")
    value = data.draw(
        st.one_of(kind_of(attributes[name]) if name in attributes else TEXT, st.lists(TEXT)),
        label="filter value",
    )
    limit = data.draw(st.one_of(st.integers(0, 5), INTEGERS), label="limit")
    after = data.draw(CURSORS, label="after")
    order = data.draw(
        st.one_of(
            st.none(),
            st.sampled_from(sorted(attributes)).flatmap(lambda n: st.sampled_from([n, f"-{n}"])),
            st.lists(st.sampled_from([*sorted(attributes), "-id", "nope"]), max_size=3),
            TEXT,
            WRONG,
        ),
        label="order_by",
    )
    method = data.draw(
        st.sampled_from(["get", "get_or_none", "list", "page", "count", "exists", "delete"]),
        label="method",
    )

    async def call(uow: UnitOfWork) -> Any:
        repo = getattr(uow, repository)
        if method in ("get", "get_or_none", "delete"):
            return await getattr(repo, method)(key)
        if method == "list":
            return await repo.list(limit=limit, order_by=order, **{name: value})
        if method == "page":
            return await repo.page(limit=limit, after=after, order_by=order, **{name: value})
        return await getattr(repo, method)(**{name: value})

    same_everywhere(engines, call, via=data.draw(VIA, label="via"))


@pytest.mark.parametrize("repository", sorted(MODELS))
@HOSTILE_SETTINGS
@given(data=st.data())
def test_add_many_with_hostile_values(
    engines: Engines, repository: str, data: st.DataObject
) -> None:
    model, valid = MODELS[repository]
    name, value = draw_attribute(data, model)

    async def call(uow: UnitOfWork) -> Any:
        return await getattr(uow, repository).add_many([model(**valid()), model(**valid())])

    async def hostile(uow: UnitOfWork) -> Any:
        return await getattr(uow, repository).add_many([model(**{**valid(), name: value})])

    via = data.draw(VIA, label="via")
    same_everywhere(engines, call, via=via)
    same_everywhere(engines, hostile, via=via)


# ------------------------------------------------------ domain methods

DomainCase = Callable[[st.DataObject], Call]


def _draw(data: st.DataObject, strategy: st.SearchStrategy[Any], label: str) -> Any:
    return data.draw(strategy, label=label)


def tasks_case(data: st.DataObject) -> Call:
    method = _draw(
        data,
        st.sampled_from(
            [
                "update_status",
                "submit",
                "submit_many",
                "add_dependency",
                "dependencies_of",
                "dependents_of",
                "claim_next",
                "claim_batch",
                "heartbeat",
                "complete",
                "complete_and_claim",
                "fail",
                "cancel",
                "requeue_expired",
                "ready",
                "stats",
                "overdue",
                "reprioritize",
                "prune",
                "prunable",
            ]
        ),
        "method",
    )
    task_id = _draw(data, TASK_ID, "task_id")
    other = _draw(data, TASK_ID, "other task")
    holder = _draw(data, HOLDERS, "worker_id")
    number = _draw(data, st.one_of(st.integers(0, 3), INTEGERS), "limit")
    lease = _draw(data, st.one_of(st.none(), DURATIONS), "lease")
    kinds = _draw(data, st.one_of(st.none(), st.lists(TEXT, max_size=2), TEXT), "task_types")
    result = _draw(data, JSON, "result")
    words = _draw(data, TEXT, "text")
    status = _draw(data, st.one_of(st.sampled_from(list(TaskStatus)), TEXT), "status")
    depends = _draw(data, st.one_of(st.lists(TASK_ID, max_size=3), TEXT), "depends_on")
    title = _draw(data, TEXT, "title")
    agents = _draw(data, st.one_of(st.none(), st.lists(TEXT, max_size=2), TEXT), "agent_types")
    when = _draw(data, st.one_of(DURATIONS, INSTANTS), "older_than")

    async def call(uow: UnitOfWork) -> Any:
        tasks = uow.tasks
        if method == "update_status":
            return await tasks.update_status(task_id, status, error=words)
        if method == "submit":
            return await tasks.submit(
                Task(title=title, task_type="code", config={}), depends_on=depends
            )
        if method == "submit_many":
            batch = [Task(title="a", task_type="code", config={}) for _ in range(2)]
            return await tasks.submit_many(batch, dependencies={batch[1].id: depends})
        if method == "add_dependency":
            return await tasks.add_dependency(task_id, other)
        if method in ("dependencies_of", "dependents_of"):
            return await getattr(tasks, method)(task_id)
        if method == "claim_next":
            return await tasks.claim_next(holder, task_types=kinds, agent_types=agents, lease=lease)
        if method == "claim_batch":
            return await tasks.claim_batch(
                holder, number, task_types=kinds, agent_types=agents, lease=lease
            )
        if method == "heartbeat":
            return await tasks.heartbeat(task_id, holder, lease=lease)
        if method == "complete":
            return await tasks.complete(task_id, holder, result)
        if method == "complete_and_claim":
            return await tasks.complete_and_claim(task_id, holder, result, lease=lease)
        if method == "fail":
            return await tasks.fail(task_id, holder, words)
        if method == "cancel":
            return await tasks.cancel(task_id, reason=words)
        if method == "ready":
            return await tasks.ready(number, task_types=kinds, agent_types=agents)
        if method == "overdue":
            return await tasks.overdue(number)
        if method == "reprioritize":
            return await tasks.reprioritize(limit=number, batch=number)
        if method == "prune":
            return await tasks.prune(when, limit=number)
        if method == "prunable":
            return await tasks.prunable(when)
        return await getattr(tasks, method)()

    return call


def pipeline_case(data: st.DataObject) -> Call:
    method = _draw(
        data,
        st.sampled_from(
            [
                "workflows.attach_task",
                "workflows.detach_task",
                "workflows.tasks_of",
                "tool_executions.start",
                "tool_executions.finish",
                "tool_executions.stats_by_tool",
                "sessions.open",
                "sessions.heartbeat",
                "sessions.close",
                "sessions.list_active",
                "sessions.expire_stale",
                "sessions.prune",
                "sessions.prunable",
                "events.prune",
                "events.prunable",
                "configurations.set",
                "configurations.get_value",
                "configurations.get_value_or",
                "worker_types.for_project",
                "worker_types.named",
                "worker_types.missing",
                "tickets.advance",
                "tickets.current_stage",
                "tickets.next_worker_type",
                "tickets.next_stage",
                "tickets.open_tickets",
                "comments.for_ticket",
                "comments.by_stage",
                "workers.set_status",
                "workers.stop",
                "workers.touch",
                "workers.stale",
                "workers.for_project",
                "events.emit",
                "events.claim_unprocessed",
                "events.mark_processed",
            ]
        ),
        "method",
    )
    words = _draw(data, TEXT, "text")
    more = _draw(data, TEXT, "more text")
    number = _draw(data, st.one_of(st.integers(0, 3), INTEGERS), "number")
    document = _draw(data, JSON, "document")
    when = _draw(data, st.one_of(DURATIONS, INSTANTS), "older_than")
    flag = _draw(data, st.one_of(st.booleans(), WRONG), "flag")
    lease = _draw(data, st.one_of(st.none(), DURATIONS), "lease")
    task_id = _draw(data, TASK_ID, "task_id")
    workflow = _draw(data, known_or([WORKFLOW], UUIDS), "workflow_id")
    execution = _draw(data, known_or([EXECUTION], UUIDS), "execution_id")
    session = _draw(data, known_or([SESSION], UUIDS), "session_id")
    project = _draw(data, known_or([PROJECT], TEXT), "project_id")
    ticket = _draw(data, known_or([TICKET], TEXT), "ticket_id")
    worker = _draw(data, known_or([WORKER], TEXT), "worker_id")
    key = _draw(data, known_or([CONFIG], TEXT), "key")
    config_value = _draw(data, st.one_of(JSON, TEXT, INTEGERS), "value")
    enum_value = _draw(
        data,
        st.one_of(
            st.sampled_from([*ToolExecutionStatus, *WorkerStatus, *ConnectionType, *EventType]),
            st.sampled_from(list(WorkflowStatus)),
            TEXT,
        ),
        "status",
    )
    ids = _draw(data, st.one_of(st.lists(INTEGERS, max_size=3), TEXT), "ids")
    wait = _draw(data, WAITS, "wait")

    async def call(uow: UnitOfWork) -> Any:
        repo = getattr(uow, method.partition(".")[0])
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "workflows.attach_task": lambda: repo.attach_task(workflow, task_id, sequence=number),
            "workflows.detach_task": lambda: repo.detach_task(workflow, task_id),
            "workflows.tasks_of": lambda: repo.tasks_of(workflow),
            "tool_executions.start": lambda: repo.start(task_id, words, document),
            "tool_executions.finish": lambda: repo.finish(
                execution, enum_value, output=document, error=more
            ),
            "tool_executions.stats_by_tool": lambda: repo.stats_by_tool(since=when),
            "sessions.open": lambda: repo.open(words, enum_value, user_id=more, metadata=document),
            "sessions.heartbeat": lambda: repo.heartbeat(session),
            "sessions.close": lambda: repo.close(session),
            "sessions.list_active": lambda: repo.list_active(limit=number),
            "sessions.expire_stale": lambda: repo.expire_stale(when),
            "sessions.prune": lambda: repo.prune(when, limit=number),
            "sessions.prunable": lambda: repo.prunable(when),
            "events.prune": lambda: repo.prune(when, limit=number),
            "events.prunable": lambda: repo.prunable(when),
            "configurations.set": lambda: repo.set(
                key, config_value, description=more, is_secret=flag
            ),
            "configurations.get_value": lambda: repo.get_value(key),
            "configurations.get_value_or": lambda: repo.get_value_or(key, 1),
            "worker_types.for_project": lambda: repo.for_project(project),
            "worker_types.named": lambda: repo.named(project, words),
            "worker_types.missing": lambda: repo.missing(project, [words, more]),
            "tickets.advance": lambda: repo.advance(ticket, words, worker_id=more),
            "tickets.current_stage": lambda: repo.current_stage(ticket),
            "tickets.next_worker_type": lambda: repo.next_worker_type(ticket),
            "tickets.next_stage": lambda: repo.next_stage(ticket),
            "tickets.open_tickets": lambda: repo.open_tickets(project),
            "comments.for_ticket": lambda: repo.for_ticket(ticket, stage_number=number),
            "comments.by_stage": lambda: repo.by_stage(ticket),
            "workers.set_status": lambda: repo.set_status(worker, enum_value, reason=more),
            "workers.stop": lambda: repo.stop(worker, failed=flag, reason=more),
            "workers.touch": lambda: repo.touch(worker),
            "workers.stale": lambda: repo.stale(when),
            "workers.for_project": lambda: repo.for_project(project, status=enum_value),
            "events.emit": lambda: repo.emit(
                enum_value, project_id=project, ticket_id=ticket, stage=words, reason=more
            ),
            "events.claim_unprocessed": lambda: repo.claim_unprocessed(
                number, consumer=words, lease=lease, wait=wait
            ),
            "events.mark_processed": lambda: repo.mark_processed(ids, consumer=more),
        }
        return await calls[method]()

    return call


@pytest.mark.parametrize("case", [tasks_case, pipeline_case], ids=["tasks", "pipeline"])
@settings(HOSTILE_SETTINGS, max_examples=EXAMPLES * 8)
@given(data=st.data())
def test_domain_methods_with_hostile_arguments(
    engines: Engines, case: DomainCase, data: st.DataObject
) -> None:
    call = case(data)
    same_everywhere(engines, call, via=data.draw(VIA, label="via"))


# ---------------------------------------------------------- queue worker


async def worker_attempt(db: Database, arguments: dict[str, Any], method: str) -> str:
    before = await fingerprint(db)
    try:
        async with db.queue_worker(
            arguments["worker_id"],
            task_types=arguments["task_types"],
            agent_types=arguments["agent_types"],
            lease=arguments["lease"],
        ) as worker:
            if method == "claim":
                await worker.claim(wait=arguments["wait"])
            elif method == "claim_batch":
                await worker.claim_batch(arguments["limit"], wait=arguments["wait"])
            elif method == "heartbeat":
                await worker.heartbeat(arguments["task_id"])
            elif method == "complete":
                await worker.complete(arguments["task_id"], arguments["result"])
            elif method == "complete_and_claim":
                await worker.complete_and_claim(arguments["task_id"], arguments["result"])
            elif method == "complete_many":
                await worker.complete_many(arguments["results"], claim=arguments["limit"])
            elif method == "heartbeat_many":
                await worker.heartbeat_many(arguments["task_ids"])
            elif method == "give_back":
                await worker.give_back(arguments["task_ids"])
            elif method == "run":

                async def handler(task: Any) -> Any:
                    return arguments["result"]

                await worker.run(
                    handler, concurrency=arguments["limit"], prefetch=arguments["prefetch"]
                )
            else:
                await worker.fail(arguments["task_id"], arguments["error"])
    except DataLayerError as error:
        refused = error
    except Exception as error:  # pragma: no cover - the failure this test is for
        pytest.fail(f"a raw {type(error).__name__} escaped: {error!r}")
    else:
        return "ok"
    assert await fingerprint(db) == before, f"refused with {refused!r}, yet wrote"
    return type(refused).__name__


@settings(HOSTILE_SETTINGS, max_examples=EXAMPLES * 4)
@given(data=st.data())
def test_queue_worker_methods_with_hostile_arguments(engines: Engines, data: st.DataObject) -> None:
    arguments = {
        "worker_id": data.draw(HOLDERS, label="worker_id"),
        "task_types": data.draw(
            st.one_of(st.none(), st.lists(TEXT, max_size=2), TEXT), label="task_types"
        ),
        "agent_types": data.draw(
            st.one_of(st.none(), st.lists(TEXT, max_size=2), TEXT), label="agent_types"
        ),
        "lease": data.draw(st.one_of(st.none(), DURATIONS), label="lease"),
        "limit": data.draw(st.one_of(st.integers(1, 3), INTEGERS), label="limit"),
        "task_id": data.draw(TASK_ID, label="task_id"),
        "result": data.draw(JSON, label="result"),
        "error": data.draw(TEXT, label="error"),
        "wait": data.draw(WAITS, label="wait"),
        "results": data.draw(
            st.one_of(st.dictionaries(TASK_ID, JSON, max_size=2), WRONG), label="results"
        ),
        "task_ids": data.draw(st.one_of(st.lists(TASK_ID, max_size=2), WRONG), label="ids"),
        "prefetch": data.draw(st.one_of(st.none(), st.integers(1, 3), INTEGERS), label="prefetch"),
    }
    method = data.draw(
        st.sampled_from(
            [
                "claim",
                "claim_batch",
                "heartbeat",
                "complete",
                "complete_and_claim",
                "fail",
                "complete_many",
                "heartbeat_many",
                "give_back",
                "run",
            ]
        ),
        label="method",
    )
    outcomes = {
        engine: engines.run(worker_attempt(db, arguments, method))
        for engine, db in engines.databases.items()
    }
    assert len(set(outcomes.values())) == 1, f"engines disagree: {outcomes}"


SECONDS = st.one_of(
    st.floats(min_value=0.05, max_value=5),
    st.sampled_from([0, -1, 1e-300, 86_401, float("inf"), float("nan"), 2**70]),
    WRONG,
)
FLAGS = st.one_of(st.booleans(), WRONG)


async def database_attempt(db: Database, method: str, arguments: dict[str, Any]) -> str:
    """``method`` of ``db`` with ``arguments``: ``"ok"`` or the error class;
    nothing is written either way."""
    before = await fingerprint(db)

    async def count(uow: UnitOfWork) -> int:
        return await uow.tasks.count()

    try:
        if method == "health_check":
            await db.health_check(timeout=arguments["timeout"])
        elif method == "wait_until_ready":
            await db.wait_until_ready(timeout=arguments["timeout"], at_head=arguments["flag"])
        elif method == "run":
            work = count if arguments["callable"] else arguments["work"]
            assert await db.run(work, retries=arguments["retries"], read_only=arguments["flag"])
        else:
            async with db.unit_of_work(read_only=arguments["flag"], fresh=arguments["fresh"]) as u:
                await u.tasks.count()
        outcome = "ok"
    except DataLayerError as refused:
        outcome = type(refused).__name__
    assert await fingerprint(db) == before, f"{outcome}, yet wrote"
    return outcome


@settings(HOSTILE_SETTINGS, max_examples=EXAMPLES * 2)
@given(data=st.data())
def test_database_methods_with_hostile_arguments(engines: Engines, data: st.DataObject) -> None:
    arguments = {
        "timeout": data.draw(SECONDS, label="timeout"),
        "flag": data.draw(FLAGS, label="flag"),
        "fresh": data.draw(FLAGS, label="fresh"),
        "retries": data.draw(st.one_of(st.integers(0, 3), INTEGERS), label="retries"),
        "callable": data.draw(st.booleans(), label="callable"),
        "work": data.draw(WRONG, label="work"),
    }
    method = data.draw(
        st.sampled_from(["health_check", "wait_until_ready", "run", "unit_of_work"]),
        label="method",
    )
    outcomes = {
        engine: engines.run(database_attempt(db, method, arguments))
        for engine, db in engines.databases.items()
    }
    assert len(set(outcomes.values())) == 1, f"engines disagree: {outcomes}"


def test_the_fixture_is_the_same_everywhere(engines: Engines) -> None:
    """The examples start from equal states on every engine."""
    prints = [engines.run(fingerprint(db)) for db in engines.databases.values()]
    counts = [{table: len(rows) for table, rows in found.items()} for found in prints]
    assert all(count == counts[0] for count in counts)
    assert counts[0]["tasks"] == 4 and counts[0]["events"] == 1
