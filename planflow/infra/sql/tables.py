"""One declaration per table: its columns, and from them the SQL column lists, parameters and row mapping.

Adding a column means a migration, a model field and one ``Column`` line here, then
``python -m tools.generate_adapters``: the statements are derived from the declaration, and the parameter
builder (with the input rules of its kind) and the row mapper are written by the generator as straight-line
functions in :mod:`planflow.infra.sql.rows` (CI fails when they are stale).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Generic, Literal, TypeVar

from planflow.errors import ValidationError
from planflow.infra import inputs
from planflow.infra.sql import rows
from planflow.models import ComponentType, ExecutionType, TaskState, TaskStatus, WorkflowState

M = TypeVar("M")

Kind = Literal[
    "id",
    "optional_id",
    "text",
    "enum",
    "json",
    "usage",
    "version",
    "timestamp",
    "optional_timestamp",
    "priority",
    "count",
    "optional_count",
]
#: Columns that the repository sets on every write, never taken from the caller's model.
MANAGED = ("version", "created_at", "updated_at")
#: Columns that only the claims change (``tasks.claim``, ``heartbeat``, ``release``, ``fail``, ``cancel``), never an
#: upsert or an update of a caller's copy of the state: a stale copy written back must not move a lease, a holder
#: or the count of attempts.
CLAIMED = ("claimed_by", "lease_expires_at", "attempt")
#: Columns that only ``workflows.fork`` sets (and a verbatim import copies): an upsert keeps what is stored.
ORIGIN = ("forked_from",)


@dataclass(frozen=True, slots=True)
class Column:
    """A column: its name (the model field of the same name) and its kind, which decides how values are
    checked and converted on the way in and out."""

    name: str
    kind: Kind
    enum: type[Enum] | None = None


def enum_column(name: str, kind: type[Enum]) -> Column:
    """A column holding the value of an enum member."""
    return Column(name, "enum", kind)


@dataclass(frozen=True)
class Table(Generic[M]):
    """A table, the model its rows map to, and everything derived from its columns.

    Attributes:
        name: The table's name.
        model: The dataclass a row maps to; its fields named like columns take their values.
        key: The primary key column.
        columns: Every column, in the order of the SELECT list.
        from_row: ``from_row(row, load_ts) -> model``, reading a row selected in ``select_list`` order.
        params: ``params(model, json_param, ts_param) -> list``: the checked values of the ``written`` columns.
    """

    name: str
    model: type[M]
    key: str
    columns: tuple[Column, ...]
    from_row: Callable[[Sequence[Any], Callable[[Any], datetime]], M]
    params: Callable[[object, Callable[[str], object], Callable[[datetime], object]], list[object]]
    #: How a record of the table is called in error messages ("task 'x': ...").
    label: str = "record"
    #: Names of the columns a caller's model supplies (all but the managed and claimed ones), in table order.
    written: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        kept = (*MANAGED, *CLAIMED, *ORIGIN)
        object.__setattr__(self, "written", tuple(c.name for c in self.columns if c.name not in kept))

    @property
    def names(self) -> tuple[str, ...]:
        """Every column name, in SELECT order."""
        return tuple(c.name for c in self.columns)

    @property
    def select_list(self) -> str:
        """``a, b, c``: the columns as selected, in the order ``from_row`` reads them."""
        return ", ".join(self.names)

    def prefixed(self, alias: str) -> str:
        """The select list with every column qualified by ``alias``."""
        return ", ".join(f"{alias}.{name}" for name in self.names)

    @property
    def select(self) -> str:
        """``SELECT <every column> FROM <table>``."""
        return f"SELECT {self.select_list} FROM {self.name}"

    def column(self, name: str) -> Column:
        """The column called ``name``.

        Raises:
            ValidationError: the table has no such column (filters and orders name only real columns).
        """
        for column in self.columns:
            if column.name == name:
                return column
        raise ValidationError(f"{self.name} has no column {name!r}")

    def check_value(self, name: str, value: object) -> object:
        """``value`` checked and converted for comparing with column ``name`` (filters)."""
        column = self.column(name)
        if column.kind == "enum":
            assert column.enum is not None
            return inputs.check_enum(column.enum, value, name).value
        if column.kind in ("id", "optional_id"):
            return inputs.check_id(value, name)
        if column.kind == "text":
            return inputs.check_text(value, name)
        raise ValidationError(f"{self.name}.{name} cannot be compared for equality")


# The tables ----------------------------------------------------------------------------------------------

TASK_STATES: Table[TaskState] = Table(
    "task_states",
    TaskState,
    key="task_exec_id",
    label="task",
    from_row=rows.task_state_from_row,
    params=rows.task_state_params,
    columns=(
        Column("task_exec_id", "id"),
        Column("task_id", "id"),
        Column("workflow_exec_id", "id"),
        Column("workflow_id", "id"),
        enum_column("component", ComponentType),
        enum_column("status", TaskStatus),
        enum_column("execution_type", ExecutionType),
        Column("parent_state_id", "optional_id"),
        Column("agent_id", "optional_id"),
        Column("action_id", "optional_id"),
        Column("tool_id", "optional_id"),
        Column("input", "json"),
        Column("output", "json"),
        Column("error", "json"),
        Column("usage", "usage"),
        Column("version", "version"),
        Column("created_at", "timestamp"),
        Column("updated_at", "timestamp"),
        Column("claimed_by", "optional_id"),
        Column("lease_expires_at", "optional_timestamp"),
        Column("priority", "priority"),
        Column("run_after", "optional_timestamp"),
        Column("attempt", "count"),
        Column("max_attempts", "optional_count"),
        Column("concurrency_key", "optional_id"),
        Column("dedup_key", "optional_id"),
        Column("last_error", "json"),
    ),
)

WORKFLOW_STATES: Table[WorkflowState] = Table(
    "workflow_states",
    WorkflowState,
    key="workflow_exec_id",
    label="workflow",
    from_row=rows.workflow_state_from_row,
    params=rows.workflow_state_params,
    columns=(
        Column("workflow_exec_id", "id"),
        Column("workflow_id", "id"),
        enum_column("status", TaskStatus),
        Column("usage", "usage"),
        Column("input", "json"),
        Column("output", "json"),
        Column("error", "json"),
        Column("version", "version"),
        Column("created_at", "timestamp"),
        Column("updated_at", "timestamp"),
        Column("forked_from", "optional_id"),
    ),
)
