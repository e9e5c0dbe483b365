"""``make bench``: the package against raw drivers, measured in the same run.

Run ``python -m bench [sqlite] [postgresql] [queue] [retention]``; by default all
(PostgreSQL parts are skipped, loudly, when the server is unreachable).
"""

from __future__ import annotations

import asyncio
import sys

from bench import postgresql, queue, retention, sqlite


def main(argv: list[str]) -> int:
    engines = argv or ["sqlite", "postgresql", "queue", "retention"]
    if "sqlite" in engines:
        asyncio.run(sqlite.run())
    if "postgresql" in engines:
        asyncio.run(postgresql.run())
    if "queue" in engines:
        asyncio.run(queue.run())
    if "retention" in engines:
        asyncio.run(retention.run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
