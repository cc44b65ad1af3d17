"""planflow history, cancel, resume, fork, and show's last transitions, through the real command."""

from __future__ import annotations

from pathlib import Path

from planflow import TaskState, TaskStatus, WorkflowState, open_provider
from tests.cli.helpers import assert_fits, planflow, sqlite_url


def a_run(path: Path) -> str:
    """A store with one workflow: a task that succeeded, one that failed, one still pending under the first."""
    with open_provider(sqlite_url(path)) as provider:
        provider.workflows.upsert_state(WorkflowState("run-1", "flow", TaskStatus.RUNNING))
        done = provider.tasks.upsert_state(TaskState("run-1/a", "a", "run-1", "flow"))
        [claimed] = provider.tasks.claim(worker="worker-with-a-long-name-" + "x" * 40, lease=60)
        provider.tasks.update_state(
            claimed.evolve(status=TaskStatus.SUCCESS, output={"ok": 1}), claimed.version
        )
        provider.tasks.upsert_state(
            TaskState(
                "run-1/b",
                "b",
                "run-1",
                "flow",
                status=TaskStatus.FAILED,
                error={"message": "disk full " * 20},
            )
        )
        provider.tasks.upsert_state(
            TaskState("run-1/c", "c", "run-1", "flow", parent_state_id=done.task_exec_id)
        )
    return sqlite_url(path)


def test_history_prints_a_timeline_within_80_columns_and_json(tmp_path: Path) -> None:
    db = a_run(tmp_path / "h.db")
    text = planflow("history", "run-1", "--db", db, cwd=tmp_path)
    as_json = planflow("history", "run-1/a", "--db", db, "--json", cwd=tmp_path).json()
    newest = planflow("history", "run-1", "--db", db, "--limit", "2", cwd=tmp_path)
    missing = planflow("history", "ghost", "--db", db, cwd=tmp_path)

    assert text.code == 0, text.err
    assert_fits(text.out)
    records = text.out.replace("\n" + " " * 4, " ").splitlines()  # continuation lines joined to their record
    assert len(records) == 6
    assert "w run-1 new -> RUNNING v1" in records[0]
    # The holder's id is whole: too long for the first line, it goes on the next.
    assert f"t run-1/a PENDING -> RUNNING v2 #1 by worker-with-a-long-name-{'x' * 40}" in records[2]
    assert records[4].endswith("t run-1/b new -> FAILED v1: " + " ".join(["disk full"] * 20))
    assert isinstance(as_json, list)
    assert [(r["from_status"], r["to_status"]) for r in as_json] == [
        (None, "PENDING"),
        ("PENDING", "RUNNING"),
        ("RUNNING", "SUCCESS"),
    ]
    assert newest.out.replace("\n" + " " * 4, " ").splitlines() == records[-2:]
    assert missing.code == 1 and "no workflow or task with exec id 'ghost'" in missing.err


def test_cancel_resume_and_fork_change_the_store_with_yes_and_refuse_without_a_terminal(
    tmp_path: Path,
) -> None:
    db = a_run(tmp_path / "c.db")
    refused = planflow("cancel", "run-1", "--reason", "stop", "--db", db, cwd=tmp_path)
    canceled = planflow("cancel", "run-1", "--reason", "stop", "--yes", "--db", db, cwd=tmp_path)
    resumed = planflow("resume", "run-1", "--yes", "--db", db, "--json", cwd=tmp_path).json()
    forked = planflow(
        "fork", "run-1", "--from", "run-1/c", "--as", "run-2", "--yes", "--db", db, cwd=tmp_path
    )
    shown = planflow("show", "run-1/b", "--db", db, cwd=tmp_path).json()

    assert refused.code == 1 and "pass --yes" in refused.err
    assert canceled.code == 0 and canceled.out.strip() == "workflow run-1 is CANCELED"
    assert isinstance(resumed, dict) and resumed["status"] == "RUNNING"
    assert forked.code == 0, forked.err
    assert forked.out.strip() == "forked run-1 as run-2: 3 tasks, 3 to run again"
    assert isinstance(shown, dict)
    assert [(t["from_status"], t["to_status"]) for t in shown["last_transitions"]] == [  # type: ignore[index]
        (None, "FAILED"),
        ("FAILED", "PENDING"),
    ]
    with open_provider(db) as provider:
        fork = provider.workflows.get_state("run-2")
        assert fork.forked_from == "run-1"
        assert {t.task_exec_id: t.status for t in fork.tasks.values()} == {
            "run-2/a": TaskStatus.PENDING,
            "run-2/b": TaskStatus.PENDING,
            "run-2/c": TaskStatus.PENDING,
        }
