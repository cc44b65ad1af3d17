"""The add-on's ExecutionRepository rules, written once for every driver; the drivers supply only storage.

What every driver does the same way lives here, as pure functions and constants that the SQL repository
(:mod:`planflow.infra.sql.executions`, coroutines with their SQL) and the TinyDB repository
(:mod:`planflow.infra.tinydb.executions`, over its storage engine) both call:

- **What is stored.** Each model is a :class:`Kind`: its table, the field its upserts go by (``id``; an
  execution's ``occurrence_id``), the field that ties it to a task (an occurrence's ``task_id``), and the
  shared codec's document (:mod:`planflow.infra.execution_codec`). :meth:`Kind.record` applies the input rules
  to a model's fields as it encodes them (the adapters already checked that it is the typed model) and
  returns the :class:`Record` to store, before any storage is touched; :meth:`Kind.decode` reads one back.
- **Adds are idempotent upserts by key that keep the record's place**, and lists return records in the order
  they were first added: the SQL tables keep a sequence number that ``ON CONFLICT DO UPDATE`` leaves alone; a
  TinyDB table keeps the document id an upsert reuses.
- **delete_task_and_related(task_id)** removes, in one write, the executions keyed by the ids of the
  occurrences whose ``task_id`` is ``task_id``, those occurrences, and the task (whether or not it is stored):
  :func:`cascade` on TinyDB, three statements in one transaction on SQL.
- **purge(before)** removes the occurrences :func:`purged` selects (scheduled before ``before``; a naive
  ``scheduled_for`` is local time) with their executions; task definitions stay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar, cast

from planflow.executions import TaskDefinition, TaskExecution, TaskOccurrence
from planflow.infra.execution_codec import (
    execution_from_doc,
    execution_to_doc,
    occurrence_from_doc,
    occurrence_to_doc,
    scheduled_before,
    task_from_doc,
    task_to_doc,
)
from planflow.models import JsonValue

M = TypeVar("M", TaskDefinition, TaskOccurrence, TaskExecution)
H = TypeVar("H")


@dataclass(frozen=True, slots=True)
class Record:
    """One record as every driver stores it: its key, the task it belongs to, and its document."""

    #: The id an upsert goes by: a task's or an occurrence's ``id``, an execution's ``occurrence_id``.
    key: str
    #: An occurrence's ``task_id`` (what ``delete_task_and_related`` follows); ``None`` for the others.
    group: str | None
    #: The shared codec's JSON document.
    doc: dict[str, JsonValue]


@dataclass(frozen=True, slots=True)
class Kind(Generic[M]):
    """One of the add-on's models as stored: table, key and group fields, and the codec both ways."""

    #: The table (TinyDB) the records live in; the SQL tables are named in their statements.
    table: str
    key_field: str
    group_field: str | None
    model: type[M]
    encode: Callable[[M], dict[str, JsonValue]]
    decode: Callable[[Mapping[str, object]], M]

    def record(self, value: M) -> Record:
        """The record to store for ``value`` (of this kind's model: the adapters checked it), its fields checked
        against the input rules as they are encoded, before anything is stored.

        Raises:
            ValidationError: A field breaks the input rules (named in the message).
        """
        doc = self.encode(value)
        group = None if self.group_field is None else cast("str", doc[self.group_field])
        return Record(cast("str", doc[self.key_field]), group, doc)


TASKS: Kind[TaskDefinition] = Kind("tasks", "id", None, TaskDefinition, task_to_doc, task_from_doc)
OCCURRENCES: Kind[TaskOccurrence] = Kind(
    "occurrences",
    "id",
    "task_id",
    TaskOccurrence,
    occurrence_to_doc,
    occurrence_from_doc,
)
EXECUTIONS: Kind[TaskExecution] = Kind(
    "executions",
    "occurrence_id",
    None,
    TaskExecution,
    execution_to_doc,
    execution_from_doc,
)


def purged(occurrences: Iterable[tuple[H, TaskOccurrence]], before: datetime) -> list[H]:
    """The handles (ids, rows, document ids) of the occurrences ``purge(before=before)`` removes, in order.

    Args:
        occurrences: Each stored occurrence with the handle its driver deletes it by.
        before: An aware moment; a naive ``scheduled_for`` is read in this machine's time zone.
    """
    return [handle for handle, occurrence in occurrences if scheduled_before(occurrence, before)]


def cascade(
    task_id: str,
    occurrences_of_task: Iterable[tuple[H, str | None]],
    remove_occurrence: Callable[[H], None],
    remove_execution: Callable[[str], None],
    remove_task: Callable[[str], None],
) -> None:
    """Remove what ``delete_task_and_related(task_id)`` removes, through a driver's own removals.

    Args:
        task_id: The task.
        occurrences_of_task: The occurrences whose ``task_id`` is ``task_id``, each as its handle and its id
            (``None`` when the stored record has no readable id: it goes, with no execution to follow).
        remove_occurrence: Removes one occurrence by its handle.
        remove_execution: Removes the execution of an occurrence id, if one is stored.
        remove_task: Removes the task by its id, if it is stored.
    """
    for handle, occurrence_id in list(occurrences_of_task):
        if occurrence_id is not None:
            remove_execution(occurrence_id)
        remove_occurrence(handle)
    remove_task(task_id)


__all__ = ["EXECUTIONS", "OCCURRENCES", "TASKS", "Kind", "Record", "cascade", "purged"]
