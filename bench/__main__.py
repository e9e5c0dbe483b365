"""``make bench``: the package against raw drivers, measured in the same run.

Run ``python -m bench [sqlite|postgresql ...]``; by default SQLite, plus
PostgreSQL when it is reachable on 127.0.0.1:5432.
"""

from __future__ import annotations

import asyncio
import sys

from bench import postgresql, sqlite


def main(argv: list[str]) -> int:
    engines = argv or ["sqlite", "postgresql"]
    if "sqlite" in engines:
        asyncio.run(sqlite.run())
    if "postgresql" in engines:
        asyncio.run(postgresql.run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
