"""``orchestrator-db``: migrate, inspect and demo the data layer from a shell.

The URL comes from ``--url``, else ``$ORCHESTRATOR_DB_URL``, else
``sqlite+aiosqlite:///./orchestrator.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence

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


COMMANDS: dict[str, Callable[[Database, argparse.Namespace], Awaitable[None]]] = {
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
