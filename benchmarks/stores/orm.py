"""SQLAlchemy 2.0 ORM on planflow's tables, written the way a typical ORM user writes it.

Declarative models of ``workflow_states`` and ``task_states`` (the tables planflow's migrations create),
``version`` as the mapper's ``version_id_col`` (so the ORM itself bumps it and checks it on UPDATE), a
request-scoped ``Session`` per operation, ``session.merge`` for upserts, ``session.get`` for reads by key,
``select().where(in_())``, a recursive CTE via ``select().cte(recursive=True)`` and keyset pagination with
``tuple_``. Results are converted to planflow's ``TaskState``, so every implementation returns the same
objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Engine,
    Enum,
    ForeignKey,
    Integer,
    String,
    TypeDecorator,
    create_engine,
    event,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, aliased, mapped_column, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from benchmarks.data import chunks
from benchmarks.stores.base import BULK_BATCH, MAX_DEPTH, SQLALCHEMY
from benchmarks.stores.rawcodec import page, usage_from_items, usage_items
from planflow import (
    ComponentType,
    ConflictError,
    ExecutionType,
    NotFoundError,
    TaskState,
    TaskStatus,
    TaskTreeNode,
)

E = TypeVar("E", bound=StrEnum)


class IsoTimestamp(TypeDecorator[datetime]):
    """planflow's SQLite timestamp format (fixed-width UTC ISO text); DateTime would store another one."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")

    def process_result_value(self, value: str | None, dialect: Dialect) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)


TIMESTAMP = DateTime(timezone=True).with_variant(IsoTimestamp(), "sqlite")
# none_as_null: Python None must be SQL NULL, not the JSON value null (planflow's CHECKs reject that on Postgres).
JSON_DOC = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _enum(kind: type[E]) -> Enum:
    return Enum(
        kind,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of the benchmark's models."""


class WorkflowRow(Base):
    """``workflow_states``."""

    __tablename__ = "workflow_states"

    workflow_exec_id: Mapped[str] = mapped_column(String, primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String)
    status: Mapped[TaskStatus] = mapped_column(_enum(TaskStatus))
    usage: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON_DOC)
    input: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOC)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOC)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOC)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, default=_now)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP, default=_now, onupdate=_now)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 - SQLAlchemy's declarative convention


class TaskRow(Base):
    """``task_states``."""

    __tablename__ = "task_states"

    task_exec_id: Mapped[str] = mapped_column(String, primary_key=True)
    task_id: Mapped[str] = mapped_column(String)
    workflow_exec_id: Mapped[str] = mapped_column(
        ForeignKey("workflow_states.workflow_exec_id", ondelete="CASCADE")
    )
    workflow_id: Mapped[str] = mapped_column(String)
    component: Mapped[ComponentType] = mapped_column(_enum(ComponentType))
    status: Mapped[TaskStatus] = mapped_column(_enum(TaskStatus))
    execution_type: Mapped[ExecutionType] = mapped_column(_enum(ExecutionType))
    parent_state_id: Mapped[str | None] = mapped_column(
        ForeignKey("task_states.task_exec_id", ondelete="CASCADE")
    )
    agent_id: Mapped[str | None] = mapped_column(String)
    action_id: Mapped[str | None] = mapped_column(String)
    tool_id: Mapped[str | None] = mapped_column(String)
    input: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOC)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOC)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOC)
    usage: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON_DOC)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, default=_now)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP, default=_now, onupdate=_now)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 - SQLAlchemy's declarative convention

    def to_state(self) -> TaskState:
        """The planflow model of this row."""
        return TaskState(
            task_exec_id=self.task_exec_id,
            task_id=self.task_id,
            workflow_exec_id=self.workflow_exec_id,
            workflow_id=self.workflow_id,
            component=self.component,
            status=self.status,
            execution_type=self.execution_type,
            parent_state_id=self.parent_state_id,
            agent_id=self.agent_id,
            action_id=self.action_id,
            tool_id=self.tool_id,
            input=self.input,
            output=self.output,
            error=self.error,
            usage=usage_from_items(self.usage),
            version=self.version,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    def assign(self, state: TaskState) -> None:
        """Copy every written field of ``state`` onto this row (not the version or the timestamps)."""
        self.task_id = state.task_id
        self.workflow_exec_id = state.workflow_exec_id
        self.workflow_id = state.workflow_id
        self.component = state.component
        self.status = state.status
        self.execution_type = state.execution_type
        self.parent_state_id = state.parent_state_id
        self.agent_id = state.agent_id
        self.action_id = state.action_id
        self.tool_id = state.tool_id
        self.input = state.input
        self.output = state.output
        self.error = state.error
        self.usage = usage_items(state.usage)

    @classmethod
    def of(cls, state: TaskState) -> TaskRow:
        """A transient row carrying ``state``'s fields, for ``session.merge``."""
        row = cls(task_exec_id=state.task_exec_id)
        row.assign(state)
        return row


def sqlite_engine(path: str) -> Engine:
    """An engine on a SQLite file with planflow's pragmas, set the usual way (a connect event)."""
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 5.0, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 5000")
        cursor.close()

    return engine


def postgres_engine(url: str, schema: str) -> Engine:
    """An engine on Postgres through psycopg 3, with ``schema`` as the search path."""
    sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1).replace(
        "postgres://", "postgresql+psycopg://", 1
    )
    return create_engine(sa_url, connect_args={"options": f"-csearch_path={schema}"}, pool_size=10)


class OrmStore:
    """The workloads' operations with SQLAlchemy ORM sessions."""

    name = SQLALCHEMY

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def bulk_upsert(self, states: Sequence[TaskState]) -> int:
        for batch in chunks(states, BULK_BATCH):
            with self._sessions.begin() as session:
                for state in batch:
                    session.merge(TaskRow.of(state))
        return len(states)

    def get_state(self, task_exec_id: str) -> TaskState:
        with self._sessions() as session:
            row = session.get(TaskRow, task_exec_id)
            if row is None:
                raise NotFoundError(f"task state {task_exec_id!r} not found")
            return row.to_state()

    def list_by_ids(self, task_exec_ids: Sequence[str]) -> list[TaskState]:
        stmt = (
            select(TaskRow)
            .where(TaskRow.task_exec_id.in_(task_exec_ids))
            .order_by(TaskRow.created_at, TaskRow.task_exec_id)
        )
        with self._sessions() as session:
            return [row.to_state() for row in session.scalars(stmt)]

    def get_task_tree(self, root_state_id: str) -> list[TaskTreeNode]:
        tree = (
            select(TaskRow.task_exec_id, literal_column("0", Integer).label("depth"))
            .where(TaskRow.task_exec_id == root_state_id)
            .cte("tree", recursive=True)
        )
        child = aliased(TaskRow, name="c")
        tree = tree.union_all(
            select(child.task_exec_id, tree.c.depth + 1)
            .join(tree, child.parent_state_id == tree.c.task_exec_id)
            .where(tree.c.depth < MAX_DEPTH, child.task_exec_id != root_state_id)
        )
        stmt = (
            select(TaskRow, tree.c.depth)
            .join(tree, TaskRow.task_exec_id == tree.c.task_exec_id)
            .order_by(tree.c.depth, TaskRow.created_at, TaskRow.task_exec_id)
        )
        with self._sessions() as session:
            nodes = [TaskTreeNode(row.to_state(), depth) for row, depth in session.execute(stmt)]
        return _depth_first(nodes)

    def list_page(
        self, workflow_exec_id: str, limit: int, cursor: object | None
    ) -> tuple[list[TaskState], object | None]:
        stmt = select(TaskRow).where(TaskRow.workflow_exec_id == workflow_exec_id)
        if cursor is not None:
            stmt = stmt.where(tuple_(TaskRow.created_at, TaskRow.task_exec_id) > cursor)
        stmt = stmt.order_by(TaskRow.created_at, TaskRow.task_exec_id).limit(limit + 1)
        with self._sessions() as session:
            items = [row.to_state() for row in session.scalars(stmt)]
        return page(items, limit)

    def update_state(self, state: TaskState, expected_version: int) -> TaskState:
        with self._sessions.begin() as session:
            row = session.get(TaskRow, state.task_exec_id)
            if row is None:
                raise NotFoundError(f"task state {state.task_exec_id!r} not found")
            if row.version != expected_version:
                raise ConflictError(
                    f"task state {state.task_exec_id!r} is at version {row.version}, expected {expected_version}",
                    expected=expected_version,
                    actual=row.version,
                )
            row.assign(state)
            try:
                session.flush()
            except StaleDataError as exc:
                raise ConflictError(
                    f"task state {state.task_exec_id!r} changed concurrently", expected=expected_version
                ) from exc
            return row.to_state()

    def close(self) -> None:
        self._engine.dispose()


def _depth_first(nodes: list[TaskTreeNode]) -> list[TaskTreeNode]:
    """A tree read level by level, put in planflow's order: depth-first, each task before its children.

    What an ORM user writes on top of the recursive CTE (whose rows come by depth, then creation), in Python.
    """
    children: dict[str | None, list[TaskTreeNode]] = {}
    for node in nodes[1:]:
        children.setdefault(node.state.parent_state_id, []).append(node)
    ordered: list[TaskTreeNode] = []
    stack = nodes[:1]
    while stack:
        node = stack.pop()
        ordered.append(node)
        stack += reversed(children.get(node.state.task_exec_id, []))
    return ordered
