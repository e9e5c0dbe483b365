"""A project's own models beside orchestrator_db's (``tests/test_project.py``
copies this file into a project made by ``orchestrator-db init-alembic``):
deployments of what a task built, with a foreign key to the package's
``tasks``."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, MetaData, String, Table

from orchestrator_db.migrations.project import referencing
from orchestrator_db.types import UUIDString

metadata = MetaData()

deployments = Table(
    "deployments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", UUIDString(), ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("target", String(100), nullable=False),
    Index("ix_deployments_task_id", "task_id"),
)

referencing(metadata)
