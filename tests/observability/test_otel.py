"""OpenTelemetry: a CLIENT span per repository call with the database semantic conventions' attributes, nested
under the caller's span, errors recorded; duration, retry, conflict and pool metrics; faulty exporters never
break a call; and no bound value or password in any log record, span or metric."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from psycopg.conninfo import conninfo_to_dict

from planflow import (
    ConfigError,
    ConflictError,
    NotFoundError,
    TaskState,
    TransientError,
    WorkflowState,
    open_async_provider,
    open_provider,
)
from tests.observability.conftest import Telemetry
from tests.pg import url_with_password

tracer = trace.get_tracer("tests")


def _points(telemetry: Telemetry, name: str) -> list[Any]:
    data = telemetry.metrics.get_metrics_data()
    found: list[Any] = []
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def _planflow_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    return [s for s in telemetry.spans.get_finished_spans() if s.instrumentation_scope.name == "planflow"]


def test_sqlite_calls_make_client_spans_with_the_semantic_convention_attributes(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    path = tmp_path / "otel.db"
    with open_provider(f"sqlite:///{path}", telemetry=True) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-otel", "wf"))
        provider.auth.list_users()
    spans = _planflow_spans(telemetry)
    assert [s.name for s in spans] == ["upsert_state workflow_states", "list_users users"]
    span = spans[0]
    assert span.kind is SpanKind.CLIENT
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "db.system.name": "sqlite",
        "db.namespace": str(path),
        "db.operation.name": "upsert_state",
        "db.collection.name": "workflow_states",
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.start_time is not None and span.end_time is not None
    assert span.end_time >= span.start_time


@pytest.mark.postgres
def test_postgres_spans_name_the_server_database_and_schema(telemetry: Telemetry, postgres_url: str) -> None:
    with open_provider(postgres_url, telemetry=True) as provider:
        provider.tasks.count_states()
    (span,) = _planflow_spans(telemetry)
    assert span.attributes is not None
    attributes = dict(span.attributes)
    schema = postgres_url.rsplit("search_path%3D", maxsplit=1)[-1].split("&", maxsplit=1)[0]
    server = conninfo_to_dict(postgres_url)
    assert attributes["db.system.name"] == "postgresql"
    assert attributes["db.namespace"] == f"{server['dbname']}|{schema}"
    assert attributes["server.address"] == server["host"]
    assert attributes["server.port"] == int(server.get("port") or 5432)
    assert attributes["db.collection.name"] == "task_states"


def test_tinydb_spans_say_tinydb(telemetry: Telemetry) -> None:
    with open_provider("tinydb://memory", telemetry=True) as provider:
        provider.executions.list_occurrences()
    (span,) = _planflow_spans(telemetry)
    assert span.name == "list_occurrences occurrences"
    assert span.attributes is not None
    assert span.attributes["db.system.name"] == "tinydb"


def test_spans_nest_under_the_callers_span(telemetry: Telemetry) -> None:
    with open_provider("sqlite://:memory:", telemetry=True) as provider:
        with tracer.start_as_current_span("handle-request") as outer:
            provider.metadata.set("k", "v")
            provider.metadata.get("k")
        provider.metadata.items()
    spans = _planflow_spans(telemetry)
    context = outer.get_span_context()
    inside, after = spans[:2], spans[2]
    assert all(s.parent is not None and s.parent.span_id == context.span_id for s in inside)
    assert all(s.context is not None and s.context.trace_id == context.trace_id for s in inside)
    assert after.parent is None


def test_async_spans_nest_under_the_calling_tasks_span(telemetry: Telemetry) -> None:
    async def one(provider: Any, name: str) -> int:
        with tracer.start_as_current_span(name) as span:
            await provider.metadata.set(name, "v")
            return span.get_span_context().span_id

    async def main() -> dict[str, int]:
        async with await open_async_provider("sqlite://:memory:", telemetry=True) as provider:
            ids = await asyncio.gather(one(provider, "a"), one(provider, "b"))
            return dict(zip(["a", "b"], ids, strict=True))

    parents = asyncio.run(main())
    spans = _planflow_spans(telemetry)
    assert sorted(s.parent.span_id for s in spans if s.parent) == sorted(parents.values())


def test_a_failed_call_has_status_error_and_its_error_type(telemetry: Telemetry) -> None:
    with open_provider("sqlite://:memory:", telemetry=True) as provider, pytest.raises(NotFoundError):
        provider.tasks.get_state("tx-missing")
    (span,) = _planflow_spans(telemetry)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "NotFoundError"
    assert "tx-missing" not in repr(span.to_json())


def test_operation_duration_histogram_counts_each_call(telemetry: Telemetry, tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    with open_provider(f"sqlite:///{path}", telemetry=True) as provider:
        for _ in range(3):
            provider.metadata.items()
        with pytest.raises(NotFoundError):
            provider.workflows.get_state("none")
    points = [
        p
        for p in _points(telemetry, "db.client.operation.duration")
        if p.attributes.get("db.namespace") == str(path)
    ]
    by_operation = {p.attributes["db.operation.name"]: p for p in points}
    assert by_operation["items"].count == 3
    assert by_operation["items"].sum > 0
    assert by_operation["get_state"].attributes["error.type"] == "NotFoundError"
    assert by_operation["get_state"].attributes["db.system.name"] == "sqlite"


def test_conflicts_and_retries_are_counted(telemetry: Telemetry, tmp_path: Path) -> None:
    path = tmp_path / "counted.db"
    config = {"path": str(path), "busy_timeout": 0.01, "retry": {"max_attempts": 2, "base_delay": 0.001}}
    with open_provider(config, telemetry=True) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-count", "wf"))
        state = provider.tasks.upsert_state(TaskState("tx-count", "t", "wf-count", "wf"))
        with pytest.raises(ConflictError):
            provider.tasks.update_state(state, 42)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(TransientError):
                provider.workflows.upsert_state(WorkflowState("wf-busy", "wf"))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    mine = {"db.namespace": str(path)}
    conflicts = [
        p for p in _points(telemetry, "planflow.db.client.conflicts") if p.attributes.items() >= mine.items()
    ]
    retries = [
        p for p in _points(telemetry, "planflow.db.client.retries") if p.attributes.items() >= mine.items()
    ]
    assert [(p.value, p.attributes["db.operation.name"]) for p in conflicts] == [(1, "update_state")]
    assert [(p.value, p.attributes["error.type"]) for p in retries] == [(1, "TransientError")]


@pytest.mark.postgres
def test_pool_gauges_report_connections_in_use_idle_and_waiting(
    telemetry: Telemetry, postgres_url: str
) -> None:
    config = {"url": postgres_url, "pool_min_size": 2, "pool_max_size": 2}
    database = f"{conninfo_to_dict(postgres_url)['dbname']}|"  # a pool is named database|schema
    with open_provider(config, telemetry=True) as provider:
        with provider.transaction():
            provider.metadata.items()
            counts = _points(telemetry, "db.client.connection.count")
            waiting = _points(telemetry, "db.client.connection.pending_requests")
        mine = [p for p in counts if str(p.attributes["db.client.connection.pool.name"]).startswith(database)]
        states = {p.attributes["db.client.connection.state"]: p.value for p in mine}
        assert states == {"used": 1, "idle": 1}
        assert all(p.value == 0 for p in waiting)
        waits = _points(telemetry, "db.client.connection.wait_time")
        assert isinstance(waits, list)
    names_after = {
        p.attributes["db.client.connection.pool.name"]
        for p in _points(telemetry, "db.client.connection.count")
    }
    assert not any(
        str(n).startswith(database) for n in names_after
    )  # a closed provider is no longer observed


def test_a_failing_exporter_never_breaks_a_call(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry.faulty.failing = True
    with caplog.at_level(logging.WARNING), open_provider("sqlite://:memory:", telemetry=True) as provider:
        provider.metadata.set("k", "v")
        assert provider.metadata.get("k") == "v"
    assert any("export" in r.getMessage().lower() and r.levelno >= logging.WARNING for r in caplog.records)


def test_a_blocked_exporter_behind_a_batch_processor_never_delays_a_call(telemetry: Telemetry) -> None:
    telemetry.blocking.blocked = True
    with open_provider("sqlite://:memory:", telemetry=True) as provider:
        for i in range(200):
            provider.metadata.set(f"k{i}", "v")
        # Every call returned while the exporter was still blocked in its first export: none waited for it.
        assert telemetry.blocking.waits_ended == 0
        assert provider.metadata.get("k199") == "v"
    telemetry.blocking.released.set()


def test_an_exporter_stuck_in_a_simple_processor_never_delays_a_call(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry.faulty.stuck = True
    with (
        caplog.at_level(logging.WARNING, logger="planflow.observe"),
        open_provider("sqlite://:memory:", telemetry=True) as provider,
    ):
        for i in range(50):
            provider.metadata.set(f"k{i}", "v")
        # Every call returned while the exporter was still stuck in its first export: none waited for it.
        assert telemetry.faulty.waits_ended == 0
    assert any("did not take" in r.getMessage() for r in caplog.records)  # close waited a second, no more
    telemetry.faulty.unstuck.set()
    deadline = time.monotonic() + 10
    while len(_planflow_spans(telemetry)) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(_planflow_spans(telemetry)) == 50  # late, but none lost


def test_events_beyond_the_backlog_are_dropped_with_a_warning(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from planflow.infra import otel

    with open_provider("sqlite://:memory:", telemetry=True) as provider:
        monkeypatch.setattr(otel, "BACKLOG", 0)
        with caplog.at_level(logging.WARNING, logger="planflow.observe"):
            provider.metadata.set("k", "v")
        monkeypatch.setattr(otel, "BACKLOG", 100_000)
    assert _planflow_spans(telemetry) == []
    assert any("dropped" in r.getMessage() for r in caplog.records)


def test_telemetry_without_opentelemetry_installed_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "planflow.infra.otel", raising=False)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ConfigError, match=r"planflow\[otel\]"):
        open_provider("sqlite://:memory:", telemetry=True)


def test_the_telemetry_setting_turns_it_on(telemetry: Telemetry) -> None:
    with open_provider("sqlite://:memory:?telemetry=true") as provider:
        provider.metadata.items()
    with open_provider("sqlite://:memory:?telemetry=true", telemetry=False) as provider:
        provider.metadata.items()
    assert len(_planflow_spans(telemetry)) == 1


# No secrets ----------------------------------------------------------------------------------------------------

JSON_SECRET = "json-SECRET-c41d"


@pytest.fixture
def secret_url(postgres_url: str) -> tuple[str, str]:
    """The test schema's URL with a password in it, and that password (the server's, or made up where the
    server asks for none)."""
    return url_with_password(postgres_url)


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def every_record() -> Iterator[_Everything]:
    handler = _Everything()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _texts(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr(record.args), repr(record.msg)]
    parts += [repr(value) for value in vars(record).values()]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(repr(record.exc_info[1]))
        parts.append(str(record.exc_info[1]))
    return "\n".join(parts)


@pytest.mark.postgres
def test_no_password_or_bound_value_in_any_log_record_span_or_metric(
    telemetry: Telemetry, secret_url: tuple[str, str], every_record: _Everything
) -> None:
    url, password = secret_url
    events: list[object] = []

    async def asynchronous() -> None:
        async with await open_async_provider(
            {"url": url, "slow_statement_ms": 0}, listeners=[events.append], telemetry=True
        ) as provider:
            await provider.workflows.upsert_state(WorkflowState(f"wf-{JSON_SECRET}-a", "wf"))
            await provider.workflows.get_state(f"wf-{JSON_SECRET}-a")

    with open_provider(
        {"url": url, "slow_statement_ms": 0}, listeners=[events.append], telemetry=True
    ) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-secret", "wf", input={"token": JSON_SECRET}))
        provider.tasks.upsert_state(
            TaskState(f"tx-{JSON_SECRET}", "t", "wf-secret", "wf", output={"nested": [{"k": JSON_SECRET}]})
        )
        assert provider.tasks.get_state(f"tx-{JSON_SECRET}").output == {"nested": [{"k": JSON_SECRET}]}
        with pytest.raises(NotFoundError):
            provider.tasks.get_state(f"missing-{JSON_SECRET}")
        list(provider.tasks.iter_states())
        with provider.transaction():
            provider.workflows.get_state("wf-secret")
        reader = threading.Thread(target=provider.metadata.items)
        reader.start()
        reader.join()
    asyncio.run(asynchronous())

    logged_sql = [
        getattr(r, "planflow_sql", "") for r in every_record.records if r.name == "planflow.postgres"
    ]
    assert any("INSERT INTO task_states" in sql for sql in logged_sql)  # the writes were logged, values not
    for record in every_record.records:
        text = _texts(record)
        assert password not in text, record
        assert JSON_SECRET not in text, record
    spans = telemetry.spans.get_finished_spans()
    assert spans
    for span in spans:
        assert password not in span.to_json()
        assert JSON_SECRET not in span.to_json()
    data = telemetry.metrics.get_metrics_data()
    assert data is not None
    dumped = data.to_json()
    assert password not in dumped
    assert JSON_SECRET not in dumped
    assert all(password not in repr(e) and JSON_SECRET not in repr(e) for e in events)


#: A program that configures the SDK after the README, writes through a provider it never closes, and exits.
NEVER_CLOSED = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import {processor}, ConsoleSpanExporter
from planflow import WorkflowState, open_provider

provider = TracerProvider()
provider.add_span_processor({processor}(ConsoleSpanExporter()))
trace.set_tracer_provider(provider)
store = open_provider("sqlite:///state.db", telemetry=True)
for n in range(3):
    store.workflows.upsert_state(WorkflowState(f"run-{{n}}", "checkout"))
"""


@pytest.mark.parametrize("processor", ["BatchSpanProcessor", "SimpleSpanProcessor"])
def test_spans_of_a_provider_never_closed_reach_the_exporter_before_the_interpreter_exits(
    tmp_path: Path, processor: str
) -> None:
    import subprocess

    for _ in range(3):  # it was lost 3 times in 3 (a daemon thread, never flushed)
        done = subprocess.run(
            [sys.executable, "-c", NEVER_CLOSED.format(processor=processor)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        assert done.returncode == 0, done.stderr
        assert done.stdout.count('"name": "upsert_state workflow_states"') == 3, done.stdout + done.stderr
