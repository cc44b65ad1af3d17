"""The add-on's store (TinyDB) on the command line: the demo runs it, migrate and status tell its truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from planflow import open_provider
from tests.cli.helpers import assert_fits, planflow

pytest.importorskip("planflow.infra.tinydb.open")

FINAL_EVENT = {"done": "completed", "missed": "missed"}


def test_demo_on_tinydb_runs_the_addons_scheduler_and_every_write_from_the_timer_threads_is_kept(
    tmp_path: Path,
) -> None:
    url = f"tinydb:///{tmp_path / 'addon.json'}"
    result = planflow("demo", "--db", url, "--workers", "6", "--json", cwd=tmp_path).json()

    assert isinstance(result, dict)
    assert result["driver"] == "tinydb" and result["tasks"] == 20
    assert result["history_consistent"] is True
    assert 1 < result["timer_threads"] <= 6
    with open_provider(url) as provider:
        tasks = provider.executions.list_tasks()
        occurrences = provider.executions.list_occurrences()
        executions = provider.executions.list_executions()
    assert len(tasks) == 20 and len(occurrences) == len(executions) == result["occurrences"]
    assert {occ.task_id for occ in occurrences} <= {task.id for task in tasks}
    states = {state: sum(e.state == state for e in executions) for state in result["executions_by_state"]}
    assert states == result["executions_by_state"]
    assert "pending" not in states
    for execution in executions:
        if execution.state == "cancelled":
            assert execution.history == []
        else:
            assert execution.history[0].event == "triggered"
            assert execution.history[-1].event == FINAL_EVENT[execution.state]
    assert sum(e.retry_count for e in executions) == result["rescheduled"] > 0
    # Each firing wrote its own record; the pending records were written in one batch before.
    assert result["writes"] >= result["fired"] >= len(executions) - states.get("cancelled", 0)


def test_demo_on_tinydb_depends_only_on_the_seed(tmp_path: Path) -> None:
    url = f"tinydb:///{tmp_path / 'addon.json'}"
    first, second = (
        planflow("demo", "--db", url, "--seed", "5", "--tasks", "30", "--json", cwd=tmp_path).json()
        for _ in range(2)
    )

    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["run_id"] != second["run_id"]
    for same in ("tasks", "occurrences", "executions_by_state", "fired", "rescheduled"):
        assert first[same] == second[same], same
    with open_provider(url) as provider:
        assert len(provider.executions.list_tasks()) == 60  # the second run added to the first


def test_demo_on_tinydb_shows_the_tasks_and_what_became_of_them_at_80_columns(tmp_path: Path) -> None:
    run = planflow("demo", "--db", "tinydb:///addon.json", cwd=tmp_path, env={"COLUMNS": "80"})

    assert run.code == 0, run.err
    assert_fits(run.out)
    assert "20 task definitions (the add-on's)" in run.out
    assert "Morning pills" in run.out and "timer threads" in run.out
    assert "occurrences ━" in run.out and "/s" in run.out and "eta" in run.out
    assert run.out.rstrip().endswith("Next:\n  planflow status --db tinydb:///addon.json")


def test_migrate_on_tinydb_says_there_is_nothing_to_migrate_and_creates_no_file(tmp_path: Path) -> None:
    url = "tinydb:///fresh.json"
    text = planflow("migrate", "--db", url, cwd=tmp_path, env={"COLUMNS": "80"})
    data = planflow("migrate", "--db", url, "--json", cwd=tmp_path).json()
    listed = planflow("migrate", "--db", url, "--status", "--json", cwd=tmp_path).json()

    assert text.code == 0, text.err
    assert "nothing to" in text.out and "migrate" in text.out
    assert "does not exist yet: its first write creates it" in " ".join(text.out.split())
    assert data == {"applied": [], "schema_version": None, "file": None}
    assert listed == []
    assert not (tmp_path / "fresh.json").exists()


def test_migrate_on_an_existing_tinydb_file_names_its_size(tmp_path: Path) -> None:
    planflow("demo", "--db", "tinydb:///addon.json", "--json", cwd=tmp_path).json()
    size = (tmp_path / "addon.json").stat().st_size

    run = planflow("migrate", "--db", "tinydb:///addon.json", cwd=tmp_path)

    assert run.code == 0, run.err
    assert f"the file holds {size:,} bytes" in run.out
    assert (tmp_path / "addon.json").stat().st_size == size


def test_status_of_a_tinydb_store_shows_its_file_and_records_and_no_schema(tmp_path: Path) -> None:
    demo = planflow("demo", "--db", "tinydb:///addon.json", "--json", cwd=tmp_path).json()
    status = planflow("status", "--db", "tinydb:///addon.json", "--json", cwd=tmp_path).json()
    text = planflow("status", "--db", "tinydb:///addon.json", cwd=tmp_path, env={"COLUMNS": "80"})

    assert isinstance(demo, dict) and isinstance(status, dict)
    assert status["schema_version"] is None and status["pending_migrations"] == []
    assert status["file"]["bytes"] == (tmp_path / "addon.json").stat().st_size
    assert status["counts"] == {
        "exec_tasks": 20,
        "exec_occurrences": demo["occurrences"],
        "exec_executions": demo["occurrences"],
    }
    assert status["incomplete_copy"] is None
    assert text.code == 0, text.err
    assert_fits(text.out)
    assert "schema version" not in text.out and "planflow migrate" not in text.out
    assert "none: a TinyDB store keeps documents" in text.out


def test_status_of_a_missing_tinydb_file_says_its_first_write_creates_it(tmp_path: Path) -> None:
    run = planflow("status", "--db", "tinydb:///absent.json", cwd=tmp_path)

    assert run.code == 1
    assert run.err.startswith("planflow: error: no tinydb store at absent.json; ")
    assert "a TinyDB file is created by its first write" in run.err
    assert "planflow migrate" not in run.err
    assert not (tmp_path / "absent.json").exists()
