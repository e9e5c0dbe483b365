"""The dependency facts of tasks, computed on a graph held in memory.

A graph is given as ``prerequisites``: task id -> the ids it waits for.
The package keeps three facts on each task (see
:class:`~orchestrator_db.models.task.Task`); these functions compute them
for the part of the graph a change touches (``orchestrator_db.task_graph``)
or for all of it (revision 0004 filling in existing rows):

* ``dependency_depth``: 0 without prerequisites, else 1 + the deepest one;
* ``dependency_type``: parallel when two or more prerequisites are
  independent (none reaches another), else sequential;
* ``blocking_count``: how many unfinished tasks wait for the task,
  transitively, through unfinished tasks only (a finished task in between
  no longer holds anyone back).

Nothing here recurses: graphs may be deep.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from orchestrator_db.errors import DependencyCycleError
from orchestrator_db.models.task import DependencyType

Graph = Mapping[str, Sequence[str]]


def prerequisites_first(graph: Graph, nodes: Iterable[str]) -> list[str]:
    """``nodes`` and everything they reach in ``graph``, each after its
    prerequisites; :class:`DependencyCycleError` if they reach a cycle."""
    order: list[str] = []
    done: set[str] = set()
    path: set[str] = set()  # the nodes on the current walk
    for root in nodes:
        if root in done:
            continue
        stack = [(root, iter(graph.get(root, ())))]
        done.add(root)
        path.add(root)
        while stack:
            node, pending = stack[-1]
            following = next(pending, None)
            if following is None:
                stack.pop()
                path.discard(node)
                order.append(node)
            elif following in path:
                raise DependencyCycleError(node, following)
            elif following not in done:
                done.add(following)
                path.add(following)
                stack.append((following, iter(graph.get(following, ()))))
    return order


def depths(graph: Graph, nodes: Collection[str], known: Mapping[str, int]) -> dict[str, int]:
    """``dependency_depth`` of ``nodes``; ``known`` gives the depth of any
    prerequisite that is not one of ``nodes``."""
    wanted = set(nodes)
    found: dict[str, int] = {}
    for node in prerequisites_first(graph, nodes):
        if node not in wanted:
            continue
        deepest = -1
        for prerequisite in graph.get(node, ()):
            depth = found[prerequisite] if prerequisite in found else known.get(prerequisite, 0)
            deepest = max(deepest, depth)
        found[node] = deepest + 1
    return found


def dependency_type(
    prerequisites: Sequence[str], ancestors: Mapping[str, Collection[str]]
) -> DependencyType:
    """``parallel`` if there are two or more ``prerequisites`` and none is
    among another's ``ancestors`` (every task it waits for, transitively)."""
    if len(prerequisites) < 2:
        return DependencyType.SEQUENTIAL
    chosen = set(prerequisites)
    for prerequisite in prerequisites:
        if chosen.intersection(ancestors.get(prerequisite, ())):
            return DependencyType.SEQUENTIAL
    return DependencyType.PARALLEL


def ancestors(
    graph: Graph, nodes: Iterable[str], known: Mapping[str, frozenset[str]] | None = None
) -> dict[str, frozenset[str]]:
    """Every task each of ``nodes`` waits for, transitively (and those of
    the tasks on the way); ``known`` gives them for tasks outside ``graph``."""
    found: dict[str, frozenset[str]] = {}
    for node in prerequisites_first(graph, nodes):
        if known is not None and node in known and node not in graph:
            found[node] = known[node]
            continue
        reached: set[str] = set()
        for prerequisite in graph.get(node, ()):
            reached.add(prerequisite)
            reached.update(found[prerequisite])
        found[node] = frozenset(reached)
    return found


def blocking_counts(graph: Graph, unfinished: Collection[str]) -> dict[str, int]:
    """``blocking_count`` of every unfinished task of ``graph`` that anyone
    waits for (the others are 0)."""
    holding: dict[str, frozenset[str]] = {}  # unfinished ancestors, through unfinished
    counts: dict[str, int] = {}
    for node in prerequisites_first(graph, [n for n in graph if n in unfinished]):
        if node not in unfinished:
            continue
        reached: set[str] = set()
        for prerequisite in graph.get(node, ()):
            if prerequisite in unfinished:
                reached.add(prerequisite)
                reached.update(holding[prerequisite])
        holding[node] = frozenset(reached)
        for ancestor in reached:
            counts[ancestor] = counts.get(ancestor, 0) + 1
    return counts
