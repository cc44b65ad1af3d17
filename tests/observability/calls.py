"""Every method of every repository Protocol, called with arguments built from its signature.

The arguments come from the annotations (and, for ids, the parameter names), so a method added to a Protocol is
called with no edit here; a call whose made-up arguments are refused still proves what the tests ask: that the
call was reported (a listener hears of failed calls too).
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import planflow.protocols
from planflow import (
    RetryPolicy,
    TaskDefinition,
    TaskExecution,
    TaskOccurrence,
    TaskState,
    TaskStatus,
    UsageEntry,
    UsageSummary,
    WorkflowState,
)

#: Repository Protocol -> the provider's attribute serving it.
ATTRIBUTES = {
    "TaskRepository": "tasks",
    "WorkflowRepository": "workflows",
    "AuthRepository": "auth",
    "ExecutionRepository": "executions",
    "MetadataRepository": "metadata",
}

_numbers = itertools.count()


def repository_protocols() -> dict[str, type]:
    """The synchronous repository Protocols of ``planflow.protocols``, found by introspection."""
    return {
        name: member
        for name, member in vars(planflow.protocols).items()
        if inspect.isclass(member)
        and name.endswith("Repository")
        and not name.startswith("Async")
        and getattr(member, "_is_protocol", False)
    }


def public_methods(protocol: type) -> list[str]:
    return [n for n, m in vars(protocol).items() if not n.startswith("_") and inspect.isfunction(m)]


class World:
    """Records the calls refer to: one workflow with one task, and one add-on task definition."""

    def __init__(self) -> None:
        n = next(_numbers)
        self.workflow = f"obs-wf-{n}"
        self.task = f"obs-tx-{n}"
        self.definition = f"obs-def-{n}"
        self.occurrence = f"obs-occ-{n}"

    def state(self) -> TaskState:
        return TaskState(f"obs-tx-{next(_numbers)}", "t", self.workflow, "wf")

    def value(self, name: str, annotation: str) -> object:
        now = datetime.now(UTC)
        if annotation == "str":
            if name in ("workflow_exec_id",):
                return self.workflow
            if name in ("task_exec_id", "parent_state_id", "root_state_id"):
                return self.task
            if name in ("task_id",):
                return self.definition
            if name in ("occurrence_id",):
                return self.occurrence
            if name == "email":
                return f"obs-{next(_numbers)}@example.com"
            return f"obs-{name}"
        table: dict[str, Callable[[], object]] = {
            "int": lambda: 1,
            "float": lambda: 0.01,
            "float | timedelta": lambda: 30.0,
            "datetime": lambda: now,
            "datetime | None": lambda: now,
            "TaskStatus": lambda: TaskStatus.PENDING,
            "UsageSummary": lambda: UsageSummary.of([UsageEntry("openai", "gpt", prompt_tokens=1)]),
            "TaskState": self.state,
            "WorkflowState": lambda: WorkflowState(f"obs-wf-{next(_numbers)}", "wf"),
            "Iterable[TaskState]": lambda: [self.state()],
            "Iterable[WorkflowState]": lambda: [WorkflowState(f"obs-wf-{next(_numbers)}", "wf")],
            "Sequence[str]": lambda: [self.task],
            "TaskDefinition": lambda: TaskDefinition(
                self.definition, "title", None, None, now, None, "low", [], RetryPolicy(1)
            ),
            "TaskOccurrence": lambda: TaskOccurrence(self.occurrence, self.definition, now, None, None),
            "TaskExecution": lambda: TaskExecution(self.occurrence, "pending", 1),
        }
        make = table.get(annotation)
        return make() if make is not None else [] if annotation.startswith("Iterable[") else None

    def arguments(self, member: Callable[..., Any]) -> tuple[list[object], dict[str, object]]:
        """Positional and keyword arguments for every parameter without a default."""
        args: list[object] = []
        kwargs: dict[str, object] = {}
        for param in list(inspect.signature(member).parameters.values())[1:]:
            if param.default is not inspect.Parameter.empty:
                continue
            value = self.value(param.name, str(param.annotation))
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                kwargs[param.name] = value
            else:
                args.append(value)
        return args, kwargs


def call_sync(repository: object, protocol: type, name: str, world: World) -> None:
    """Call one method; consume an iterator, enter a context manager; swallow what it raises."""
    args, kwargs = world.arguments(vars(protocol)[name])
    try:
        result = getattr(repository, name)(*args, **kwargs)
        if isinstance(result, Iterator):
            list(result)  # pyright: ignore[reportUnknownArgumentType]
        elif hasattr(result, "__enter__"):
            with result:
                pass
    except Exception:
        pass


async def call_async(repository: object, protocol: type, name: str, world: World) -> None:
    """The asynchronous twin of :func:`call_sync`."""
    args, kwargs = world.arguments(vars(protocol)[name])
    try:
        result = getattr(repository, name)(*args, **kwargs)
        if hasattr(result, "__anext__"):
            async for _ in result:
                pass
        elif hasattr(result, "__aenter__"):
            async with result:
                pass
        else:
            await result
    except Exception:
        pass
