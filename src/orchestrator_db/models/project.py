"""Projects (one per repository) and the worker types each one defines."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator_db.models.base import Base, Timestamps


class Project(Timestamps, Base):
    """A repository the pipeline works on, named by ``repository_name``."""

    __tablename__ = "projects"
    __repr_attrs__ = ("path",)

    repository_name: Mapped[str] = mapped_column(Text, primary_key=True)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    short_description: Mapped[str | None] = mapped_column(Text)


class WorkerType(Timestamps, Base):
    """A kind of worker of one project (``planner``, ``coder``, ...) and the
    system prompt it runs with. Unique per project; goes with its project."""

    __tablename__ = "worker_types"
    # The unique constraint's index also serves lookups by project.
    __table_args__ = (UniqueConstraint("project_id", "worker_type"),)
    __repr_attrs__ = ("project_id", "worker_type")

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(
        Text, ForeignKey("projects.repository_name", ondelete="CASCADE"), nullable=False
    )
    worker_type: Mapped[str] = mapped_column(Text, nullable=False)
    short_description: Mapped[str | None] = mapped_column(Text)
    system_prompt: Mapped[str] = mapped_column(Text, nullable=False)
