"""stdlib logging: DEBUG per statement (duration, rows, SQL text, no bound value), INFO per migration applied,
WARNING per statement slower than ``slow_statement_ms``, and the setting's validation everywhere it is read."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

import pytest

from planflow import (
    ConfigError,
    PlanflowConfig,
    TaskState,
    ValidationError,
    WorkflowState,
    open_async_provider,
    open_provider,
)
from planflow.config import config_from_env, resolve_config

DRIVERS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DRIVERS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        made: str = request.getfixturevalue("postgres_url")
        return made
    return f"sqlite:///{tmp_path / 'log.db'}"


def _driver_logger(url: str) -> str:
    return "planflow.postgres" if url.startswith("postgres") else "planflow.sqlite"


def test_debug_logs_each_statement_with_duration_rows_and_sql_only(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with open_provider(url) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-log", "wf", input={"marker": "BOUND-VALUE-1"}))
        with caplog.at_level(logging.DEBUG, logger=_driver_logger(url)):
            provider.workflows.get_state("wf-log")
    records = [r for r in caplog.records if r.name == _driver_logger(url)]
    assert records, "no statement was logged"
    assert all(r.levelno == logging.DEBUG for r in records)
    selects = [r for r in records if "FROM workflow_states" in getattr(r, "planflow_sql", "")]
    assert selects
    record = selects[0]
    assert record.planflow_driver == ("postgres" if url.startswith("postgres") else "sqlite")  # type: ignore[attr-defined]
    assert record.planflow_duration_ms >= 0  # type: ignore[attr-defined]
    assert record.planflow_rows == 1  # type: ignore[attr-defined]
    assert record.planflow_error is None  # type: ignore[attr-defined]
    for r in records:
        assert "wf-log" not in r.getMessage()
        assert "BOUND-VALUE-1" not in r.getMessage()


def test_nothing_is_logged_per_statement_below_debug(url: str, caplog: pytest.LogCaptureFixture) -> None:
    with open_provider(url) as provider, caplog.at_level(logging.INFO, logger="planflow"):
        provider.workflows.upsert_state(WorkflowState("wf-quiet", "wf"))
        provider.workflows.get_state("wf-quiet")
    assert [r for r in caplog.records if r.name == _driver_logger(url)] == []


def test_a_failed_statement_is_logged_with_its_error_class(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        open_provider(f"sqlite:///{tmp_path / 'f.db'}") as provider,
        caplog.at_level(logging.DEBUG, logger="planflow.sqlite"),
        pytest.raises(ValidationError),
    ):
        provider.tasks.upsert_state(TaskState("tx-orphan", "t", "no-such-workflow", "wf"))
    failed = [r for r in caplog.records if getattr(r, "planflow_error", None)]
    assert failed
    assert "failed" in failed[0].getMessage()


def test_each_migration_applied_is_logged_at_info(url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="planflow.migrations"), open_provider(url) as provider:
        applied = [m for m in provider.migration_status() if m.applied_at is not None]
    records = [r for r in caplog.records if r.name == "planflow.migrations"]
    assert len(records) == len(applied) >= 6
    assert all(r.levelno == logging.INFO for r in records)
    assert [getattr(r, "planflow_migration", None) for r in records] == [m.version for m in applied]
    with caplog.at_level(logging.INFO, logger="planflow.migrations"), open_provider(url):
        pass  # nothing pending: nothing logged
    assert len([r for r in caplog.records if r.name == "planflow.migrations"]) == len(applied)


def test_statements_slower_than_slow_statement_ms_are_warnings(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        open_provider({"url": url, "slow_statement_ms": 0}) as provider,
        caplog.at_level(logging.WARNING, logger=_driver_logger(url)),
    ):
        provider.workflows.upsert_state(WorkflowState("wf-slow", "wf"))
    slow = [r for r in caplog.records if r.name == _driver_logger(url)]
    assert slow
    assert all(r.levelno == logging.WARNING and "slow statement" in r.getMessage() for r in slow)
    assert all(r.planflow_duration_ms > 0 for r in slow)  # type: ignore[attr-defined]


def test_statements_faster_than_slow_statement_ms_are_not_warnings(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        open_provider({"url": url, "slow_statement_ms": 60_000}) as provider,
        caplog.at_level(logging.WARNING, logger=_driver_logger(url)),
    ):
        provider.workflows.upsert_state(WorkflowState("wf-fast", "wf"))
    assert [r for r in caplog.records if r.name == _driver_logger(url)] == []


def test_async_statements_are_logged_too(url: str, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with await open_async_provider(url) as provider:
            await provider.workflows.upsert_state(WorkflowState("wf-async-log", "wf"))

    with caplog.at_level(logging.DEBUG, logger=_driver_logger(url)):
        asyncio.run(main())
    assert any("workflow_states" in getattr(r, "planflow_sql", "") for r in caplog.records)


def test_slow_statement_ms_is_read_from_object_mapping_url_and_environment() -> None:
    assert PlanflowConfig(slow_statement_ms=5).slow_statement_ms == 5
    assert resolve_config({"slow_statement_ms": "2.5"}).slow_statement_ms == 2.5
    assert resolve_config("sqlite:///x.db?slow_statement_ms=7").slow_statement_ms == 7.0
    pg = resolve_config("postgresql://u:pw@h/db?slow_statement_ms=9&sslmode=disable")
    assert pg.slow_statement_ms == 9.0
    assert "slow_statement_ms" not in (pg.url or "")
    env = config_from_env({"PLANFLOW_DATABASE_URL": "sqlite:///x.db", "PLANFLOW_DB_SLOW_STATEMENT_MS": "3"})
    assert env is not None
    assert env.slow_statement_ms == 3.0
    assert PlanflowConfig().slow_statement_ms is None


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, math.inf, -math.inf, "-1", "nan", "inf", "soon", True])
def test_a_negative_or_non_finite_slow_statement_ms_is_a_config_error_naming_it(bad: object) -> None:
    with pytest.raises(ConfigError, match="slow_statement_ms"):
        resolve_config({"path": ":memory:", "slow_statement_ms": bad})


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "x"])
def test_a_bad_slow_statement_ms_in_a_url_or_the_environment_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="slow_statement_ms"):
        resolve_config(f"sqlite:///x.db?slow_statement_ms={bad}")
    with pytest.raises(ConfigError, match="slow_statement_ms"):
        config_from_env({"PLANFLOW_DATABASE_URL": "sqlite:///x.db", "PLANFLOW_DB_SLOW_STATEMENT_MS": bad})
    with pytest.raises(ConfigError, match="slow_statement_ms"):
        PlanflowConfig(slow_statement_ms=float(bad) if bad != "x" else bad)  # type: ignore[arg-type]
