"""A throwaway migrated database for tests of code built on orchestrator_db."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from orchestrator_db.database import Database


@asynccontextmanager
async def migrated_database(**settings: Any) -> AsyncIterator[Database]:
    """A :class:`Database` on a new SQLite file, migrated to head; deleted on exit."""
    with tempfile.TemporaryDirectory(prefix="orchestrator_db-") as directory:
        db = Database(f"sqlite+aiosqlite:///{Path(directory) / 'test.db'}", **settings)
        try:
            await db.migrate()
            yield db
        finally:
            await db.close()
