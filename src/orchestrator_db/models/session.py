"""Client sessions (WebSocket, HTTP, gRPC connections) and their heartbeats."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator_db.models.base import Base, JSONDoc, Timestamps, enum_type
from orchestrator_db.types import (
    JSONDocument,
    UTCDateTime,
    UUIDString,
    new_id,
    utc_now,
    utc_now_sql,
)


class ConnectionType(enum.StrEnum):
    WEBSOCKET = "websocket"
    HTTP = "http"
    GRPC = "grpc"


class ClientSession(Timestamps, Base):
    """A connected client. Named ``ClientSession`` so it is never mistaken for
    a SQLAlchemy ``Session``; the table is ``sessions``.

    ``idx_sessions_active`` is ``(is_active, last_heartbeat)``: it answers both
    "list the active sessions" and "expire active sessions silent since T".
    """

    __tablename__ = "sessions"
    __table_args__ = (
        Index("idx_sessions_client", "client_id"),
        Index("idx_sessions_user", "user_id"),
        Index("idx_sessions_active", "is_active", "last_heartbeat"),
        Index("idx_sessions_heartbeat", "last_heartbeat"),
        Index("idx_sessions_created", "created_at", "id"),
    )
    __repr_attrs__ = ("client_id", "connection_type", "is_active")

    id: Mapped[str] = mapped_column(UUIDString(), primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(Text, nullable=False)
    user_id: Mapped[str | None] = mapped_column(Text)
    connection_type: Mapped[ConnectionType] = mapped_column(
        enum_type(ConnectionType, "connection_type"), nullable=False
    )
    is_active: Mapped[bool] = mapped_column(
        Boolean(create_constraint=True, name="is_active"),
        nullable=False,
        default=True,
        server_default=text("true"),
    )
    metadata_: Mapped[JSONDoc | None] = mapped_column("metadata", JSONDocument())
    last_heartbeat: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utc_now, server_default=utc_now_sql()
    )
