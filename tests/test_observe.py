"""Logs under ``orchestrator_db.*`` and ``db.metrics()`` (``_execution/observe.py``),
and OpenTelemetry's SQLAlchemy instrumentation seeing every statement."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from orchestrator_db import Database, UnitOfWork
from orchestrator_db.errors import TransactionConflictError
from orchestrator_db.migrations.runner import known_revisions
from tests.helpers import add_tasks, task


def messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


async def test_each_revision_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")
    try:
        with caplog.at_level(logging.INFO, logger="orchestrator_db"):
            await db.migrate()
            await db.downgrade("-1")
    finally:
        await db.close()
    said = messages(caplog, "orchestrator_db.migrations")
    assert len(said) == len(known_revisions()) + 1
    assert said[0].startswith("applied 0001: core orchestrator schema")
    assert said[-1] == said[-2].replace("applied", "reverted", 1)  # the head, by name


async def test_slow_statements_by_name_never_with_values(
    database_url: str, database_options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(database_url, **{**database_options, "slow_statement_seconds": 1e-9})
    try:
        (item,) = await add_tasks(db, task(title="s3cret-title"))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="orchestrator_db"):
            async with db.unit_of_work(read_only=True) as uow:
                assert (await uow.tasks.get(item.id)).title == "s3cret-title"
                await uow.session.execute(text("SELECT 1"))
            async with db.unit_of_work(read_only=True) as uow:
                await uow.session.execute(text("SELECT 's3cret-literal'"))
        said = messages(caplog, "orchestrator_db.statements")
        assert any(m.startswith("slow statement: SELECT tasks took") for m in said), said
        assert any(m.startswith("slow statement: SQL text took") for m in said), said
        assert not any(item.id in m or "s3cret" in m for m in said)
        assert (await db.metrics()).slow_statements >= 2
    finally:
        await db.close()


async def test_no_slow_statement_below_the_threshold(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="orchestrator_db"):
        await add_tasks(db, task())
    assert messages(caplog, "orchestrator_db.statements") == []
    assert (await db.metrics()).slow_statements == 0


async def test_a_long_wait_for_a_pooled_connection(
    database_url: str, database_options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(database_url, **{**database_options, "pool_size": 1, "max_overflow": 0})
    try:
        await add_tasks(db, task())
        started = asyncio.Event()

        async def hold() -> None:
            async with db.unit_of_work() as uow:
                await uow.tasks.count()
                started.set()
                await asyncio.sleep(1.3)

        holding = asyncio.create_task(hold())
        await started.wait()
        with caplog.at_level(logging.WARNING, logger="orchestrator_db"):
            async with db.unit_of_work() as uow:
                await uow.tasks.count()
        await holding
        said = messages(caplog, "orchestrator_db.pool")
        assert len(said) == 1 and said[0].startswith("waited 1."), said
        assert (await db.metrics()).pool_waits == 1
    finally:
        await db.close()


async def expired_lease(db: Database) -> None:
    """A task claimed by a worker that died: its lease has run out."""
    async with db.unit_of_work() as uow:
        await uow.tasks.submit(task())
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.tasks.claim_next("dead", lease=timedelta(milliseconds=1))
        await uow.commit()
    await asyncio.sleep(0.05)


async def test_rescues_retries_and_failed_units_are_counted(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await expired_lease(db)
    attempts = 0

    async def conflicted_once(uow: UnitOfWork) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise TransactionConflictError("lost a race")

    with caplog.at_level(logging.INFO, logger="orchestrator_db"):
        async with db.unit_of_work() as uow:
            await uow.tasks.requeue_expired()
            await uow.commit()
        await db.run(conflicted_once)
    assert messages(caplog, "orchestrator_db.queue") == ["rescued 1 tasks whose lease ran out"]
    (retry,) = messages(caplog, "orchestrator_db.retry")
    assert "attempt 2" in retry and "TransactionConflictError" in retry
    metrics = await db.metrics()
    assert (metrics.rescued_leases, metrics.retries, metrics.units_failed) == (1, 1, 1)
    assert metrics.tasks_by_status == {"ready": 1}
    assert metrics.units_opened == 5  # submit, claim, requeue, two runs (not this read)


async def test_rescues_count_once_committed(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    await expired_lease(db)
    with caplog.at_level(logging.INFO, logger="orchestrator_db"):
        for _ in range(2):
            async with db.unit_of_work() as uow:  # rolled back
                assert await uow.tasks.requeue_expired() == 1
        assert messages(caplog, "orchestrator_db.queue") == []
        async with db.unit_of_work() as uow:
            assert await uow.tasks.requeue_expired() == 1
            await uow.commit()
    assert messages(caplog, "orchestrator_db.queue") == ["rescued 1 tasks whose lease ran out"]
    assert (await db.metrics()).rescued_leases == 1


async def test_a_flush_with_nothing_to_write_takes_no_connection(
    database_url: str, database_options: dict[str, Any]
) -> None:
    db = Database(database_url, **{**database_options, "pool_size": 1, "max_overflow": 0})
    try:
        await add_tasks(db, task())
        async with db.unit_of_work() as uow:
            await uow.flush()
            assert db.pool_status().checked_out == 0
    finally:
        await db.close()


async def test_reads_sent_to_the_primary_are_said_once(
    postgres_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(postgres_database_url, replicas=["postgresql://nobody@127.0.0.1:1/none"])
    try:
        with caplog.at_level(logging.INFO, logger="orchestrator_db"):
            for _ in range(3):
                async with db.unit_of_work(read_only=True) as uow:
                    await uow.tasks.count()
        assert messages(caplog, "orchestrator_db.replicas") == [
            "no read replica is usable: reads go to the primary"
        ]
        assert (await db.metrics()).replica_fallbacks >= 3
    finally:
        await db.close()


async def test_opentelemetry_sees_every_statement(
    database_url: str, database_options: dict[str, Any]
) -> None:
    """Instrumented, the engine has cursor listeners: the direct path steps
    aside, and the statements it would have sent are spans too."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    db = Database(database_url, **database_options)
    instrumentor = SQLAlchemyInstrumentor()
    # It declares SQLAlchemy < 2.1; its engine events are the same in 2.1.
    instrumentor.instrument(
        engine=db.engine.sync_engine, tracer_provider=provider, skip_dep_check=True
    )
    try:
        (item,) = await add_tasks(db, task())
        exporter.clear()
        async with db.unit_of_work() as uow:
            await uow.tasks.get(item.id)  # the direct path's statement
            claimed = await uow.tasks.claim_next("w")  # the queue's
            await uow.commit()
        assert claimed is None  # added, never submitted
        spans = exporter.get_finished_spans()
        statements = [str((span.attributes or {}).get("db.statement", "")) for span in spans]
        assert any(s.lstrip().startswith("SELECT") and "tasks" in s for s in statements), statements
        assert any(s.lstrip().startswith(("UPDATE", "WITH")) for s in statements), statements
    finally:
        instrumentor.uninstrument()
        await db.close()
