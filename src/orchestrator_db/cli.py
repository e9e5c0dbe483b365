"""``orchestrator-db``: migrate, inspect and maintain the data layer from a shell.

Every failure is one line on stderr and a non-zero exit status, never a
traceback. Commands that only look (``current``, ``health``, ``check``,
``stats``) never create a database. ``prune`` shows a progress bar when the
``cli`` extra (tqdm) is installed, else a line a second.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from orchestrator_db.database import Database
from orchestrator_db.errors import DataLayerError, ValidationError
from orchestrator_db.migrations import project
from orchestrator_db.settings import normalize_url, sqlite_file, url_from_env

DESCRIPTION = """\
Migrate, inspect and maintain an orchestrator_db database.

The database is --url, else $ORCHESTRATOR_DB_URL, else ./orchestrator.db
(SQLite). PostgreSQL URLs look like postgresql+asyncpg://user@host/db.
"""

EXAMPLES = """\
examples:
  orchestrator-db migrate                      upgrade to the newest revision
  orchestrator-db --url sqlite:///app.db current
  orchestrator-db health                       exit status 1 when unhealthy
  orchestrator-db check                        the schema against the models
  orchestrator-db stats                        tasks per status and per type
  orchestrator-db requeue                      rescue tasks whose lease ran out
  orchestrator-db prune --older-than 30d --dry-run
  orchestrator-db init-alembic                 Alembic for your own tables, here
"""


async def _migrate(db: Database, args: argparse.Namespace) -> None:
    await db.migrate(args.revision)
    print(f"{db!r} is at revision {await db.current_revision()}")


async def _downgrade(db: Database, args: argparse.Namespace) -> None:
    await db.downgrade(args.revision)
    print(f"{db!r} is at revision {await db.current_revision()}")


async def _current(db: Database, args: argparse.Namespace) -> None:
    print(await db.current_revision() or "(empty database)")


async def _health(db: Database, args: argparse.Namespace) -> None:
    report = await db.health_check(timeout=args.timeout)
    for field, value in vars(report).items():
        print(f"{field:>16}: {value}")
    if not report.ok:
        raise SystemExit(1)


async def _check(db: Database, args: argparse.Namespace) -> None:
    await db.check_schema()
    print(f"the schema matches the models (revision {await db.current_revision()})")


async def _stats(db: Database, args: argparse.Namespace) -> None:
    async with db.unit_of_work(read_only=True) as uow:
        stats = await uow.tasks.stats()
    if not stats.by_status:
        print("no tasks")
        return
    for status, count in sorted(stats.by_status.items(), key=lambda item: item[0].value):
        print(f"{status.value:>16}: {count:,}")
    for task_type, counts in sorted(stats.by_type.items()):
        shown = ", ".join(f"{s.value} {n:,}" for s, n in sorted(counts.items(), key=_by_value))
        print(f"{task_type:>16}: {shown}")


def _by_value(item: tuple[Any, int]) -> str:
    return str(item[0].value)


async def _requeue(db: Database, args: argparse.Namespace) -> None:
    async with db.unit_of_work() as uow:
        rescued = await uow.tasks.requeue_expired()
        await uow.commit()
    print(f"{rescued:,} tasks rescued from expired leases")


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


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 3600")
    return value


class _Progress:
    """Deleted rows per table as ``prune`` goes: a tqdm bar per table when
    the ``cli`` extra is installed (and stderr is a terminal), else a line
    a second at most."""

    def __init__(self) -> None:
        try:
            import tqdm
        except ImportError:
            self._tqdm: Any = None
        else:
            self._tqdm = tqdm.tqdm if sys.stderr.isatty() else None
        self._bars: dict[str, Any] = {}
        self._shown_at = time.monotonic()

    def __call__(self, table: str, deleted: int) -> None:
        if self._tqdm is not None:
            bar = self._bars.get(table)
            if bar is None:
                bar = self._bars[table] = self._tqdm(desc=table, unit=" rows", leave=False)
            bar.update(deleted - bar.n)
            return
        now = time.monotonic()
        if now - self._shown_at >= 1.0:
            self._shown_at = now
            print(f"{table:>16}: {deleted:,} deleted so far", flush=True)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


async def _prune(db: Database, args: argparse.Namespace) -> None:
    if args.dry_run:
        found = await db.prune(older_than=args.older_than, dry_run=True)
        for table, count in found.items():
            print(f"{table:>16}: {count:,} would be deleted")
        return
    progress = _Progress()
    try:
        deleted = await db.prune(older_than=args.older_than, progress=progress)
    finally:
        progress.close()
    for table, count in deleted.items():
        print(f"{table:>16}: {count:,} deleted")


#: Each command, and whether it may create the database it is pointed at.
COMMANDS: dict[str, tuple[Callable[[Database, argparse.Namespace], Awaitable[None]], bool]] = {
    "migrate": (_migrate, True),
    "downgrade": (_downgrade, False),
    "current": (_current, False),
    "health": (_health, False),
    "check": (_check, False),
    "stats": (_stats, False),
    "requeue": (_requeue, False),
    "prune": (_prune, False),
    "demo": (_demo, True),
    "seed": (_seed, True),
}


def _version() -> str:
    try:
        return metadata.version("orchestrator_db")
    except metadata.PackageNotFoundError:
        return "unknown"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="orchestrator-db",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument(
        "--url", default=None, help="the database URL (default: $ORCHESTRATOR_DB_URL)"
    )
    root.add_argument("--version", action="version", version=f"orchestrator-db {_version()}")
    commands = root.add_subparsers(dest="command", required=True, metavar="command")
    migrate = commands.add_parser("migrate", help="upgrade the schema (to the newest revision)")
    migrate.add_argument("revision", nargs="?", default="head", help="a revision (default: head)")
    downgrade = commands.add_parser("downgrade", help="downgrade the schema")
    downgrade.add_argument("revision", help="the target revision: -1, base or a revision id")
    commands.add_parser("current", help="print the database's revision")
    health = commands.add_parser("health", help="print a health report; exit 1 if unhealthy")
    health.add_argument(
        "--timeout", type=seconds, default=5.0, help="seconds to wait for an answer (default 5)"
    )
    commands.add_parser("check", help="compare the schema with the models; exit 1 if they differ")
    commands.add_parser("stats", help="count tasks per status and per task type")
    commands.add_parser("requeue", help="rescue running tasks whose lease ran out")
    prune = commands.add_parser(
        "prune", help="delete finished tasks, processed events and closed sessions"
    )
    prune.add_argument(
        "--older-than", type=age, required=True, help="an age such as 30d, 12h or 90m"
    )
    prune.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    init = commands.add_parser(
        "init-alembic", help="set up Alembic for your project's own tables (no database needed)"
    )
    init.add_argument("directory", nargs="?", default=".", help="the project (default: here)")
    commands.add_parser("demo", help="exercise every repository and print what happened")
    commands.add_parser("seed", help="create the demo project and tickets (idempotent)")
    return root


def _url(args: argparse.Namespace) -> URL:
    url = normalize_url(args.url or url_from_env())
    path = sqlite_file(url)
    if not COMMANDS[args.command][1] and path is not None and not Path(path).exists():
        raise ValidationError(
            f"no SQLite database at {path} (`orchestrator-db migrate` creates one)", field="url"
        )
    return url


async def _main(url: URL, args: argparse.Namespace) -> None:
    async with Database(url) as db:
        await COMMANDS[args.command][0](db, args)


def _init_alembic(directory: str) -> None:
    try:
        written = project.init(Path(directory))
    except OSError as error:
        raise ValidationError(f"cannot set up Alembic: {error}", field="directory") from None
    for path in written:
        print(f"wrote {path}")
    print("next: point env.py at your models' metadata, then `alembic revision --autogenerate`")


def _quiet_about_abandoned_connects(
    loop: asyncio.AbstractEventLoop, context: dict[str, Any]
) -> None:
    """A connection attempt that ``health --timeout`` gave up on may fail
    later inside the driver, where nobody waits for it: already reported as
    no answer, not worth a second, alarming report."""
    if isinstance(context.get("exception"), ConnectionError | OSError):
        return
    loop.default_exception_handler(context)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "init-alembic":
            _init_alembic(args.directory)
            return 0
        with asyncio.Runner() as runner:
            runner.get_loop().set_exception_handler(_quiet_about_abandoned_connects)
            runner.run(_main(_url(args), args))
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
