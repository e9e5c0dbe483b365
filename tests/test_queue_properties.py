"""Property-based tests of the dependency graph (hypothesis), on both engines.

* Any DAG, submitted in any order, drains in a valid topological order.
* Edges added one by one are refused exactly when they would close a cycle,
  and what is stored is always acyclic.
* Whatever happens to the graph (submits, new edges, completions, failures,
  cancellations, deletions), every task's dependency depth, type, blocking
  count and calculated priority are what the whole graph says they are.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from orchestrator_db import Database, Task, TaskStatus
from orchestrator_db.errors import DependencyCycleError, InvalidTransitionError
from orchestrator_db.models import TaskDependency
from tests.helpers import assert_facts_hold

PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, dict[int, list[int]], list[int], list[int]]:
    """(size, prerequisites by node, submission order, priorities)."""
    size = draw(st.integers(min_value=1, max_value=10))
    edges = {
        node: sorted(draw(st.sets(st.integers(0, node - 1), max_size=3))) if node else []
        for node in range(size)
    }
    order = draw(st.permutations(range(size)))
    priorities = draw(st.lists(st.integers(0, 10), min_size=size, max_size=size))
    return size, edges, list(order), priorities


@st.composite
def edge_sequences(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    """A node count and edges to add, with at least one cycle among them."""
    size = draw(st.integers(min_value=2, max_value=7))
    cycle = draw(st.lists(st.integers(0, size - 1), min_size=2, max_size=size, unique=True))
    ring = [(cycle[i], cycle[(i + 1) % len(cycle)]) for i in range(len(cycle))]
    extra = draw(
        st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, size - 1)), max_size=10)
    )
    edges = draw(st.permutations(ring + extra))
    return size, list(edges)


def run_on(
    url: str, options: dict[str, Any], scenario: Callable[[Database], Awaitable[Any]]
) -> Any:
    async def go() -> Any:
        db = Database(url, **options)
        try:
            async with db.unit_of_work() as uow:  # every example starts empty
                await uow.session.execute(delete(Task))
                await uow.commit()
            return await scenario(db)
        finally:
            await db.close()

    return asyncio.run(go())


@PROPERTY_SETTINGS
@given(graph=dags())
def test_any_dag_drains_in_topological_order(
    database_url: str,
    database_options: dict[str, Any],
    graph: tuple[int, dict[int, list[int]], list[int], list[int]],
) -> None:
    size, edges, order, priorities = graph

    async def scenario(db: Database) -> list[int]:
        tasks = [
            Task(title=str(n), task_type="code", config={}, priority=priorities[n])
            for n in range(size)
        ]
        async with db.unit_of_work() as uow:
            await uow.tasks.submit_many(
                [tasks[n] for n in order],
                dependencies={tasks[n].id: [tasks[p].id for p in edges[n]] for n in range(size)},
            )
            await uow.commit()
        await assert_facts_hold(db)
        drained: list[int] = []
        while True:
            async with db.unit_of_work() as uow:
                claimed = await uow.tasks.claim_next("solo")
                if claimed is None:
                    break
                await uow.tasks.complete(claimed.id, "solo")
                await uow.commit()
            drained.append(int(claimed.title))
            await assert_facts_hold(db)
        async with db.unit_of_work() as uow:
            assert await uow.tasks.count(status=TaskStatus.COMPLETED) == size
        return drained

    drained = run_on(database_url, database_options, scenario)
    assert sorted(drained) == list(range(size))
    position = {node: index for index, node in enumerate(drained)}
    for node, prerequisites in edges.items():
        for prerequisite in prerequisites:
            assert position[prerequisite] < position[node]


def creates_cycle(accepted: set[tuple[int, int]], edge: tuple[int, int]) -> bool:
    """Would ``task -> prerequisite`` close a cycle among ``accepted`` edges?"""
    task, prerequisite = edge
    if task == prerequisite:
        return True
    stack, seen = [prerequisite], set()
    while stack:
        node = stack.pop()
        if node == task:
            return True
        if node in seen:
            continue
        seen.add(node)
        stack.extend(p for t, p in accepted if t == node)
    return False


@PROPERTY_SETTINGS
@given(case=edge_sequences())
def test_edges_closing_a_cycle_are_always_refused(
    database_url: str, database_options: dict[str, Any], case: tuple[int, list[tuple[int, int]]]
) -> None:
    size, edges = case

    async def scenario(
        db: Database,
    ) -> tuple[set[tuple[int, int]], int, set[tuple[str, str]], set[tuple[str, str]]]:
        async with db.unit_of_work() as uow:
            tasks = [
                await uow.tasks.add(Task(title=str(n), task_type="code", config={}))
                for n in range(size)
            ]
            await uow.commit()
        accepted: set[tuple[int, int]] = set()
        refused = 0
        for edge in edges:
            expected_cycle = creates_cycle(accepted, edge)
            async with db.unit_of_work() as uow:
                try:
                    await uow.tasks.add_dependency(tasks[edge[0]].id, tasks[edge[1]].id)
                except DependencyCycleError:
                    assert expected_cycle, f"{edge} refused but closes no cycle"
                    refused += 1
                    continue
                assert not expected_cycle, f"{edge} accepted but closes a cycle"
                await uow.commit()
            accepted.add(edge)
        await assert_facts_hold(db)
        async with db.unit_of_work() as uow:
            stored = {
                (row.task_id, row.depends_on_id)
                for row in (
                    await uow.session.execute(
                        select(TaskDependency.task_id, TaskDependency.depends_on_id)
                    )
                ).all()
            }
        expected = {(tasks[t].id, tasks[p].id) for t, p in accepted}
        return accepted, refused, stored, expected

    accepted, refused, stored, expected = run_on(database_url, database_options, scenario)
    assert refused >= 1, "the generated edges always contain a cycle"
    assert stored == expected
    for edge in accepted:
        assert not creates_cycle(accepted - {edge}, edge)


Operation = tuple[str, int, tuple[int, ...]]


@st.composite
def operations(draw: st.DrawFn) -> list[Operation]:
    """Operations on a growing graph; numbers pick tasks modulo how many exist."""
    kinds = st.sampled_from(["submit", "submit", "edge", "complete", "fail", "cancel", "delete"])
    return draw(
        st.lists(
            st.tuples(kinds, st.integers(0, 50), st.tuples(*[st.integers(0, 50)] * 2)),
            min_size=1,
            max_size=14,
        )
    )


@PROPERTY_SETTINGS
@given(ops=operations())
def test_the_dependency_facts_hold_whatever_happens(
    database_url: str, database_options: dict[str, Any], ops: list[Operation]
) -> None:
    async def apply(db: Database, ids: list[str], op: Operation) -> None:
        kind, number, more = op
        async with db.unit_of_work() as uow:
            if kind == "submit" or not ids:
                prerequisites = {ids[n % len(ids)] for n in more[: number % 3]} if ids else set()
                item = Task(title=str(len(ids)), task_type="code", config={}, max_retries=0)
                ids.append((await uow.tasks.submit(item, depends_on=prerequisites)).id)
            elif kind == "edge":
                await uow.tasks.add_dependency(ids[number % len(ids)], ids[more[0] % len(ids)])
            elif kind in ("complete", "fail"):
                claimed = await uow.tasks.claim_next("w")
                if claimed is None:
                    return
                if kind == "complete":
                    await uow.tasks.complete(claimed.id, "w")
                else:
                    await uow.tasks.fail(claimed.id, "w", "broken")
            elif kind == "cancel":
                await uow.tasks.cancel(ids[number % len(ids)])
            else:
                await uow.tasks.delete(ids.pop(number % len(ids)))
            await uow.commit()

    async def scenario(db: Database) -> None:
        ids: list[str] = []
        for op in ops:
            # Refused (nothing written) or not, the facts must hold.
            with contextlib.suppress(DependencyCycleError, InvalidTransitionError):
                await apply(db, ids, op)
            await assert_facts_hold(db)

    run_on(database_url, database_options, scenario)
