"""What differs between the SQL engines, beyond connection handling: a few fragments and value adapters.

The repositories write their SQL once with ``?`` placeholders and these fragments; each driver provides one
:class:`Dialect`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Dialect:
    """SQL fragments and parameter adapters of one engine.

    Attributes:
        name: The driver name.
        same: ``same(column)`` is a condition true when ``column`` equals the value bound to its placeholder,
            NULL equal to NULL (SQLite: ``column IS ?``; Postgres: ``column IS NOT DISTINCT FROM ?``).
        in_ids: ``in_ids(column)`` is a condition true when ``column`` is in the id list bound to its single
            placeholder (SQLite: ``IN (SELECT value FROM json_each(?))``; Postgres: ``= ANY(?)``), so any number
            of ids takes one bound variable.
        ids_param: Turns a list of ids into that one parameter.
        json_param: Turns JSON text into a parameter for a JSON column.
        ts_param: Turns an aware datetime into a parameter for a timestamp column.
        load_ts: Turns a timestamp column value back into an aware UTC datetime.
        for_update: Suffix of a SELECT that locks the rows it reads ('' where the transaction already holds
            the write lock, as SQLite's ``BEGIN IMMEDIATE`` does).
        bootstrap_lock: Statement that serialises first-admin creation ('' where writes are serialised).
        defer_foreign_keys: Statement that defers foreign-key checks to the end of the current transaction, so
            that a verbatim import may write a child before its parent within one batch.
        skip_locked: Suffix of a SELECT that locks the rows it reads and passes over rows other transactions
            hold (PostgreSQL ``FOR UPDATE SKIP LOCKED``; '' where the transaction holds the database's write lock).
        by_lease: ``task_states`` as a FROM item read through its lease index (``task_states_leases``): SQLite,
            without statistics, would read every running task through the status index instead, so it is named
            (``INDEXED BY``); PostgreSQL costs the partial index right and takes no hints.
        by_claim_order: ``by_claim_order(where)``: ``task_states`` as a FROM item for the claim of ``where``,
            read through the claim's index (``task_states_claim``: pending tasks by priority, then due; or
            ``task_states_workflow_claim`` when ``where`` names a workflow execution), named on SQLite, which
            without statistics would read every pending task through the status index and sort them.
        one_workflow: How a claim's pending tasks are matched to the one workflow execution its filter names
            (``?``: the id). PostgreSQL's ``= ANY(ARRAY[?])`` is the same test, but one from which the planner
            derives no constant: the claim's order, led by ``workflow_exec_id``
            (``planflow.infra.sql.queue.pending_order``), is then one that only ``task_states_workflow_claim``
            yields without a sort, whatever the statistics say.
        split_update: Whether an optimistic update first sets only the columns that usually change (see
            ``planflow.infra.sql.tasks.STABLE_COLUMNS``): worth it where the engine rewrites the index entries
            of every column it sets (SQLite), a wasted round trip where it does not (PostgreSQL).
        limit_union_arms: Whether a listing over several statuses orders and limits each arm of its
            ``UNION ALL`` (see ``planflow.infra.sql.statements.listing``). PostgreSQL merges ordered arms (Merge
            Append) only when each is limited: plain arms are flattened into the union, where a status condition
            no longer lets an index led by the status yield the order. SQLite merges plain arms in order, and
            would sort again the rows of a limited arm read through a subquery.
        clock: SQL for the database's current time, which every process that compares times shares (leases,
            key expiry), in the form of the stored timestamps; ``clock_plus`` the same plus a number of seconds
            bound as ``seconds_param(seconds)``.
        wall_clock: SQL for the database's current time as it advances within a transaction (rate windows,
            counted after a lock was waited for); ``wall_clock_minus(sql)`` the same less ``sql`` seconds.
        json_object: The function building a JSON object from key/value arguments.
        json_nested: ``json_nested(column)``: a JSON column as a value nested in ``json_object``'s result.
        wake: A statement that wakes every ``wait_for_work`` waiter of the store when its transaction commits
            ('' where every commit wakes them, as SQLite's watchers see).
    """

    name: str
    same: Callable[[str], str]
    in_ids: Callable[[str], str]
    ids_param: Callable[[Sequence[str]], object]
    json_param: Callable[[str], object]
    ts_param: Callable[[datetime], object]
    load_ts: Callable[[Any], datetime]
    for_update: str
    bootstrap_lock: str
    defer_foreign_keys: str = ""
    split_update: bool = False
    skip_locked: str = ""
    by_lease: str = "task_states"
    by_claim_order: Callable[[str], str] = lambda where: "task_states"
    one_workflow: str = "workflow_exec_id = ?"
    limit_union_arms: bool = False
    clock: str = ""
    clock_plus: str = ""
    seconds_param: Callable[[float], object] = float
    wall_clock: str = ""
    wall_clock_minus: Callable[[str], str] = str
    json_object: str = "json_object"
    json_nested: Callable[[str], str] = str
    wake: str = ""

    def at(self, *, plus_seconds: bool = False) -> str:
        """SQL for the database's current time, plus a number of seconds bound to ``?`` when ``plus_seconds``
        (its parameter comes from :meth:`at_params`)."""
        return self.clock_plus if plus_seconds else self.clock

    def at_params(self, seconds: float | None = None) -> list[object]:
        """The parameters of :meth:`at`: none, or the number of seconds."""
        return [] if seconds is None else [self.seconds_param(seconds)]
