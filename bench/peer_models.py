"""The peers' models of our ``tasks`` table (the same table, its indexes and
trigger, for every contender), each in its library's documented style.
Imported only by ``bench/peers.py``, with the ``bench`` extra installed."""

from __future__ import annotations

import uuid
from typing import Any

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import JSON, String, Text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from tortoise import fields
from tortoise.models import Model


class AABase(DeclarativeBase):
    pass


class AATask(AABase):
    """advanced-alchemy's side: a plain declarative model of the columns
    every contender writes (the others take the table's defaults)."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(
        String(36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"), primary_key=True
    )
    title: Mapped[str] = mapped_column(Text)
    task_type: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    config: Mapped[dict[str, Any]] = mapped_column(
        JSON().with_variant(postgresql.JSONB(), "postgresql")
    )


class AATaskRepository(SQLAlchemyAsyncRepository[AATask]):
    model_type = AATask


class TortoiseTask(Model):
    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    title = fields.TextField()
    task_type = fields.TextField()
    status = fields.CharField(max_length=32, default="pending")
    config: Any = fields.JSONField()

    class Meta:
        table = "tasks"
