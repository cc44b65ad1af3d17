"""The Provider factory: config -> driver -> repositories typed only as Protocols.

Driver modules are imported when chosen, so a missing dependency of one driver (psycopg, tinydb) fails only
when that driver is asked for, with a ``ConfigError`` naming the extra to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypeVar

from planflow.config import ConfigSource, PlanflowConfig, resolve_config
from planflow.errors import ConfigError, PlanflowError, UnsupportedError
from planflow.protocols import AuthRepository, TaskRepository, WorkflowRepository

if TYPE_CHECKING:
    from planflow.infra.sql.migrations import Migration, MigrationStatus
    from planflow.protocols import ExecutionRepository

T = TypeVar("T")

#: driver -> (module with ``open_backend``, pip extra, modules the driver needs)
DRIVER_MODULES: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "sqlite": ("planflow.infra.sqlite.backend", None, ("sqlite3", "_sqlite3")),
    "postgres": (
        "planflow.infra.postgres.backend",
        "postgres",
        ("psycopg", "psycopg_pool", "psycopg_binary"),
    ),
    "tinydb": ("planflow.infra.tinydb.backend", "tinydb", ("tinydb",)),
}


class Backend(Protocol):
    """What a driver hands the Provider. Repositories it does not serve are ``None``."""

    driver: str

    @property
    def tasks(self) -> TaskRepository | None: ...
    @property
    def workflows(self) -> WorkflowRepository | None: ...
    @property
    def auth(self) -> AuthRepository | None: ...
    @property
    def executions(self) -> ExecutionRepository | None: ...

    def transaction(self) -> AbstractContextManager[object]: ...
    def retrying(self, attempt: Callable[[], T]) -> T: ...
    def migrate(self) -> list[Migration]: ...
    def migration_status(self) -> list[MigrationStatus]: ...
    def close(self) -> None: ...


class Repositories:
    """The repositories of a provider; what ``provider.transaction()`` yields."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def _serve(self, repository: T | None, name: str) -> T:
        if repository is None:
            raise UnsupportedError(f"the {self._backend.driver} driver does not serve the {name} repository")
        return repository

    @property
    def tasks(self) -> TaskRepository:
        """Task execution states."""
        return self._serve(self._backend.tasks, "tasks")

    @property
    def workflows(self) -> WorkflowRepository:
        """Workflow execution states."""
        return self._serve(self._backend.workflows, "workflows")

    @property
    def auth(self) -> AuthRepository:
        """Users and API keys."""
        return self._serve(self._backend.auth, "auth")

    @property
    def executions(self) -> ExecutionRepository:
        """The add-on's task definitions, occurrences and executions."""
        return self._serve(self._backend.executions, "executions")


class Provider(Repositories):
    """An open store: repositories, units of work, migrations. Use it as a context manager or ``close()`` it."""

    def __init__(self, backend: Backend, config: PlanflowConfig) -> None:
        super().__init__(backend)
        self.config = config
        self._closed = False

    @property
    def driver(self) -> str:
        """``sqlite``, ``postgres`` or ``tinydb``."""
        return self._backend.driver

    @contextmanager
    def transaction(self) -> Generator[Repositories, None, None]:
        """A unit of work across repositories: commits both or neither.

        Every repository call made on this thread inside the block joins it (``tx.tasks`` and
        ``provider.tasks`` are the same). Nested use is a savepoint: an exception leaving the inner block
        undoes only the inner block's writes.

        Raises:
            UnsupportedError: the driver has no transactions (tinydb: use ``executions.batch()``).
        """
        with self._backend.transaction():
            yield self

    def run_in_transaction(self, work: Callable[[Repositories], T]) -> T:
        """Run ``work`` in a transaction, running it again from the start after a transient failure.

        ``work`` may run more than once: keep side effects other than the repositories' out of it.

        Raises:
            TransientError: the failure outlasted the retry budget (``config.retry``).
        """

        def attempt() -> T:
            with self.transaction() as tx:
                return work(tx)

        return self._backend.retrying(attempt)

    def migrate(self) -> list[Migration]:
        """Apply pending migrations; returns those applied."""
        return self._backend.migrate()

    def migration_status(self) -> list[MigrationStatus]:
        """Every known migration with its applied time (``None``: pending)."""
        return self._backend.migration_status()

    def close(self) -> None:
        """Close the store's connections; closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._backend.close()

    def __enter__(self) -> Provider:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Provider {self.driver} {self.config.location}>"


def _load_driver(config: PlanflowConfig) -> Callable[[PlanflowConfig], Backend]:
    module_name, extra, needs = DRIVER_MODULES[config.driver]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in needs:
            raise
        hint = f"install it with: pip install 'planflow[{extra}]'" if extra else "this Python lacks it"
        raise ConfigError(
            f"the {config.driver} driver needs the {missing!r} module, which is missing; {hint}"
        ) from exc
    opener: Callable[[PlanflowConfig], Backend] = module.open_backend
    return opener


def open_provider(config: ConfigSource = None) -> Provider:
    """Open a store and return its Provider.

    Args:
        config: a :class:`PlanflowConfig`, a mapping of settings, a URL, or ``None`` (environment, else the
            embedded default: a SQLite file ``planflow.db`` in the current directory).

    Raises:
        ConfigError: bad config, unknown driver, missing driver dependency, unreachable database.
        MigrationError: a migration failed or the schema is newer than the code (``auto_migrate`` on).
    """
    resolved = resolve_config(config)
    backend = _load_driver(resolved)(resolved)
    try:
        if resolved.auto_migrate:
            backend.migrate()
    except BaseException:
        backend.close()
        raise
    return Provider(backend, resolved)


__all__ = ["Backend", "PlanflowError", "Provider", "Repositories", "open_provider"]
