"""Repository calls on the ``Database``: ``await db.tasks.update(id, title="x")``.

Each call is a unit of work of its own, of the kind its method's
:class:`~orchestrator_db.repositories.base.Plan` says for its arguments:

- a **read** runs in a read-only unit (on a replica, if there are any, as
  ``db.unit_of_work(read_only=True)`` would);
- a **one-statement write** (``update``, ``delete``) sends its statement
  alone: it commits on its own, with no BEGIN or COMMIT around it, so the
  call costs one round trip on PostgreSQL and one hop to SQLite's thread.
  One statement is atomic by itself: nothing is lost by going without the
  transaction;
- **any other write** runs in a write unit, committed as the method returns
  (and rolled back if it raises).

A call of one statement (a one-statement write, or a read declared one
statement, such as ``get``) needs no session and no transaction: it runs on
a pooled connection alone (see :mod:`orchestrator_db._execution.call`),
unless it needs what only a unit has (then it runs in one).

Objects come back detached, as from a unit that has ended. Where a method
cannot know it is one statement until it has tried (deleting a task that
turns out to have dependencies), it tries, having written nothing if it
cannot, and the call runs again in a write unit.

For several operations that must succeed or fail together, use a unit of
work: a call never sees another's uncommitted work.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from orchestrator_db._execution.call import CallExecutor, NeedsUnit
from orchestrator_db._execution.transaction import NeedsTransaction
from orchestrator_db.repositories.base import Condition, Plan, Repository, plan_of

#: The units a call runs in (see the module).
Kind = Literal["read", "read alone", "write", "write alone"]
#: Makes the unit of work of a call of a kind.
Units = Callable[[Kind], Any]
#: The executor of a call of one statement of a kind ("read alone", "write
#: alone"), or ``None`` where such calls run in units (read replicas).
Executors = Callable[[Kind], Awaitable[CallExecutor | None]]


def kind_of(plan: Plan, repository: type[Any], dialect: str, args: Any, kwargs: Any) -> Kind:
    """The kind of unit a call of a method declared with ``plan`` runs in."""

    def says(condition: bool | Condition) -> bool:
        if isinstance(condition, bool):
            return condition
        try:
            return condition(repository, dialect, *args, **kwargs) is True
        except Exception:
            return False  # arguments it cannot judge: the method refuses them, in a unit

    if says(plan.reads):
        return "read alone" if says(plan.one_statement) else "read"
    if plan.reads is False and says(plan.one_statement):
        return "write alone"
    return "write"


class RepositoryCalls:
    """A repository's public coroutine methods, each call a unit of work of
    its own (see the module). Made by :class:`Calls`, or by
    ``db.repository(MyRepository)`` for a repository of your own."""

    __slots__ = ("_alone", "_dialect", "_executors", "_made", "_repository", "_units")

    def __init__(
        self,
        units: Units,
        executors: Executors,
        repository: type[Repository[Any]],
        dialect: str,
        *,
        alone: bool,
    ) -> None:
        """``units`` makes the unit of a kind, ``executors`` the executor of a
        call of one statement; ``alone``: whether writes of one statement may
        run alone (else they run in a write unit: see
        :meth:`~orchestrator_db._execution.backend.Backend.autocommit_writes`)."""
        self._units = units
        self._executors = executors
        self._repository = repository
        self._dialect = dialect
        self._alone = alone
        self._made: dict[str, Callable[..., Awaitable[Any]]] = {}

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)  # nor are the slots, before __init__ (copy)
        made = self._made.get(name)
        if made is not None:
            return made
        method = getattr(self._repository, name, None)
        if method is None or not inspect.iscoroutinefunction(method):
            raise AttributeError(
                f"{self._repository.__name__} has no method {name!r} to call on the "
                "Database; its other attributes are a unit of work's repository's "
                "(`async with db.unit_of_work() as uow: uow.repository(...)`)"
            )
        call = functools.update_wrapper(
            functools.partial(self._call, name, plan_of(method)), method
        )
        signature = inspect.signature(method)
        call.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=list(signature.parameters.values())[1:]  # no self
        )
        self._made[name] = call
        return call

    async def _call(self, name: str, plan: Plan, /, *args: Any, **kwargs: Any) -> Any:
        kind = kind_of(plan, self._repository, self._dialect, args, kwargs)
        if kind == "write alone" and not self._alone:
            kind = "write"
        try:
            return await self._run(kind, name, args, kwargs)
        except NeedsTransaction:
            # Tried as one statement, which wrote nothing: needs more after all.
            return await self._run("write", name, args, kwargs)

    async def _run(self, kind: Kind, name: str, args: Any, kwargs: Any) -> Any:
        if kind in ("read alone", "write alone"):
            executor = await self._executors(kind)
            if executor is not None:
                repository = self._repository(executor)  # type: ignore[arg-type]
                with contextlib.suppress(NeedsUnit):  # declined, nothing sent: in a unit
                    return await executor.run(lambda: getattr(repository, name)(*args, **kwargs))
        async with self._units(kind) as uow:
            result = await getattr(uow.repository(self._repository), name)(*args, **kwargs)
            if kind == "write":
                await uow.commit()
        return result

    def __dir__(self) -> list[str]:
        return [
            name
            for name in dir(self._repository)
            if not name.startswith("_")
            and inspect.iscoroutinefunction(getattr(self._repository, name))
        ]

    def __repr__(self) -> str:
        return f"<{self._repository.__name__} calls>"
