"""``make bench``: the package against raw drivers, measured in the same run.

Run ``python -m bench [sqlite] [postgresql] [queue] [retention] [wakeup] [fixtures]
[peers] [queue_peers]``; by default all
(PostgreSQL parts are skipped, loudly, when the server is unreachable).
"""

from __future__ import annotations

import asyncio
import sys

from bench import (
    fixtures,
    peers,
    postgresql,
    queue,
    queue_peers,
    retention,
    sqlite,
    wakeup,
)


def main(argv: list[str]) -> int:
    engines = argv or [
        "sqlite",
        "postgresql",
        "queue",
        "retention",
        "wakeup",
        "fixtures",
        "peers",
        "queue_peers",
    ]
    if "sqlite" in engines:
        asyncio.run(sqlite.run())
    if "postgresql" in engines:
        asyncio.run(postgresql.run())
    if "queue" in engines:
        asyncio.run(queue.run())
    if "retention" in engines:
        asyncio.run(retention.run())
    if "wakeup" in engines:
        asyncio.run(wakeup.run())
    if "fixtures" in engines:
        asyncio.run(fixtures.run())
    if "peers" in engines:
        asyncio.run(peers.run())
    if "queue_peers" in engines:
        asyncio.run(queue_peers.run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
