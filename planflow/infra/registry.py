"""The repositories a provider may serve: one list, from which everything that names them is derived.

The provider's attributes (``provider.tasks`` ...), the backends' repositories, the generated adapters
(``planflow/infra/facades``, written by ``tools/generate_adapters.py``), the listeners' and telemetry's names of
what a call touched, and the CLI's records all come from :data:`REPOSITORIES`. Adding a repository is one line
here, its Protocol in ``planflow/protocols.py``, its implementations, and running the generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from planflow.errors import UnsupportedError
from planflow.protocols import (
    AuthRepository,
    ExecutionRepository,
    MetadataRepository,
    TaskRepository,
    WorkflowRepository,
)


@dataclass(frozen=True, slots=True)
class Spec:
    """One repository: its name on a provider, its synchronous Protocol, what it holds (for messages), and the
    tables (SQL) or TinyDB tables its records live in, with which of them each method works on (telemetry's
    ``db.collection.name``)."""

    name: str
    protocol: type
    holds: str
    tables: tuple[str, ...]
    #: The TinyDB tables, in the order of ``tables`` (empty: the driver does not serve the repository).
    tinydb_tables: tuple[str, ...] = ()
    #: Methods that work on another table than the first: method -> its position in ``tables`` (``None``: several).
    methods: Mapping[str, int | None] = field(default_factory=dict[str, "int | None"])
    #: Point reads: one record found by its key, no transaction. On the asynchronous API of a store whose reads
    #: never wait for a lock they run at once on the event loop (``planflow.infra.threaded.Lanes.read``).
    point_reads: tuple[str, ...] = ()

    def table_of(self, method: str, driver: str) -> str | None:
        """The table a call of ``method`` works on, on ``driver``; ``None`` for one that spans several."""
        position = self.methods.get(method, 0)
        if position is None:
            return None
        return (self.tinydb_tables if driver == "tinydb" else self.tables)[position]


_API_KEYS = ("create_api_key", "get_api_key", "get_api_key_by_fingerprint", "list_api_keys", "touch_api_key",
             "import_api_keys", "delete_api_key")  # fmt: skip

REPOSITORIES: tuple[Spec, ...] = (
    Spec(
        "tasks",
        TaskRepository,
        "task states",
        ("task_states",),
        point_reads=("get_state", "get_child_by_task_id"),
    ),
    Spec("workflows", WorkflowRepository, "workflow states", ("workflow_states",)),
    Spec(
        "auth",
        AuthRepository,
        "users and API keys",
        ("users", "api_keys"),
        methods=dict.fromkeys(_API_KEYS, 1),
        point_reads=("get_user", "get_user_by_email", "get_api_key", "get_api_key_by_fingerprint"),
    ),
    Spec(
        "executions",
        ExecutionRepository,
        "the PlanFlow add-on's task definitions, occurrences and executions",
        ("exec_tasks", "exec_occurrences", "exec_executions"),
        tinydb_tables=("tasks", "occurrences", "executions"),
        methods={
            "add_occurrence": 1,
            "get_occurrence": 1,
            "list_occurrences": 1,
            "purge": 1,
            "add_execution": 2,
            "get_execution": 2,
            "list_executions": 2,
            "batch": None,
        },
        point_reads=("get_task", "get_occurrence", "get_execution"),
    ),
    Spec(
        "metadata",
        MetadataRepository,
        "facts about the store",
        ("planflow_metadata",),
        ("planflow_metadata",),
        point_reads=("get",),
    ),
)

#: Every repository's name, in provider order.
NAMES: tuple[str, ...] = tuple(spec.name for spec in REPOSITORIES)
BY_NAME: dict[str, Spec] = {spec.name: spec for spec in REPOSITORIES}


def unserved(name: str, repositories: Mapping[str, object | None], driver: str) -> UnsupportedError:
    """The error for ``provider.<name>`` on a driver that does not serve it, naming what it serves instead."""
    served = [BY_NAME[n] for n, found in repositories.items() if found is not None and n != "metadata"]
    serves = ", ".join(f"{spec.name} ({spec.holds})" for spec in served) or "nothing"
    return UnsupportedError(
        f"the {driver} driver does not serve the {name} repository ({BY_NAME[name].holds}): it serves only "
        f"{serves}; for {name}, open a store of the sqlite driver (sqlite:///path/to.db: stdlib sqlite3, no "
        "server) or of the postgres driver (postgresql://user:pw@host/db)"
    )


__all__ = ["BY_NAME", "NAMES", "REPOSITORIES", "Spec", "unserved"]
