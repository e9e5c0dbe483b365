"""``orchestrator-db``: migrate, inspect and demo the data layer from a shell.

The URL comes from ``--url``, else ``$ORCHESTRATOR_DB_URL``, else
``sqlite+aiosqlite:///./orchestrator.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from orchestrator_db.database import Database
from orchestrator_db.errors import DataLayerError
from orchestrator_db.settings import url_from_env


async def _migrate(db: Database, args: argparse.Namespace) -> None:
    await db.migrate(args.revision)
    print(f"{db!r} is at revision {await db.current_revision()}")


async def _downgrade(db: Database, args: argparse.Namespace) -> None:
    await db.downgrade(args.revision)
    print(f"{db!r} is at revision {await db.current_revision()}")


async def _current(db: Database, args: argparse.Namespace) -> None:
    print(await db.current_revision() or "(empty database)")


async def _health(db: Database, args: argparse.Namespace) -> None:
    report = await db.health_check()
    for field, value in vars(report).items():
        print(f"{field:>16}: {value}")
    if not report.ok:
        raise SystemExit(1)


async def _seed(db: Database, args: argparse.Namespace) -> None:
    from orchestrator_db.seed import seed_demo

    report = await seed_demo(db)
    if report.changed:
        print("created: " + ", ".join(report.created))
    else:
        print("demo data already present: nothing to do")


async def _demo(db: Database, args: argparse.Namespace) -> None:
    from orchestrator_db.demo import run_demo

    await run_demo(db)


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``: an age for ``--older-than``."""
    match = re.fullmatch(r"\s*(\d{1,9})\s*([smhdw])\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age such as 30d, 12h, 90m, 45s or 2w")
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} reaches back too far") from None


async def _prune(db: Database, args: argparse.Namespace) -> None:
    if args.dry_run:
        found = await db.prune(older_than=args.older_than, dry_run=True)
        for table, count in found.items():
            print(f"{table:>16}: {count:,} would be deleted")
        return
    shown = {"at": time.monotonic()}

    def progress(table: str, deleted: int) -> None:
        now = time.monotonic()
        if now - shown["at"] >= 1.0:  # a line a second at most
            shown["at"] = now
            print(f"{table:>16}: {deleted:,} deleted so far", flush=True)

    deleted = await db.prune(older_than=args.older_than, progress=progress)
    for table, count in deleted.items():
        print(f"{table:>16}: {count:,} deleted")


COMMANDS: dict[str, Callable[[Database, argparse.Namespace], Awaitable[None]]] = {
    "prune": _prune,
    "migrate": _migrate,
    "downgrade": _downgrade,
    "current": _current,
    "health": _health,
    "demo": _demo,
    "seed": _seed,
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="orchestrator-db", description=__doc__)
    root.add_argument("--url", default=None, help="database URL (default: $ORCHESTRATOR_DB_URL)")
    commands = root.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="upgrade the schema (default: to head)")
    migrate.add_argument("revision", nargs="?", default="head")
    downgrade = commands.add_parser("downgrade", help="downgrade the schema")
    downgrade.add_argument("revision", help="target revision, e.g. -1 or base")
    commands.add_parser("current", help="print the current revision")
    commands.add_parser("health", help="print a health report; exit 1 if unhealthy")
    commands.add_parser("demo", help="exercise every repository and print what happened")
    commands.add_parser("seed", help="create the demo project and tickets (idempotent)")
    prune = commands.add_parser(
        "prune", help="delete finished tasks, processed events and closed sessions older than"
    )
    prune.add_argument("--older-than", type=age, required=True, help="an age: 30d, 12h, 90m")
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    return root


async def _main(args: argparse.Namespace) -> None:
    async with Database(args.url or url_from_env()) as db:
        await COMMANDS[args.command](db, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        asyncio.run(_main(args))
    except DataLayerError as error:
        print(f"orchestrator-db: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("orchestrator-db: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: reported, never as a traceback
        print(f"orchestrator-db: unexpected {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
