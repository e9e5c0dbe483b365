"""What a PostgreSQL read replica is asked before reads go to it."""

from __future__ import annotations

import functools

from sqlalchemy import TextClause, text


@functools.cache
def replica_lag_statement() -> TextClause:
    """Seconds the server's data is behind its primary: 0 when it has
    replayed everything it received (or is no standby at all: a replica
    promoted by a failover), else the age of the last transaction it
    replayed. (A standby cut off from its primary replays everything it
    has and so reads 0: what it lacks, it cannot know.)"""
    return text(
        "SELECT CASE"
        " WHEN NOT pg_is_in_recovery() THEN 0.0"
        " WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0.0"
        " ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 1e9)"
        " END::float8"
    )
