"""A short tour of the data layer, printed as it happens (``make run``)."""

from __future__ import annotations

from datetime import timedelta

from orchestrator_db.database import Database
from orchestrator_db.errors import InvalidTransitionError
from orchestrator_db.models import ConnectionType, Task, TaskStatus, ToolExecutionStatus, Workflow


async def run_demo(db: Database) -> None:
    say = print
    say(f"database: {db!r}")
    async with db.unit_of_work() as uow:
        workflow = await uow.workflows.add(
            Workflow(name="release", definition={"steps": ["build", "test", "review"]})
        )
        tasks = await uow.tasks.add_many(
            [
                Task(title="Build the wheel", task_type="code", config={"target": "wheel"}),
                Task(title="Run the tests", task_type="code", config={"suite": "all"}),
                Task(title="Review the change", task_type="review", config={"reviewers": 2}),
            ]
        )
        for position, task in enumerate(tasks):
            await uow.workflows.attach_task(workflow.id, task.id, sequence=position)
        await uow.commit()
    say(f"created workflow {workflow.name!r} with {len(tasks)} tasks (one bulk insert)")

    build = tasks[0]
    async with db.unit_of_work() as uow:
        await uow.tasks.update_status(build.id, TaskStatus.RUNNING)
        call = await uow.tool_executions.start(build.id, "shell", {"cmd": "python -m build"})
        await uow.tool_executions.finish(call.id, ToolExecutionStatus.COMPLETED, output={"rc": 0})
        done = await uow.tasks.update_status(build.id, TaskStatus.COMPLETED)
        await uow.commit()
    say(f"task {done.title!r}: {done.status.value}, started {done.started_at:%H:%M:%S.%f}")
    try:
        async with db.unit_of_work() as uow:
            await uow.tasks.update_status(build.id, TaskStatus.RUNNING)
    except InvalidTransitionError as error:
        say(f"refused as expected: {error}")

    async with db.unit_of_work() as uow:
        client = await uow.sessions.open("cli-demo", ConnectionType.HTTP, user_id="demo")
        await uow.sessions.heartbeat(client.id)
        await uow.configurations.set("scheduler.max_workers", 8, description="worker pool size")
        await uow.configurations.set("openai.api_key", "sk-demo-not-real", is_secret=True)
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        workers = await uow.configurations.get_value("scheduler.max_workers")
        secret = await uow.configurations.get("openai.api_key")
        pending = await uow.tasks.count(status=TaskStatus.PENDING)
        ordered = [t.title for t in await uow.workflows.tasks_of(workflow.id)]
        stats = await uow.tool_executions.stats_by_tool()
        first_page = await uow.tasks.page(limit=2)
    say(f"configuration scheduler.max_workers = {workers!r} ({type(workers).__name__})")
    say(f"a secret entry prints as {secret}")
    say(f"{pending} pending tasks; workflow order: {ordered}")
    say(f"tool stats: {[(s.tool_name, s.count, s.p95_duration_ms) for s in stats]}")
    say(f"first page of tasks: {len(first_page.items)} rows, more: {first_page.has_more}")

    async with db.unit_of_work() as uow:
        expired = await uow.sessions.expire_stale(timedelta(hours=1))
        await uow.commit()
    say(f"expired {expired} stale sessions")
    report = await db.health_check()
    say(
        f"health: ok={report.ok} dialect={report.dialect} {report.server_version} "
        f"revision={report.current_revision} (head {report.head_revision}) "
        f"latency={report.latency_ms:.1f} ms pool={report.pool}"
    )
