"""The calculated priority (pure functions; the queue's use of it is in
test_agent_tasks): its range, its strict monotonicity in each component,
and when a score falls due for a recomputation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator_db import TaskSource
from orchestrator_db.models import priority
from orchestrator_db.values import MAX_INSTANT, MIN_INSTANT

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SOURCES = list(TaskSource)

bases = st.integers(0, 10)
depths = st.integers(0, 10_000_000)
blockings = st.integers(0, 10_000_000)
estimates = st.none() | st.integers(1, 10 * 365 * 86_400)
# Deadlines anywhere the column can hold, at whole seconds.
instants = st.integers(
    int((MIN_INSTANT - NOW).total_seconds()) + 1, int((MAX_INSTANT - NOW).total_seconds()) - 1
).map(lambda offset: NOW + timedelta(seconds=offset))
deadlines = st.none() | instants


def score(**changes: Any) -> float:
    values: dict[str, Any] = {
        "priority": 5,
        "depth": 0,
        "blocking": 0,
        "source": TaskSource.HUMAN,
        "deadline": None,
        "estimated_seconds": None,
        "now": NOW,
    }
    values.update(changes)
    return priority.calculated_priority(**values)


@st.composite
def tasks(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "priority": draw(bases),
        "depth": draw(depths),
        "blocking": draw(blockings),
        "source": draw(st.sampled_from(SOURCES)),
        "deadline": draw(deadlines),
        "estimated_seconds": draw(estimates),
    }


@given(tasks())
def test_every_score_lies_between_0_and_100(task: dict[str, Any]) -> None:
    assert 0.0 <= score(**task) <= 100.0


@given(tasks(), st.integers(0, 9))
def test_a_higher_base_priority_ranks_strictly_higher(task: dict[str, Any], base: int) -> None:
    assert score(**{**task, "priority": base + 1}) > score(**{**task, "priority": base})


@given(tasks(), st.integers(0, 10_000_000 - 1))
def test_a_deeper_task_ranks_strictly_higher(task: dict[str, Any], depth: int) -> None:
    assert score(**{**task, "depth": depth + 1}) > score(**{**task, "depth": depth})


@given(tasks(), st.integers(0, 10_000_000 - 1))
def test_blocking_more_tasks_ranks_strictly_higher(task: dict[str, Any], blocking: int) -> None:
    assert score(**{**task, "blocking": blocking + 1}) > score(**{**task, "blocking": blocking})


@given(tasks(), instants, st.integers(1, 10**9))
def test_a_nearer_deadline_ranks_strictly_higher(
    task: dict[str, Any], deadline: datetime, earlier_by: int
) -> None:
    if (deadline - MIN_INSTANT).total_seconds() <= earlier_by + 1:
        nearer = MIN_INSTANT + timedelta(seconds=1)  # as near as the column goes
        if nearer >= deadline:
            return
    else:
        nearer = deadline - timedelta(seconds=earlier_by)
    assert score(**{**task, "deadline": nearer}) > score(**{**task, "deadline": deadline})


@given(tasks(), instants)
def test_any_deadline_ranks_above_none(task: dict[str, Any], deadline: datetime) -> None:
    assert score(**{**task, "deadline": deadline}) > score(**{**task, "deadline": None})


@given(tasks(), st.integers(0, len(SOURCES) - 2))
def test_a_human_source_ranks_strictly_higher(task: dict[str, Any], index: int) -> None:
    # Sources are declared from people to implementation agents.
    higher, lower = SOURCES[index], SOURCES[index + 1]
    assert score(**{**task, "source": higher}) > score(**{**task, "source": lower})


def test_the_documented_points() -> None:
    assert score(priority=0, source=TaskSource.AGENT_IMPLEMENTATION) == pytest.approx(1.25)
    assert priority.depth_score(4) == pytest.approx(50.0)
    assert priority.blocking_score(10) == pytest.approx(44.4, abs=0.05)
    assert priority.urgency_score(0) == pytest.approx(50.0)
    assert priority.urgency_score(3600) == pytest.approx(29.5, abs=0.05)
    assert priority.urgency_score(-3600) == pytest.approx(70.5, abs=0.05)
    assert priority.urgency_score(None) == 0.0
    top = score(
        priority=10,
        depth=10**9,
        blocking=10**9,
        deadline=MIN_INSTANT + timedelta(days=1),
    )
    assert 95.0 < top <= 100.0


@given(deadlines, estimates)
def test_a_score_falls_due_when_its_urgency_has_moved_by_the_tolerance(
    deadline: datetime | None, estimate: int | None
) -> None:
    due = priority.reprioritize_at(deadline, estimate, NOW)
    if deadline is None:
        assert due is None
        return
    if due is None:  # urgency has (all but) stopped growing
        late = priority.urgency_score(priority.slack_seconds(deadline, estimate, MAX_INSTANT))
        now = priority.urgency_score(priority.slack_seconds(deadline, estimate, NOW))
        assert late - now <= priority.TOLERANCE / priority.URGENCY_WEIGHT + 1e-6
        return
    assert due > NOW

    def urgency(at: datetime) -> float:
        slack = priority.slack_seconds(deadline, estimate, at)
        return priority.URGENCY_WEIGHT * priority.urgency_score(slack)

    # Not before: just short of it, the score is still within the tolerance.
    before = max(NOW, due - timedelta(milliseconds=2))
    assert urgency(before) - urgency(NOW) <= priority.TOLERANCE + 1e-9
    # ... and once due, it has moved by (about) the tolerance.
    assert urgency(due) - urgency(NOW) >= priority.TOLERANCE * 0.999
