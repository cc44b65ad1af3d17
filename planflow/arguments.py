"""The argument types of the repository Protocols: each one names the input rule its values must meet.

They are the plain types to a type checker (``Id`` is a ``str``, ``Count`` an ``int``); the rule rides along
as ``typing.Annotated`` metadata, from which the checks of every public method are generated
(``tools/generate_adapters.py``), so that a value is checked by its type, not by the name of its parameter.
The rules themselves (and their messages) are in ``planflow.infra.inputs``:

- ``Id``: a non-empty ``str`` of at most 512 characters, without NUL or a lone surrogate.
- ``Email``: an ``Id``-like text with an ``@``, at most 320 characters.
- ``Text``: any ``str`` without NUL or a lone surrogate (a metadata value).
- ``Cursor``: the ``next_cursor`` of a previous page.
- ``Count``: an ``int`` within 1..2**31-1 (a limit, a batch size, a depth).
- ``Version``: an ``int`` within 0..2**31-1.
- ``Lease``: a positive, finite number of seconds, or a ``timedelta``, of at most a year.
- ``Timeout``: zero, or a positive, finite number of seconds.
- ``Past``: an aware ``datetime`` not in the future.
- ``Delay``: zero, or a positive, finite number of seconds (or a ``timedelta``) of at most a year.
- ``ErrorObject``: a JSON object (what a failed attempt reports).
- ``Size``: an ``int`` within 0..2**31-1 (a concurrency limit).
- ``Rate``: ``(count, per_seconds)``: a ``Size`` and a positive number of seconds of at most a year.
- ``Usage``: a ``UsageSummary`` of ``UsageEntry`` values with text names of at most 512 characters and
  non-negative ``int`` counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, TypeAlias

from planflow.models import JsonObject, UsageSummary


@dataclass(frozen=True, slots=True)
class Rule:
    """The input rule of an argument type: the name of its check in ``planflow.infra.inputs``."""

    check: str


Id: TypeAlias = Annotated[str, Rule("check_id")]
Email: TypeAlias = Annotated[str, Rule("check_email")]
Text: TypeAlias = Annotated[str, Rule("check_text")]
Cursor: TypeAlias = Annotated[str, Rule("check_cursor")]
Count: TypeAlias = Annotated[int, Rule("check_limit")]
Version: TypeAlias = Annotated[int, Rule("check_version")]
Lease: TypeAlias = Annotated[float | timedelta, Rule("check_lease")]
Timeout: TypeAlias = Annotated[float, Rule("check_timeout")]
Past: TypeAlias = Annotated[datetime, Rule("check_past")]
Usage: TypeAlias = Annotated[UsageSummary, Rule("check_usage")]
HistoryId: TypeAlias = Annotated[int, Rule("check_history_id")]
Delay: TypeAlias = Annotated[float | timedelta, Rule("check_delay")]
ErrorObject: TypeAlias = Annotated[JsonObject, Rule("check_json_object")]
Size: TypeAlias = Annotated[int, Rule("check_size")]
Rate: TypeAlias = Annotated[tuple[int, float], Rule("check_rate")]

__all__ = [
    "Count",
    "Cursor",
    "Delay",
    "Email",
    "ErrorObject",
    "HistoryId",
    "Id",
    "Lease",
    "Past",
    "Rate",
    "Rule",
    "Size",
    "Text",
    "Timeout",
    "Usage",
    "Version",
]
