"""``planflow purge`` and the listings' order, statuses and time bounds, run as the command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from planflow import ExecutionRepository, TaskState, TaskStatus, WorkflowState, open_provider
from planflow.executions import TaskOccurrence
from tests.cli.helpers import planflow, sqlite_url

OLD = datetime.now(UTC) - timedelta(days=90)


def old_store(url: str) -> None:
    """Three workflows written 90 days ago (SUCCESS, FAILED, RUNNING) with two tasks each, one written now
    (SUCCESS), and add-on occurrences from 90 days ago and from tomorrow."""
    with open_provider(url) as provider:
        for name, status in (
            ("old-ok", TaskStatus.SUCCESS),
            ("old-failed", TaskStatus.FAILED),
            ("old-running", TaskStatus.RUNNING),
        ):
            provider.workflows.import_states(
                [WorkflowState(name, "nightly", status, version=1, created_at=OLD, updated_at=OLD)]
            )
            provider.tasks.bulk_upsert(TaskState(f"{name}-{i}", f"s{i}", name, "nightly") for i in range(2))
        provider.workflows.upsert_state(WorkflowState("new-ok", "nightly", TaskStatus.SUCCESS))
        add_occurrences(provider.executions)


def add_occurrences(executions: ExecutionRepository) -> None:
    for number, when in enumerate((OLD, OLD, datetime.now(UTC) + timedelta(days=1))):
        executions.add_occurrence(TaskOccurrence(f"occ-{number}", "pill", when, None, None))


def remaining(url: str) -> tuple[list[str], int, list[str]]:
    with open_provider(url) as provider:
        workflows = sorted(w.workflow_exec_id for w in provider.workflows.iter_states())
        return (
            workflows,
            provider.tasks.count_states(),
            [o.id for o in provider.executions.list_occurrences()],
        )


def test_purge_dry_run_counts_and_deletes_nothing(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "old.db")
    old_store(db)
    before = remaining(db)
    counted = planflow("purge", "--older-than", "30d", "--dry-run", "--db", db, "--json", cwd=tmp_path).json()
    assert isinstance(counted, dict)
    assert (counted["workflows"], counted["occurrences"], counted["dry_run"]) == (2, 2, True)
    assert remaining(db) == before
    text = planflow("purge", "--older-than", "30d", "--dry-run", "--db", db, cwd=tmp_path)
    assert text.code == 0 and "would purge 2 workflows" in text.out and "2 occurrences" in text.out


def test_purge_deletes_old_finished_workflows_and_old_occurrences(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "old.db")
    old_store(db)
    run = planflow("purge", "--older-than", "30d", "--yes", "--db", db, cwd=tmp_path)
    assert run.code == 0, run.err
    assert "purged 2 workflows" in run.out and "2 occurrences" in run.out
    assert remaining(db) == (["new-ok", "old-running"], 2, ["occ-2"])
    # Nothing left to purge: nothing to confirm either.
    again = planflow("purge", "--older-than", "30d", "--db", db, "--json", cwd=tmp_path).json()
    assert isinstance(again, dict) and (again["workflows"], again["occurrences"]) == (0, 0)


def test_purge_takes_only_the_statuses_given(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "old.db")
    old_store(db)
    done = planflow(
        "purge", "--older-than", "1w", "--status", "failed", "-y", "--db", db, "--json", cwd=tmp_path
    ).json()
    assert isinstance(done, dict) and done["workflows"] == 1 and done["statuses"] == ["FAILED"]
    assert remaining(db)[0] == ["new-ok", "old-ok", "old-running"]
    both = planflow(
        "purge",
        "--older-than",
        "1w",
        "--status",
        "success,running",
        "--yes",
        "--db",
        db,
        "--json",
        cwd=tmp_path,
    ).json()
    assert isinstance(both, dict) and both["workflows"] == 2
    assert remaining(db)[0] == ["new-ok"]


def test_purge_of_the_addon_store_removes_old_occurrences_only(tmp_path: Path) -> None:
    db = f"tinydb:///{tmp_path / 'addon.json'}"
    with open_provider(db) as provider:
        add_occurrences(provider.executions)
    done = planflow("purge", "--older-than", "12h", "--yes", "--db", db, "--json", cwd=tmp_path).json()
    assert isinstance(done, dict) and (done["workflows"], done["occurrences"]) == (None, 2)
    with open_provider(db) as provider:
        assert [o.id for o in provider.executions.list_occurrences()] == ["occ-2"]


@pytest.mark.parametrize(
    "args",
    [
        ["--older-than", "30"],
        ["--older-than", "3x"],
        ["--older-than", "0d"],
        ["--older-than", "99999999999999d"],
        ["--older-than", "800000d"],
        ["--older-than", "1d", "--status", "done"],
        ["--older-than", "1d", "--batch-size", "0"],
        [],
    ],
)
def test_bad_purge_arguments_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    db = sqlite_url(tmp_path / "old.db")
    old_store(db)
    before = remaining(db)
    run = planflow("purge", *args, "--db", db, cwd=tmp_path)
    assert run.code == 2, run.both
    assert "Traceback" not in run.both
    assert remaining(db) == before


def test_a_listing_bound_before_the_calendar_starts_is_a_usage_error(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "old.db")
    old_store(db)
    run = planflow("workflows", "--since", "800000d", "--db", db, cwd=tmp_path)
    assert run.code == 2 and "before the year 1" in run.both and "Traceback" not in run.both


def test_purge_without_a_terminal_and_without_yes_deletes_nothing_and_says_how(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "old.db")
    old_store(db)
    before = remaining(db)

    run = planflow("purge", "--older-than", "30d", "--db", db, cwd=tmp_path)

    assert run.code == 1 and run.out == ""
    assert "pass --yes to purge without a terminal" in run.err and "nothing was deleted" in run.err
    assert remaining(db) == before


@pytest.mark.parametrize(("answer", "purged"), [("n", False), ("y", True), ("", False)])
def test_purge_on_a_terminal_asks_first_naming_what_it_would_delete(
    tmp_path: Path, answer: str, purged: bool
) -> None:
    import os
    import pty
    import subprocess
    import sys

    db = sqlite_url(tmp_path / "old.db")
    old_store(db)
    before = remaining(db)
    leader, follower = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PLANFLOW_")}
    child = subprocess.Popen(
        [sys.executable, "-m", "planflow", "purge", "--older-than", "30d", "--db", db],
        stdin=follower, stdout=subprocess.PIPE, stderr=follower, cwd=tmp_path, env=environ,
    )  # fmt: skip
    os.close(follower)
    asked = b""
    while b"[y/N]" not in asked:
        asked += os.read(leader, 1024)
    os.write(leader, f"{answer}\n".encode())
    out, _ = child.communicate(timeout=60)
    os.close(leader)

    assert (
        b"Purge 2 workflows (CANCELED, FAILED, SUCCESS, TIMED_OUT) with their tasks and 2 occurrences"
        in asked
    )
    if purged:
        assert child.returncode == 0 and b"purged 2 workflows" in out
        assert remaining(db) == (["new-ok", "old-running"], 2, ["occ-2"])
    else:
        assert child.returncode == 1
        assert remaining(db) == before


def test_tasks_list_newest_first_with_several_statuses_and_bounds(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "tasks.db")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with open_provider(db) as provider:
        provider.workflows.upsert_state(WorkflowState("wf", "flow"))
        provider.tasks.import_states(
            TaskState(
                f"t{i}",
                "s",
                "wf",
                "flow",
                status=[TaskStatus.FAILED, TaskStatus.SUCCESS, TaskStatus.PENDING][i % 3],
                version=1,
                created_at=start + timedelta(hours=i),
                updated_at=start + timedelta(hours=i),
            )
            for i in range(9)
        )

    def listed(*args: str) -> list[str]:
        out = planflow("tasks", "--db", db, "--json", *args, cwd=tmp_path).json()
        assert isinstance(out, list)
        return [t["task_exec_id"] for t in out]  # type: ignore[index]

    assert listed() == [f"t{i}" for i in reversed(range(9))]
    assert listed("--oldest-first") == [f"t{i}" for i in range(9)]
    assert listed("--status", "failed", "--status", "SUCCESS") == ["t7", "t6", "t4", "t3", "t1", "t0"]
    assert listed(
        "--status", "failed,success", "--since", "2025-01-01T02:00:00", "--until", "2025-01-01T07:00:00+00:00"
    ) == [
        "t6",
        "t4",
        "t3",
    ]
    assert listed("--since", "1d") == []
    bad = planflow("tasks", "--db", db, "--since", "yesterday", cwd=tmp_path)
    assert bad.code == 2 and "--since" in bad.both
