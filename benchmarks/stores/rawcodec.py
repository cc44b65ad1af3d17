"""Hand-written conversions of the variants that are not planflow: the code a careful user writes.

They produce exactly what planflow stores and returns (the same JSON, the same ``TaskState`` objects) but
skip planflow's input validation, which is part of what planflow is measured to cost. The raw variants use
all of it; the SQLAlchemy variant the usage and paging helpers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from planflow import (
    ComponentType,
    ConflictError,
    ExecutionType,
    NotFoundError,
    PlanflowError,
    TaskState,
    TaskStatus,
    UsageEntry,
    UsageSummary,
)
from planflow.models import JsonObject

dumps = partial(json.dumps, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
loads = json.loads

STATUS = {member.value: member for member in TaskStatus}
EXECUTION_TYPE = {member.value: member for member in ExecutionType}
COMPONENT = {member.value: member for member in ComponentType}


def now() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """planflow's SQLite timestamp text: fixed-width UTC ISO."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def json_text(value: JsonObject | None) -> str | None:
    """A JSON object column as text (``None`` stays NULL)."""
    return None if value is None else dumps(value)


def usage_items(usage: UsageSummary | None) -> list[dict[str, Any]] | None:
    """A usage summary as planflow stores it: a list of entry objects (``None`` stays NULL)."""
    if usage is None:
        return None
    return [
        {
            "provider": e.provider,
            "model": e.model,
            "source": e.source,
            "prompt_tokens": e.prompt_tokens,
            "completion_tokens": e.completion_tokens,
            "total_tokens": e.total_tokens,
            "cached_tokens": e.cached_tokens,
            "reasoning_tokens": e.reasoning_tokens,
        }
        for e in usage.entries
    ]


def usage_text(usage: UsageSummary | None) -> str | None:
    """A usage summary as JSON text."""
    return None if usage is None else dumps(usage_items(usage))


def usage_from_items(items: list[dict[str, Any]] | None) -> UsageSummary | None:
    """A usage summary from the parsed JSON list."""
    if items is None:
        return None
    return UsageSummary(
        tuple(
            [
                UsageEntry(
                    item["provider"],
                    item["model"],
                    item["source"],
                    item["prompt_tokens"],
                    item["completion_tokens"],
                    item["total_tokens"],
                    item.get("cached_tokens", 0),
                    item.get("reasoning_tokens", 0),
                )
                for item in items
            ]
        )
    )


def state_from_row(r: Sequence[Any], load_ts: Callable[[Any], datetime]) -> TaskState:
    """A TaskState from a row selected in planflow's column order, JSON columns as text."""
    return TaskState(
        r[0],
        r[1],
        r[2],
        r[3],
        COMPONENT[r[4]],
        STATUS[r[5]],
        EXECUTION_TYPE[r[6]],
        r[7],
        r[8],
        r[9],
        r[10],
        None if r[11] is None else loads(r[11]),
        None if r[12] is None else loads(r[12]),
        None if r[13] is None else loads(r[13]),
        None if r[14] is None else usage_from_items(loads(r[14])),
        r[15],
        load_ts(r[16]),
        load_ts(r[17]),
        r[18],
        None if r[19] is None else load_ts(r[19]),
        r[20],
        None if r[21] is None else load_ts(r[21]),
        r[22],
        r[23],
        r[24],
        r[25],
        None if r[26] is None else loads(r[26]),
    )


#: Where a tree query's depth column stands: after the state's columns.
DEPTH_AT = 27


def values(
    s: TaskState,
    json_value: Callable[[JsonObject | None], object],
    usage_value: Callable[[UsageSummary | None], object],
    ts_value: Callable[[datetime], object],
) -> list[object]:
    """The 21 written columns of a state in planflow's order, JSON through the driver's adapters (the claim
    columns, ``attempt`` among them, are written by claims only)."""
    return [
        s.task_exec_id,
        s.task_id,
        s.workflow_exec_id,
        s.workflow_id,
        s.component.value,
        s.status.value,
        s.execution_type.value,
        s.parent_state_id,
        s.agent_id,
        s.action_id,
        s.tool_id,
        json_value(s.input),
        json_value(s.output),
        json_value(s.error),
        usage_value(s.usage),
        s.priority,
        None if s.run_after is None else ts_value(s.run_after),
        s.max_attempts,
        s.concurrency_key,
        s.dedup_key,
        json_value(s.last_error),
    ]


def write_failure(task_exec_id: str, found: Sequence[Any] | None, expected_version: int) -> PlanflowError:
    """What a versioned update that changed nothing means: the state is missing, or at another version."""
    if found is None:
        return NotFoundError(f"task state {task_exec_id!r} not found")
    return ConflictError(
        f"task state {task_exec_id!r} is at version {found[0]}, expected {expected_version}",
        expected=expected_version,
        actual=found[0],
    )


def page(items: list[TaskState], limit: int) -> tuple[list[TaskState], tuple[datetime, str] | None]:
    """A keyset page from ``limit + 1`` fetched states: the first ``limit`` and the cursor after them."""
    if len(items) <= limit:
        return items, None
    items.pop()
    last = items[-1]
    assert last.created_at is not None
    return items, (last.created_at, last.task_exec_id)
