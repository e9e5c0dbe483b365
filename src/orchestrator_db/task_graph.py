"""The dependency facts and calculated priorities, kept as the graph changes.

What the facts mean is in :mod:`orchestrator_db.models.graph`, the score in
:mod:`orchestrator_db.models.priority`, the SQL in
:mod:`orchestrator_db.sql.graph`. Here is when they change:

* **new tasks** (``submit``, ``submit_many``): their depth and type are
  computed before they are inserted; once their edges exist, every
  unfinished task they wait for (transitively, through unfinished tasks)
  counts them: :func:`count_in`.
* **edges added to stored tasks** (``add_dependency``, ``submit`` of a
  pending task) and **a deleted task**: :func:`changing` takes the tasks
  whose facts may change (the task and the unfinished tasks that wait for
  it) out of their ancestors' counts, lets the change happen, puts them
  back, and recomputes their depth and type.
* **tasks that finish** (complete with a prerequisite unfinished, fail for
  good, cancelled): :func:`finished` takes them out of the counts.
* **time**: :func:`reprioritize` recomputes the scores whose deadline
  urgency has moved by more than the tolerance.

Counts are changed relative to the stored value in one ``UPDATE`` (under
its row locks), and on PostgreSQL every change of counts first takes the
graph lock (``pg_advisory_xact_lock``), so two transactions changing the
graph at once cannot each count the other's tasks, or neither.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from orchestrator_db._execution.executor import Executor
from orchestrator_db.errors import DataLayerError
from orchestrator_db.models import graph, priority
from orchestrator_db.models.task import DependencyType, Task
from orchestrator_db.sql import IDS_PER_STATEMENT
from orchestrator_db.sql import graph as g
from orchestrator_db.sql import queue as q
from orchestrator_db.types import utc_now

_ENTITY = "Task"


def _chunks(ids: Collection[str]) -> Iterable[list[str]]:
    ordered = sorted(ids)
    for start in range(0, len(ordered), IDS_PER_STATEMENT):
        yield ordered[start : start + IDS_PER_STATEMENT]


async def lock(ex: Executor) -> None:
    """Serialise changes to the graph (PostgreSQL; SQLite has one writer).

    Taken before any task row is locked: a transaction that locked rows
    first and then waited here could deadlock with one holding this lock
    and waiting for those rows (a submit locks its prerequisites)."""
    statement = q.graph_lock_statement(ex.backend.name)
    if statement is not None:
        await ex.rows(statement, entity=_ENTITY)


async def try_lock(ex: Executor) -> bool:
    """:func:`lock` if it is free now (for a transaction that holds task
    rows already); whether it is held."""
    statement = q.graph_lock_statement(ex.backend.name, wait=False)
    if statement is None:
        return True
    rows = await ex.rows(statement, entity=_ENTITY)
    return bool(rows[0][0])


# ------------------------------------------------------------ depth and type


async def facts(
    ex: Executor, prerequisites: Mapping[str, Sequence[str]], depth_of: Mapping[str, int]
) -> dict[str, tuple[int, DependencyType]]:
    """Depth and type of the tasks of ``prerequisites`` (task -> what it
    waits for); ``depth_of`` gives the depth of prerequisites not among them.

    Two prerequisites of one depth cannot depend on each other, so the
    graph is read (every edge up from the deeper prerequisites) only for
    tasks whose prerequisites differ in depth.
    """
    depths = graph.depths(prerequisites, list(prerequisites), depth_of)

    def depth(task_id: str) -> int:
        return depths[task_id] if task_id in depths else depth_of.get(task_id, 0)

    uneven = {
        task_id: waited
        for task_id, waited in prerequisites.items()
        if len(waited) > 1 and len({depth(p) for p in waited}) > 1
    }
    reach: dict[str, frozenset[str]] = {}
    if uneven:
        deeper = {p for waited in uneven.values() for p in waited if depth(p) > 0}
        stored = {p for p in deeper if p not in prerequisites}
        # Of the tasks given, their edges are known; past them, the database's.
        outside = {
            p
            for node in graph.prerequisites_first(prerequisites, deeper)
            for p in prerequisites.get(node, ())
            if p not in prerequisites
        } | stored
        known = await _ancestors(ex, outside)
        reach = graph.ancestors(prerequisites, deeper, known)
    return {
        task_id: (
            depths[task_id],
            graph.dependency_type(waited, reach)
            if task_id in uneven
            else graph.dependency_type(waited, {}),
        )
        for task_id, waited in prerequisites.items()
    }


async def _ancestors(ex: Executor, ids: Collection[str]) -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {task_id: set() for task_id in ids}
    for chunk in _chunks(ids):
        for origin, ancestor in await ex.rows(g.ancestors_statement(), {"ids": chunk}):
            found[str(origin)].add(str(ancestor))
    return {task_id: frozenset(reached) for task_id, reached in found.items()}


async def closing_a_cycle(ex: Executor, task_id: str, prerequisites: Collection[str]) -> str | None:
    """The first of ``prerequisites`` that already waits for the stored
    task ``task_id`` (directly or through others): an edge from the task to
    it would close a cycle. ``None`` if there is none."""
    if not prerequisites:
        return None
    waiting = await _descendants(ex, [task_id], unfinished_only=False)
    return next((p for p in prerequisites if p in waiting), None)


# --------------------------------------------------------------- the counts


async def count_in(ex: Executor, ids: Collection[str]) -> set[str]:
    """Count the tasks ``ids`` (new, their edges inserted) in the
    ``blocking_count`` of every unfinished task they wait for; returns the
    ids of those tasks."""
    return await _shift(ex, ids, sign=1, through=())


async def finished(ex: Executor, ids: Collection[str], *, through: Collection[str] = ()) -> None:
    """Take tasks that just finished out of the counts of the tasks they
    waited for (walking up as the graph was while they were unfinished:
    through them, and through ``through``, tasks already taken out)."""
    if ids:
        await lock(ex)
        await _shift(ex, ids, sign=-1, through={*ids, *through})


async def _shift(
    ex: Executor, ids: Collection[str], *, sign: int, through: Collection[str]
) -> set[str]:
    """Add ``sign`` times each of ``ids`` to the counts of the unfinished
    tasks it waits for, walking through unfinished tasks and ``through``
    (bound as one parameter, whatever its size: every group of ``ids`` is
    walked through all of it)."""
    changed: dict[str, Any] = {}
    for chunk in _chunks(ids):
        params = {"ids": chunk, "through": through, "sign": sign}
        for row in await ex.rows(g.shift_blocking_statement(), params, entity=_ENTITY):
            changed[str(row.id)] = row
    await rescore(ex, changed.values())
    return set(changed)


@contextlib.asynccontextmanager
async def changing(
    ex: Executor, dependents: Collection[str], *, removed: Collection[str] = ()
) -> AsyncIterator[None]:
    """Around a change of the edges of the stored tasks ``dependents`` (or
    the deletion of ``removed``): their facts, and those of every task that
    waits for them, are right again afterwards."""
    await lock(ex)
    scope = await _descendants(ex, dependents, unfinished_only=True)
    # Depths follow every edge, through finished tasks too.
    everyone = await _descendants(ex, dependents, unfinished_only=False)
    await _shift(ex, scope, sign=-1, through=())
    try:
        yield
    except BaseException:
        # As it was; if the unit is failed already, the error is what matters.
        with contextlib.suppress(DataLayerError):
            await _shift(ex, scope, sign=1, through=())
        raise
    await _shift(ex, scope - set(removed), sign=1, through=())
    await refresh_facts(ex, everyone - set(removed))


async def _descendants(ex: Executor, ids: Collection[str], *, unfinished_only: bool) -> set[str]:
    found: set[str] = set()
    statement = g.descendants_statement(unfinished_only=unfinished_only)
    for chunk in _chunks(set(ids)):
        rows = await ex.rows(statement, {"ids": chunk}, entity=_ENTITY)
        found.update(str(row[0]) for row in rows)
    return found


async def refresh_facts(ex: Executor, ids: Collection[str]) -> None:
    """Recompute the depth and type of stored tasks from their edges."""
    if not ids:
        return
    prerequisites: dict[str, list[str]] = {task_id: [] for task_id in ids}
    depth_of: dict[str, int] = {}
    for chunk in _chunks(ids):
        rows = await ex.rows(g.prerequisites_statement(), {"ids": chunk}, entity=_ENTITY)
        for task_id, depends_on_id, depth in rows:
            prerequisites[str(task_id)].append(str(depends_on_id))
            depth_of[str(depends_on_id)] = depth
    computed = await facts(ex, prerequisites, depth_of)
    stored = await _facts_of(ex, ids)
    await rescore(ex, stored, computed)


async def refresh_scores(ex: Executor, ids: Collection[str]) -> list[str]:
    """Recompute the scores of stored tasks whose own values changed (their
    base priority, deadline, ...); returns the ids of those that changed."""
    return await rescore(ex, await _facts_of(ex, ids))


async def _facts_of(ex: Executor, ids: Collection[str]) -> list[Any]:
    found = []
    for chunk in _chunks(ids):
        found.extend(await ex.rows(g.facts_statement(), {"ids": chunk}, entity=_ENTITY))
    return found


# ------------------------------------------------------------------ scores


async def rescore(
    ex: Executor,
    rows: Iterable[Any],
    computed: Mapping[str, tuple[int, DependencyType]] | None = None,
    *,
    now: datetime | None = None,
) -> list[str]:
    """Recompute the score of ``rows`` (their facts, with ``computed``
    depth and type where given) and store whatever changed; returns the
    ids of the tasks changed. Objects a unit holds for them are refreshed."""
    now = utc_now() if now is None else now
    params = []
    for row in rows:
        key = str(row.id)
        depth, kind = (computed or {}).get(key, (row.dependency_depth, row.dependency_type))
        new = {
            "new_depth": depth,
            "new_type": kind,
            "new_blocking": row.blocking_count,
            "new_score": priority.score_of(row, now, depth=depth),
            "new_due": priority.reprioritize_at(row.deadline, row.estimated_duration_seconds, now),
        }
        if row.status not in g.QUEUED_STATUSES:
            new["new_due"] = None  # recomputed when it is queued again
        old = (
            row.dependency_depth,
            row.dependency_type,
            row.blocking_count,
            row.calculated_priority,
            row.reprioritize_at,
        )
        if old != tuple(new.values()):
            params.append({"task_key": key, **new})
    for start in range(0, len(params), IDS_PER_STATEMENT):
        await ex.run_many(g.set_facts_statement(), params[start : start + IDS_PER_STATEMENT])
    keys = [p["task_key"] for p in params]
    await ex.refresh_loaded(Task, keys)
    return keys


def requeued_score(row: Any) -> dict[str, Any]:
    """The parameters ``new_score`` and ``new_due`` of a task queued again
    (a retry): its score as of now."""
    now = utc_now()
    return {
        "new_score": priority.score_of(row, now),
        "new_due": priority.reprioritize_at(row.deadline, row.estimated_duration_seconds, now),
    }


async def reprioritize(ex: Executor, *, limit: int, batch: int) -> int:
    """Recompute up to ``limit`` scores that are due (their deadline's
    urgency has moved by :data:`~orchestrator_db.models.priority.TOLERANCE`),
    ``batch`` at a time, soonest due first; returns how many changed."""
    changed = 0
    while limit > 0:
        now = utc_now()
        params = {"limit": min(batch, limit), "now": now}
        rows = await ex.rows(g.due_statement(), params, entity=_ENTITY)
        if not rows:
            break
        changed += len(await rescore(ex, rows, now=now))
        limit -= len(rows)
        if len(rows) < batch:
            break
    return changed
