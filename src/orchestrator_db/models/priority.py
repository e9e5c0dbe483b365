"""The calculated priority of a task: the claim key of the work queue.

Claims take ready tasks by ``calculated_priority`` (highest first), then
oldest, then id. The score weighs five things, each scored from 0 to 100,
so the score is between 0 and 100 too:

=====================  ======  ===============================================
component              weight  score
=====================  ======  ===============================================
base priority          30 %    ``10 * priority`` (priority 0..10)
dependency depth       25 %    ``100 * d / (d + 4)``: 0, 20, 33, 50 at depth 4,
                               80 at 16, approaching 100
deadline urgency       25 %    see below; 0 without a deadline
blocking impact        15 %    ``100 * L / (L + 3)`` with ``L = ln(1 + b)``, b the
                               unfinished tasks that transitively wait on this
                               one: 0, 19 for one, 44 for ten, 61 for a hundred,
                               82 for a million
source                 5 %     human 100, agent_requirements 75,
                               agent_planner 50, agent_implementation 25
=====================  ======  ===============================================

**Urgency** looks at the slack ``s``: the time left before the deadline minus
the estimated duration (0 when unknown), in units of ``H`` = one hour. With
time to spare (``s >= 0``) it is ``50 / (1 + ln(1 + s))``: 50 with no slack,
29.5 with an hour, 11.9 with a day, 6.6 with a month. Late, or unable to
finish in time (``s < 0``), it is ``100 - 50 / (1 + ln(1 - s))``: 50 just
late, 70.5 an hour late, approaching 100. A task without a deadline scores
0, as a deadline infinitely far away would.

Every component is strictly monotonic, so with everything else equal, a
higher base priority, a deeper task, a task blocking more others, a nearer
deadline and a human source each rank strictly higher. In double precision
that stays true for depths and blocking counts below ten million, and for
deadlines that differ by a second or more anywhere between the years 1 and
9999 (the growth of the logarithm is what keeps far deadlines apart).

Urgency changes with time; the other components change only when the task
or its dependency graph does, and the package recomputes the score then.
The time-dependent part is refreshed by ``uow.tasks.reprioritize()``, which
recomputes the tasks whose stored score has fallen behind by more than
:data:`TOLERANCE`: each task stores when that happens (``reprioritize_at``,
computed here), so a call does work only for the tasks that need it.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator_db.types import utc_now
from orchestrator_db.values import MAX_INSTANT

#: Weights of the components; they sum to 1.
BASE_WEIGHT = 0.30
DEPTH_WEIGHT = 0.25
URGENCY_WEIGHT = 0.25
BLOCKING_WEIGHT = 0.15
SOURCE_WEIGHT = 0.05

#: Urgency's unit of slack.
URGENCY_HORIZON_SECONDS = 3600.0
#: How far (in score points, of 100) a stored score may fall behind the
#: clock before ``reprioritize()`` recomputes it.
TOLERANCE = 0.01

#: Source scores by ``TaskSource`` value.
SOURCE_SCORES: dict[str, float] = {
    "human": 100.0,
    "agent_requirements": 75.0,
    "agent_planner": 50.0,
    "agent_implementation": 25.0,
}


def depth_score(depth: int) -> float:
    return 100.0 * depth / (depth + 4)


def blocking_score(blocking: int) -> float:
    spread = math.log1p(blocking)
    return 100.0 * spread / (spread + 3.0)


def urgency_score(slack_seconds: float | None) -> float:
    """Urgency for ``slack_seconds`` to spare (negative: late); 0 for ``None``."""
    if slack_seconds is None:
        return 0.0
    slack = slack_seconds / URGENCY_HORIZON_SECONDS
    if slack >= 0:
        return 50.0 / (1.0 + math.log1p(slack))
    return 100.0 - 50.0 / (1.0 + math.log1p(-slack))


def slack_seconds(
    deadline: datetime | None, estimated_seconds: int | None, now: datetime
) -> float | None:
    """Seconds to spare before ``deadline``, after the estimated duration."""
    if deadline is None:
        return None
    return (deadline - now).total_seconds() - (estimated_seconds or 0)


def _source_value(source: Any) -> str:
    return str(getattr(source, "value", source))


@functools.lru_cache(maxsize=4096)
def _static_part(priority: int, depth: int, blocking: int, source: str) -> float:
    """Everything but urgency, weighted (cached: few combinations recur)."""
    return (
        BASE_WEIGHT * 10.0 * priority
        + DEPTH_WEIGHT * depth_score(depth)
        + BLOCKING_WEIGHT * blocking_score(blocking)
        + SOURCE_WEIGHT * SOURCE_SCORES.get(source, 0.0)
    )


def calculated_priority(
    *,
    priority: int,
    depth: int,
    blocking: int,
    source: Any,
    deadline: datetime | None,
    estimated_seconds: int | None,
    now: datetime,
) -> float:
    """The score of the module's table, from 0 to 100."""
    static = _static_part(priority, depth, blocking, _source_value(source))
    if deadline is None:
        return static
    return static + URGENCY_WEIGHT * urgency_score(slack_seconds(deadline, estimated_seconds, now))


def _slack_for_urgency(urgency: float) -> float | None:
    """The slack (seconds) at which urgency reaches ``urgency`` (the inverse
    of :func:`urgency_score`); ``None`` if it never does."""
    try:
        if urgency <= 50.0:
            return URGENCY_HORIZON_SECONDS * math.expm1(50.0 / urgency - 1.0)
        if urgency >= 100.0:
            return None
        return -URGENCY_HORIZON_SECONDS * math.expm1(50.0 / (100.0 - urgency) - 1.0)
    except OverflowError:
        return None


def reprioritize_at(
    deadline: datetime | None, estimated_seconds: int | None, now: datetime
) -> datetime | None:
    """When the urgency part of a score computed at ``now`` will have grown
    by :data:`TOLERANCE` points: the score is due for a recomputation then.
    ``None`` when it never will (no deadline; or so late that urgency has
    all but reached 100)."""
    slack = slack_seconds(deadline, estimated_seconds, now)
    if slack is None:
        return None
    target = urgency_score(slack) + TOLERANCE / URGENCY_WEIGHT
    then = _slack_for_urgency(target)
    if then is None:
        return None
    wait = slack - then
    if not wait > 0 or wait > (MAX_INSTANT - now).total_seconds():
        return None
    # Rounded up to the millisecond the column keeps: never early.
    return now + timedelta(milliseconds=math.ceil(wait * 1000.0))


def score_of(row: Any, now: datetime, *, depth: int | None = None) -> float:
    """The score of a task (an object or a row with the task's columns),
    with ``depth`` instead of its stored depth if given."""
    return calculated_priority(
        priority=row.priority,
        depth=row.dependency_depth if depth is None else depth,
        blocking=row.blocking_count,
        source=row.source,
        deadline=row.deadline,
        estimated_seconds=row.estimated_duration_seconds,
        now=now,
    )


def initial_priority(context: Any) -> float:
    """Column default of ``calculated_priority``: the score of the row being
    inserted, from its own values (or their defaults)."""
    row = context.get_current_parameters()
    deadline = row.get("deadline")
    return calculated_priority(
        priority=_given(row, "priority", 5),
        depth=_given(row, "dependency_depth", 0),
        blocking=_given(row, "blocking_count", 0),
        source=_given(row, "source", "human"),
        deadline=deadline,
        estimated_seconds=row.get("estimated_duration_seconds"),
        # The clock is read only where it counts (a bulk insert asks per row).
        now=utc_now() if deadline is not None else _NO_CLOCK,
    )


#: ``now`` for a score without a deadline, which does not depend on it.
_NO_CLOCK = datetime.min.replace(tzinfo=UTC)


def initial_reprioritize_at(context: Any) -> datetime | None:
    """Column default of ``reprioritize_at``, to go with :func:`initial_priority`."""
    row = context.get_current_parameters()
    deadline = row.get("deadline")
    if deadline is None:
        return None
    return reprioritize_at(deadline, row.get("estimated_duration_seconds"), utc_now())


def _given(row: Any, name: str, default: Any) -> Any:
    value = row.get(name)
    return default if value is None else value
