"""Client sessions: open, heartbeat, close and expiry of silent ones."""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from orchestrator_db.errors import InvalidTransitionError
from orchestrator_db.models.session import ClientSession, ConnectionType
from orchestrator_db.repositories.base import Repository, cutoff, reads
from orchestrator_db.sql import retention
from orchestrator_db.types import utc_now


class SessionRepository(Repository[ClientSession]):
    model_type = ClientSession
    protected_fields = frozenset({"is_active"})

    async def open(
        self,
        client_id: str,
        connection_type: ConnectionType | str,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ClientSession:
        """Register a newly connected client; the session is active."""
        return await self.add(
            ClientSession(
                client_id=client_id,
                connection_type=connection_type,
                user_id=user_id,
                metadata_=metadata,
            )
        )

    async def heartbeat(self, session_id: str) -> ClientSession:
        """Record that the client is alive. A closed session cannot heartbeat."""
        session = await self.get(session_id, for_update=True)
        if not session.is_active:
            raise InvalidTransitionError(self.entity, session_id, "closed", "heartbeat")
        session.last_heartbeat = utc_now()
        await self._flush_and_refresh(session, session_id)
        return session

    async def close(self, session_id: str) -> ClientSession:
        """Mark the session closed. Closing a closed session changes nothing."""
        session = await self.get(session_id, for_update=True)
        if session.is_active:
            session.is_active = False
            await self._flush_and_refresh(session, session_id)
        return session

    @reads
    async def list_active(self, *, limit: int | None = None) -> builtins.list[ClientSession]:
        return await self.list(is_active=True, limit=limit)

    async def prune(self, older_than: timedelta | datetime, *, limit: int = 1_000) -> int:
        """Delete up to ``limit`` closed sessions silent since before
        ``older_than`` (an age or an instant), oldest first; returns how many.
        Tasks that named them keep their rows (``session_id`` becomes NULL)."""
        return await self._prune_batch(retention.delete_sessions_statement(), older_than, limit)

    @reads
    async def prunable(self, older_than: timedelta | datetime) -> int:
        """How many sessions :meth:`prune` would delete, in all."""
        return await self._prunable(retention.prunable_sessions_statement(), older_than)

    async def expire_stale(self, older_than: timedelta | datetime) -> int:
        """Close active sessions silent since ``older_than`` (an age or an
        instant); returns how many were closed."""
        since = cutoff(older_than)
        statement = (
            update(ClientSession)
            .where(ClientSession.is_active.is_(True), ClientSession.last_heartbeat < since)
            .values(is_active=False)
        )
        result = await self._ex.execute(statement, entity=self.entity)
        return int(getattr(result, "rowcount", 0))
