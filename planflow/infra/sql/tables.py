"""One declaration per table: its columns, and from them the SQL column lists, parameters and row mapping.

Adding a column means a migration, a model field and one ``Column`` line here: the statements, the parameter
builder (with the input rules of its kind) and the row mapper are derived from the declaration. The builder
and the mapper are generated as straight-line source when the table is declared (as ``dataclasses`` does for
``__init__``), because they run once per row written or read: a loop over columns with a converter call each
costs twice as much.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import Any, Generic, Literal, TypeVar

from planflow.errors import ValidationError
from planflow.infra import inputs
from planflow.infra.sql.codec import dump_usage, load_usage, loads
from planflow.models import ComponentType, ExecutionType, TaskState, TaskStatus, WorkflowState

M = TypeVar("M")

Kind = Literal[
    "id", "optional_id", "text", "enum", "json", "usage", "version", "timestamp", "optional_timestamp"
]
#: Columns that the repository sets on every write, never taken from the caller's model.
MANAGED = ("version", "created_at", "updated_at")
#: Columns that only the claims change (``tasks.claim``, ``heartbeat``, ``release``), never an upsert or an update
#: of a caller's copy of the state: a stale copy written back must not move a lease or a holder.
CLAIMED = ("claimed_by", "lease_expires_at")


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
    """

    name: str
    model: type[M]
    key: str
    columns: tuple[Column, ...]
    #: How a record of the table is called in error messages ("task 'x': ...").
    label: str = "record"
    #: Names of the columns a caller's model supplies (all but the managed and claimed ones), in table order.
    written: tuple[str, ...] = field(init=False)
    from_row: Callable[[Sequence[Any], Callable[[Any], datetime]], M] = field(init=False)
    params: Callable[[M, Callable[[str], object], Callable[[datetime], object]], list[object]] = field(
        init=False
    )

    def __post_init__(self) -> None:
        kept = (*MANAGED, *CLAIMED)
        object.__setattr__(self, "written", tuple(c.name for c in self.columns if c.name not in kept))
        object.__setattr__(self, "from_row", _row_mapper(self))
        object.__setattr__(self, "params", _param_builder(self))

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


def _json_or_none(json_param: Callable[[str], object], text: str | None) -> object:
    return None if text is None else json_param(text)


_LOADERS = {
    "json": "None if {v} is None else loads({v})",
    "usage": "None if {v} is None else load_usage({v})",
    "timestamp": "load_ts({v})",
    "optional_timestamp": "None if {v} is None else load_ts({v})",
    "enum": "{enum}[{v}]",
}

_WRITERS = {
    "id": "check_id(s.{n}, {n!r})",
    "optional_id": "check_optional_id(s.{n}, {n!r})",
    "text": "check_text(s.{n}, {n!r})",
    "enum": "check_enum({enum}, s.{n}, {n!r}).value",
    "json": "json_or_none(json_param, dump_json_object(s.{n}, {n!r}))",
    "usage": "json_or_none(json_param, dump_usage(s.{n}, {n!r}))",
    "timestamp": "ts_param(check_aware(s.{n}, {n!r}))",
    "optional_timestamp": "None if s.{n} is None else ts_param(check_aware(s.{n}, {n!r}))",
}


def _namespace(table: Table[Any]) -> dict[str, object]:
    namespace: dict[str, object] = {
        "Model": table.model,
        "loads": loads,
        "load_usage": load_usage,
        "dump_usage": dump_usage,
        "json_or_none": _json_or_none,
        "ValidationError": ValidationError,
        "short": reprlib.repr,
        "wrong_type": inputs.wrong_type,
        "check_id": inputs.check_id,
        "check_optional_id": inputs.check_optional_id,
        "check_text": inputs.check_text,
        "check_enum": inputs.check_enum,
        "check_aware": inputs.check_aware,
        "dump_json_object": inputs.dump_json_object,
    }
    for column in table.columns:
        if column.enum is not None:
            namespace[f"enum_{column.name}"] = column.enum
            namespace[f"lookup_{column.name}"] = {member.value: member for member in column.enum}
    return namespace


def _compile(source: str, name: str, namespace: dict[str, object]) -> Any:
    exec(compile(source, f"<planflow table {name}>", "exec"), namespace)
    return namespace[name]


def _row_mapper(table: Table[M]) -> Callable[[Sequence[Any], Callable[[Any], datetime]], M]:
    """``from_row(row, load_ts) -> model``, reading the columns positionally as ``select_list`` orders them."""
    position = {column.name: index for index, column in enumerate(table.columns)}
    kinds = {column.name: column.kind for column in table.columns}
    arguments: list[str] = []
    for model_field in fields(table.model):  # pyright: ignore[reportArgumentType]
        if model_field.name not in position:
            break  # fields after the columns (a workflow's tasks) keep their defaults
        value = f"row[{position[model_field.name]}]"
        template = _LOADERS.get(kinds[model_field.name], "{v}")
        arguments.append(template.format(v=value, enum=f"lookup_{model_field.name}"))
    source = f"def from_row(row, load_ts):\n    return Model({', '.join(arguments)})\n"
    mapper: Callable[[Sequence[Any], Callable[[Any], datetime]], M] = _compile(
        source, "from_row", _namespace(table)
    )
    return mapper


def _param_builder(
    table: Table[M],
) -> Callable[[M, Callable[[str], object], Callable[[datetime], object]], list[object]]:
    """``params(model, json_param, ts_param) -> list``: the checked values of the ``written`` columns.

    A failed check names the record: ``task 'x': input nests deeper than 256 levels``.
    """
    kinds = {column.name: column.kind for column in table.columns}
    values = [_WRITERS[kinds[name]].format(n=name, enum=f"enum_{name}") for name in table.written]
    source = (
        "def params(s, json_param, ts_param):\n"
        "    if not isinstance(s, Model):\n"
        f"        raise wrong_type('the state', 'a {table.model.__name__}', s)\n"
        "    try:\n"
        f"        return [{', '.join(values)}]\n"
        "    except ValidationError as exc:\n"
        f"        raise type(exc)(f'{table.label} {{short(s.{table.key})}}: {{exc}}') from None\n"
    )
    builder: Callable[[M, Callable[[str], object], Callable[[datetime], object]], list[object]] = _compile(
        source, "params", _namespace(table)
    )
    return builder


# The tables ----------------------------------------------------------------------------------------------

TASK_STATES: Table[TaskState] = Table(
    "task_states",
    TaskState,
    key="task_exec_id",
    label="task",
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
    ),
)

WORKFLOW_STATES: Table[WorkflowState] = Table(
    "workflow_states",
    WorkflowState,
    key="workflow_exec_id",
    label="workflow",
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
    ),
)
