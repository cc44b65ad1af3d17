"""Hand-written conversions of the raw variants: the code a careful user writes around a bare driver.

They produce exactly what planflow stores and returns (the same JSON text, the same ``TaskState`` objects)
but skip planflow's input validation, which is part of what planflow is measured to cost.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from typing import Any

from planflow import ComponentType, ExecutionType, TaskStatus, UsageEntry, UsageSummary
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


def usage_text(usage: UsageSummary | None) -> str | None:
    """A usage summary as planflow stores it: a JSON list of entry objects."""
    if usage is None:
        return None
    return dumps(
        [
            {
                "provider": e.provider,
                "model": e.model,
                "source": e.source,
                "prompt_tokens": e.prompt_tokens,
                "completion_tokens": e.completion_tokens,
                "total_tokens": e.total_tokens,
            }
            for e in usage.entries
        ]
    )


def usage_from_items(items: list[dict[str, Any]] | None) -> UsageSummary | None:
    """A usage summary from the parsed JSON list."""
    if items is None:
        return None
    return UsageSummary(tuple(UsageEntry(**item) for item in items))
