"""End to end: the real ``planflow`` command in a subprocess, on real SQLite files, TinyDB files and Postgres.

Stores are compared through the repositories, record by record with dataclass equality (every field: ids,
versions, timestamps, JSON, usage), independently of the command's own checksums (``tests/cli/helpers.py``).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from planflow import (
    ExecutionType,
    TaskFilter,
    TaskState,
    TaskStatus,
    UsageSummary,
    WorkflowState,
    open_provider,
)
from planflow.infra.sql.migrations import load_migrations
from tests.cli.helpers import (
    TERMINAL,
    add_addon_data,
    all_tasks,
    assert_fits,
    interrupted,
    planflow,
    snapshot,
    sqlite_url,
)
from tests.pg import new_postgres_url, postgres_server_url, url_with_password  # noqa: F401 - fixtures

# import planflow -------------------------------------------------------------------------------------------


def test_import_planflow_loads_neither_typer_nor_rich(tmp_path: Path) -> None:
    code = "import sys, planflow; print(sorted(m for m in ('typer', 'rich', 'click') if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_help_loads_no_command_body_no_driver_and_no_provider(tmp_path: Path) -> None:
    bodies = (
        "planflow.cli.demo",
        "planflow.cli.addon_demo",
        "planflow.cli.copy",
        "planflow.cli.progress",
        "planflow.infra.provider",
        "planflow.infra.sqlite",
        "planflow.infra.postgres",
        "planflow.infra.tinydb",
        "sqlite3",
        "psycopg",
        "tinydb",
    )
    code = (
        "import sys\nfrom planflow.cli.app import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {bodies!r} if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert "Usage" in done.stdout and done.stderr.strip().splitlines()[-1] == "[]", done.stderr


# demo ------------------------------------------------------------------------------------------------------


def test_demo_runs_on_the_embedded_default_through_the_console_script(tmp_path: Path) -> None:
    run = planflow("demo", cwd=tmp_path, script=True)

    assert run.code == 0, run.err
    assert (tmp_path / "planflow.db").exists()
    for shown in (
        "order-fulfilment",
        "enrich",
        "collect-reports",
        "fulfilment",
        "notify",
        "Progress of parent tasks",
    ):
        assert shown in run.out
    assert "LLM usage" in run.out
    assert "claims" in run.out and "0 twice" in run.out
    assert "died holding" in run.out and "refused (fenced by version)" in run.out
    assert "elapsed" in run.out
    with open_provider(sqlite_url(tmp_path / "planflow.db")) as provider:
        [workflow] = provider.workflows.list_states().items
        assert workflow.status is TaskStatus.SUCCESS
        tasks = all_tasks(sqlite_url(tmp_path / "planflow.db"))
        assert len(tasks) == 500
        assert {t.status.value for t in tasks} <= TERMINAL
        parents = {t.parent_state_id for t in tasks}
        leaves = [t for t in tasks if t.task_exec_id not in parents]
        # Each call's usage is recorded on its task only; the workflow's total is usage_total.
        leaf_usage = UsageSummary.of(e for t in leaves if t.usage for e in t.usage.entries)
        assert not [t for t in tasks if t.usage and t.task_exec_id in parents]
        total = provider.workflows.usage_total(workflow.workflow_exec_id)
        assert sorted(map(str, total.entries)) == sorted(map(str, leaf_usage.entries))
        assert all(e.cached_tokens and e.reasoning_tokens for e in total.entries)


def test_demo_progress_table_fits_an_80_column_terminal(tmp_path: Path) -> None:
    run = planflow("demo", "--tasks", "200", cwd=tmp_path, env={"COLUMNS": "80"})

    assert run.code == 0, run.err
    table = run.out[run.out.index("Progress of parent tasks") : run.out.index("LLM usage")]
    rows = [line for line in table.splitlines() if "best_effort" in line or "wait_all" in line]
    assert len(rows) >= 4, table
    for row in rows:
        assert len(row) <= 80 and "…" not in row, row
        assert row.rstrip().endswith(("SUCCESS", "FAILED")), row
        assert "%" in row, row


def test_demo_nests_a_composite_in_a_composite_and_fans_out_in_parallel(
    demo_store: tuple[Path, dict[str, object]],
) -> None:
    path, result = demo_store
    workflow_exec_id = str(result["workflow_exec_id"])
    with open_provider(sqlite_url(path)) as provider:
        types = {t.task_id: t for t in provider.workflows.get_state(workflow_exec_id).tasks.values()}
        assert types["enrich"].execution_type is ExecutionType.PARALLEL
        assert types["collect-reports"].execution_type is ExecutionType.COLLECTION
        assert types["fulfilment"].execution_type is ExecutionType.COMPOSITE
        notify = types["notify"]
        assert notify.execution_type is ExecutionType.COMPOSITE
        assert notify.parent_state_id == types["fulfilment"].task_exec_id
        depths = [node.depth for node in provider.tasks.get_task_tree(types["fulfilment"].task_exec_id)]
        assert max(depths) == 2
        assert len(provider.tasks.list_children(types["enrich"].task_exec_id)) >= 10


def test_demo_structure_and_outcome_depend_only_on_the_seed(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "seeded.db")
    runs = [
        planflow(
            "demo",
            "--db",
            db,
            "--tasks",
            "50",
            "--seed",
            "7",
            "--failure-rate",
            "0.2",
            "--json",
            cwd=tmp_path,
        )
        for _ in range(2)
    ]
    first, second = (run.json() for run in runs)
    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["workflow_exec_id"] != second["workflow_exec_id"]
    for same in ("task_statuses", "status", "tasks"):
        assert first[same] == second[same]
    # Entries come in the order the workers happened to merge them.
    assert _entries(first) == _entries(second)
    shapes = []
    for result in (first, second):
        tree = planflow("tree", str(result["workflow_exec_id"]), "--db", db, "--json", cwd=tmp_path).json()
        shapes.append(_shape(tree["tasks"]))
    assert shapes[0] == shapes[1]


def _entries(result: dict[str, object]) -> list[str]:
    usage = result["usage"]
    assert isinstance(usage, dict)
    return sorted(json.dumps(entry, sort_keys=True) for entry in usage["entries"])


def _shape(entries: list[dict[str, object]]) -> list[object]:
    return [
        (e["task"]["task_id"], e["task"]["execution_type"], e["task"]["status"], _shape(e["children"]))
        for e in entries
    ]


def test_demo_cancels_the_steps_after_a_failed_one(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "failing.db")
    result = planflow(
        "demo", "--db", db, "--tasks", "30", "--failure-rate", "1", "--json", cwd=tmp_path
    ).json()

    assert isinstance(result, dict)
    assert result["status"] == "FAILED"
    assert result["task_statuses"]["CANCELED"] == 1
    assert result["usage_consistent"] is True
    summarize = planflow("show", f"{result['workflow_exec_id']}/summarize", "--db", db, cwd=tmp_path).json()
    assert summarize["status"] == "CANCELED"


def test_demo_hands_out_work_by_claims_and_recovers_a_dead_workers_tasks(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "claims.db")
    result = planflow("demo", "--db", db, "--tasks", "200", "--workers", "16", "--json", cwd=tmp_path).json()

    assert isinstance(result, dict)
    claims = result["claims"]
    assert isinstance(claims, dict)
    leaves = 200 - 5  # the five parents are not claimed
    assert claims["completions"] == leaves and claims["double_completions"] == 0
    # One worker died holding claims; each was claimed again after its lease and finished by another.
    abandoned = claims["abandoned"]
    assert isinstance(abandoned, list) and 1 <= len(abandoned) <= 3
    assert isinstance(claims["killed_worker"], str) and claims["zombie_write_fenced"] is True
    assert isinstance(claims["reclaimed"], int) and claims["reclaimed"] >= len(abandoned)
    # Every claim was a leaf's first (each completed once), took over a lapsed one, or retried a failed attempt.
    queue = result["queue"]
    assert isinstance(queue, dict) and queue["poison_crashes"] in (1, 2)  # 1: the killed worker held it once
    assert 1 <= int(str(queue["carrier_peak"])) <= int(str(queue["carrier_limit"]))
    assert claims["claimed"] == claims["completions"] + claims["reclaimed"] + queue["retries_after_backoff"]
    assert isinstance(claims["heartbeats"], int) and claims["heartbeats"] >= 3  # the three long agent steps
    with open_provider(db) as provider:
        for exec_id in abandoned:
            state = provider.tasks.get_state(str(exec_id))
            assert state.status is not TaskStatus.RUNNING and state.claimed_by != claims["killed_worker"]
            assert state.output != {"zombie": True}


def test_demo_without_a_kill_claims_each_leaf_once(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "calm.db")
    result = planflow("demo", "--db", db, "--tasks", "60", "--no-kill", "--json", cwd=tmp_path).json()

    assert isinstance(result, dict)
    claims = result["claims"]
    assert isinstance(claims, dict)
    assert (
        claims["killed_worker"] is None
        and claims["abandoned"] == []
        and claims["zombie_write_fenced"] is None
    )
    queue = result["queue"]
    assert isinstance(queue, dict)
    if (
        claims["leases_lost"] == 0
    ):  # nobody was slower than a lease (always, but on a badly overloaded machine)
        # Each leaf claimed once, but the poison task (claimed again after its first crash, then ended FAILED)
        # and the failed attempts retried after their backoff.
        assert claims["completions"] == 55 and claims["reclaimed"] == 1 and queue["poison_crashes"] == 2
        assert claims["claimed"] == 55 + 1 + queue["retries_after_backoff"]


def test_ctrl_c_stops_the_demo_with_one_line_and_exit_130(tmp_path: Path) -> None:
    path = tmp_path / "stopped.db"

    def running() -> bool:
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as conn:
                done = conn.execute("SELECT count(*) FROM task_states WHERE status = 'SUCCESS'").fetchone()
        except sqlite3.Error:
            return False
        return done[0] >= 50

    run = interrupted("demo", "--db", sqlite_url(path), "--tasks", "3000", cwd=tmp_path, ready=running)

    assert run.code == 130, run.both
    assert run.err == "planflow: interrupted: the demo's records so far stay in the store, unfinished\n"
    assert "Traceback" not in run.both
    with open_provider(sqlite_url(path)) as provider:
        [workflow] = provider.workflows.list_states().items
        running = list(provider.tasks.iter_states(TaskFilter(status=TaskStatus.RUNNING)))
    assert workflow.status is TaskStatus.RUNNING
    # The workers handed back what they held before exiting: no claim is left to lapse.
    assert [t.task_exec_id for t in running if t.claimed_by is not None] == []
    assert running, "the parents of the leaves that ran are RUNNING"


def test_queue_shows_the_statistics_and_tasks_dead_lists_poison_work(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "queue.db")
    with open_provider(db) as provider:
        provider.workflows.upsert_state(WorkflowState("wf", "flow", status=TaskStatus.RUNNING))
        provider.tasks.set_limit("carrier-api-with-a-long-name", concurrency=2, rate=(10, 1.5))
        provider.tasks.upsert_state(TaskState("wf/poison", "crash", "wf", "flow", max_attempts=1))
        provider.tasks.upsert_state(TaskState("wf/ok", "fine", "wf", "flow", priority=-1))
        provider.tasks.claim(worker="doomed", lease=0.1)  # the poison task (the other has a lower priority)
        time.sleep(0.2)
        assert provider.tasks.claim(worker="next", lease=30) == []  # the lapsed poison task ended FAILED
        assert [s.task_exec_id for s in provider.tasks.claim(worker="next", lease=30)] == ["wf/ok"]

    stats = planflow("queue", "--db", db, "--json", cwd=tmp_path).json()
    text = planflow("queue", "--db", db, cwd=tmp_path, env={"COLUMNS": "80"})
    dead = planflow("tasks", "--dead", "--db", db, "--json", cwd=tmp_path).json()
    dead_text = planflow("tasks", "--dead", "--db", db, cwd=tmp_path, env={"COLUMNS": "80"})
    both = planflow("tasks", "--dead", "--stuck", "--db", db, cwd=tmp_path)

    assert isinstance(stats, dict) and stats["counts"] == {"FAILED": 1, "RUNNING": 1} and stats["dead"] == 1
    assert stats["keys"] == [
        {"key": "carrier-api-with-a-long-name", "running": 0, "concurrency": 2, "rate": [10, 1.5],
         "claims_in_window": 0}
    ]  # fmt: skip
    assert text.code == 0 and "dead (FAILED, attempts used up)" in text.out
    assert_fits(text.out)
    assert isinstance(dead, list) and [(t["task_exec_id"], t["attempt"]) for t in dead] == [("wf/poison", 1)]
    assert dead_text.code == 0 and "wf/poison" in dead_text.out and "wf/ok" not in dead_text.out
    assert_fits(dead_text.out)
    assert both.code != 0


def test_tasks_stuck_lists_lapsed_claims_with_their_holders_and_status_counts_them(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "stuck.db")
    with open_provider(db) as provider:
        provider.workflows.upsert_state(WorkflowState("wf", "flow", status=TaskStatus.RUNNING))
        provider.tasks.bulk_upsert(TaskState(f"wf/t{i}", f"t{i}", "wf", "flow") for i in range(4))
        only = TaskFilter(workflow_exec_id="wf")
        provider.tasks.claim(only, worker="crashed-worker", limit=2, lease=0.1)
        provider.tasks.claim(only, worker="healthy-worker", lease=3600)
    time.sleep(0.2)

    listed = planflow("tasks", "--stuck", "--db", db, "--json", cwd=tmp_path).json()
    text = planflow("tasks", "--stuck", "--db", db, cwd=tmp_path, env={"COLUMNS": "80"})
    status = planflow("status", "--db", db, "--json", cwd=tmp_path).json()
    status_text = planflow("status", "--db", db, cwd=tmp_path)
    everything = planflow("tasks", "--workflow", "wf", "--db", db, "--json", cwd=tmp_path).json()

    assert isinstance(listed, list)
    assert [(t["task_exec_id"], t["claimed_by"], t["status"]) for t in listed] == [
        ("wf/t0", "crashed-worker", "RUNNING"),
        ("wf/t1", "crashed-worker", "RUNNING"),
    ]
    assert text.code == 0 and "crashed-worker" in text.out and "healthy-worker" not in text.out
    assert "2 stuck tasks" in text.out
    assert_fits(text.out)
    assert isinstance(status, dict) and status["stuck_tasks"] == 2
    assert "2 stuck tasks: RUNNING" in status_text.out and "planflow tasks --stuck" in status_text.out
    assert isinstance(everything, list) and len(everything) == 4

    planflow(
        "tasks", "--stuck", "--db", db, cwd=tmp_path
    )  # listing changes nothing: the next claim takes over
    with open_provider(db) as provider:
        taken = provider.tasks.claim(TaskFilter(workflow_exec_id="wf"), worker="rescuer", limit=4, lease=60)
    assert [t.task_exec_id for t in taken] == ["wf/t0", "wf/t1", "wf/t3"]
    assert planflow("tasks", "--stuck", "--db", db, "--json", cwd=tmp_path).json() == []
    assert "No stuck tasks" in planflow("tasks", "--stuck", "--db", db, cwd=tmp_path).out
    refused = planflow("tasks", "--stuck", "--status", "pending", "--db", db, cwd=tmp_path)
    assert refused.code != 0 and "--stuck" in refused.err and "Traceback" not in refused.both


# migrate and status ----------------------------------------------------------------------------------------


def test_migrate_applies_every_migration_once_then_does_nothing(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "fresh.db")
    first = planflow("migrate", "--db", db, "--json", cwd=tmp_path).json()
    second = planflow("migrate", "--db", db, "--json", cwd=tmp_path).json()
    listed = planflow("migrate", "--db", db, "--status", "--json", cwd=tmp_path).json()
    text = planflow("migrate", "--db", db, cwd=tmp_path)

    known = load_migrations("sqlite")
    assert first == {
        "applied": [f"{m.version:04d}_{m.name}" for m in known],
        "schema_version": known[-1].version,
    }
    assert first["applied"][:4] == [
        "0001_initial",
        "0002_executions",
        "0003_commit_tokens",
        "0004_store_metadata",
    ]
    assert second == {"applied": [], "schema_version": known[-1].version}
    assert isinstance(listed, list) and [m["version"] for m in listed] == [m.version for m in known]
    assert all(m["applied_at"] for m in listed)
    assert text.code == 0 and "up to date" in text.out


def test_status_counts_the_demo_tasks_and_workflows_by_status(
    demo_store: tuple[Path, dict[str, object]],
) -> None:
    path, result = demo_store
    status = planflow("status", "--db", sqlite_url(path), "--json", cwd=path.parent).json()
    text = planflow("status", "--db", sqlite_url(path), cwd=path.parent)

    version = load_migrations("sqlite")[-1].version
    assert isinstance(status, dict)
    assert status.pop("file")["bytes"] == path.stat().st_size
    assert status == {
        "driver": "sqlite",
        "location": str(path),
        "schema_version": version,
        "pending_migrations": [],
        "incomplete_copy": None,
        "counts": {
            "workflows": 1,
            "tasks": result["tasks"],
            "users": 2,
            "api_keys": 2,
            "exec_tasks": 4,
            "exec_occurrences": 12,
            "exec_executions": 12,
        },
        "workflows_by_status": {result["status"]: 1},
        "stuck_tasks": 0,
    }
    assert text.code == 0
    assert "schema version" in text.out and f"{version} (current)" in text.out
    assert f" {result['tasks']} " in text.out


def test_status_of_a_missing_file_fails_without_creating_it(tmp_path: Path) -> None:
    run = planflow("status", "--db", sqlite_url(tmp_path / "absent.db"), cwd=tmp_path)

    assert run.code == 1
    assert "no sqlite store at" in run.err
    assert not (tmp_path / "absent.db").exists()


# workflows, tree, show -------------------------------------------------------------------------------------


def test_tree_of_a_workflow_holds_every_task_with_its_status(
    demo_store: tuple[Path, dict[str, object]],
) -> None:
    path, result = demo_store
    db, workflow_exec_id = sqlite_url(path), str(result["workflow_exec_id"])
    tree = planflow("tree", workflow_exec_id, "--db", db, "--json", cwd=path.parent).json()
    text = planflow("tree", workflow_exec_id, "--db", db, "--all", cwd=path.parent)

    assert isinstance(tree, dict)
    shown: dict[str, str] = {}

    def walk(entries: list[dict[str, dict[str, str]]], parent: str | None) -> None:
        for entry in entries:
            task = entry["task"]
            assert task["parent_state_id"] == parent
            shown[task["task_exec_id"]] = task["status"]
            walk(entry["children"], task["task_exec_id"])

    walk(tree["tasks"], None)
    with open_provider(db) as provider:
        stored = {
            t.task_exec_id: t.status.value
            for t in provider.tasks.list_states(
                TaskFilter(workflow_exec_id=workflow_exec_id), limit=1000
            ).items
        }
    assert shown == stored
    assert tree["workflow"]["workflow_exec_id"] == workflow_exec_id
    assert text.code == 0
    for exec_id, status in stored.items():
        assert f"{exec_id}" in text.out
        line = next(line for line in text.out.splitlines() if line.endswith(exec_id))
        assert status in line


def test_tree_of_a_task_is_its_subtree(demo_store: tuple[Path, dict[str, object]]) -> None:
    path, result = demo_store
    notify = f"{result['workflow_exec_id']}/fulfilment/notify"
    tree = planflow("tree", notify, "--db", sqlite_url(path), "--json", cwd=path.parent).json()
    text = planflow("tree", notify, "--db", sqlite_url(path), "--max-children", "1", cwd=path.parent)

    assert isinstance(tree, list) and len(tree) == 1
    assert tree[0]["task"]["task_exec_id"] == notify
    children = tree[0]["children"]
    assert len(children) >= 2
    assert text.out.splitlines()[0].startswith("SUCCESS notify")
    assert f"… {len(children) - 1} more ({len(children) - 1} SUCCESS)" in text.out


def test_show_prints_one_state_as_json(demo_store: tuple[Path, dict[str, object]]) -> None:
    path, result = demo_store
    db, workflow_exec_id = sqlite_url(path), str(result["workflow_exec_id"])
    workflow = planflow("show", workflow_exec_id, "--db", db, cwd=path.parent).json()
    with_tasks = planflow("show", workflow_exec_id, "--db", db, "--tasks", cwd=path.parent).json()
    task = planflow("show", f"{workflow_exec_id}/enrich", "--db", db, cwd=path.parent).json()
    missing = planflow("show", "no-such-id", "--db", db, cwd=path.parent)

    assert isinstance(workflow, dict) and isinstance(with_tasks, dict) and isinstance(task, dict)
    assert workflow["workflow_exec_id"] == workflow_exec_id and "tasks" not in workflow
    assert workflow["version"] >= 1 and workflow["created_at"]
    assert len(with_tasks["tasks"]) == result["tasks"]
    assert task["execution_type"] == "parallel" and task["input"]["strategy"] == "best_effort"
    assert missing.code == 1
    assert (
        missing.err.strip()
        == f"planflow: error: no workflow or task with exec id 'no-such-id' in sqlite {path}"
    )


def test_workflows_lists_and_filters_by_status(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "many.db")
    for rate in ("0", "1"):
        planflow("demo", "--db", db, "--tasks", "20", "--failure-rate", rate, "--json", cwd=tmp_path).json()
    listed = planflow("workflows", "--db", db, "--json", cwd=tmp_path).json()
    failed = planflow("workflows", "--db", db, "--status", "failed", "--json", cwd=tmp_path).json()
    text = planflow("workflows", "--db", db, "--limit", "1", cwd=tmp_path)

    oldest = planflow("workflows", "--db", db, "--oldest-first", "--json", cwd=tmp_path).json()

    assert isinstance(listed, list) and isinstance(failed, list) and isinstance(oldest, list)
    # The newest first by default.
    assert [w["status"] for w in listed] == ["FAILED", "SUCCESS"]
    assert [w["status"] for w in oldest] == ["SUCCESS", "FAILED"]
    assert [w["task_count"] for w in listed] == [20, 20]
    assert [w["workflow_exec_id"] for w in failed] == [listed[0]["workflow_exec_id"]]
    assert text.code == 0 and "FAILED" in text.out and "More exist" in text.out


def test_workflows_table_shows_whole_exec_ids_in_an_80_column_terminal(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "ids.db")
    planflow("demo", "--db", db, "--tasks", "20", "--json", cwd=tmp_path).json()
    listed = planflow("workflows", "--db", db, "--json", cwd=tmp_path).json()
    text = planflow("workflows", "--db", db, cwd=tmp_path, env={"COLUMNS": "80"})

    assert isinstance(listed, list) and text.code == 0
    for workflow in listed:
        assert isinstance(workflow, dict)
        assert str(workflow["workflow_exec_id"]) in text.out  # pasteable into planflow tree / show
    assert all(len(line) <= 80 for line in text.out.splitlines())


# copy ------------------------------------------------------------------------------------------------------


def test_copy_between_sqlite_files_keeps_every_field(
    demo_store: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    source, _ = demo_store
    target = tmp_path / "target.db"
    report = planflow(
        "copy", "--from", sqlite_url(source), "--to", sqlite_url(target), "--json", cwd=tmp_path
    ).json()

    assert isinstance(report, dict) and report["verified"] is True
    written = {t["name"]: t["written"] for t in report["tables"]}
    assert written == {
        "workflows": 1, "tasks": 60, "users": 2, "api_keys": 2, "exec_tasks": 4, "exec_occurrences": 12,
        "exec_executions": 12,
    }  # fmt: skip
    before, after = snapshot(sqlite_url(source)), snapshot(sqlite_url(target))
    assert before.keys() == after.keys()
    for table in before:
        assert after[table] == before[table], table


def test_copy_shows_a_progress_bar_and_a_verified_table(
    demo_store: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    source, _ = demo_store
    run = planflow("copy", "--from", sqlite_url(source), "--to", sqlite_url(tmp_path / "t.db"), cwd=tmp_path)

    assert run.code == 0, run.err
    assert "copy tasks" in run.out and "verify tasks" in run.out
    assert "Verified in" in run.out


def test_copy_refuses_a_non_empty_target_without_merge(
    demo_store: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    source, _ = demo_store
    target = sqlite_url(tmp_path / "busy.db")
    planflow("demo", "--db", target, "--tasks", "20", "--json", cwd=tmp_path).json()
    before = snapshot(target)

    run = planflow("copy", "--from", sqlite_url(source), "--to", target, cwd=tmp_path)

    assert run.code == 1
    assert run.err.strip().startswith("planflow: error: the target ")
    assert "is not empty (workflows, tasks hold records); pass --merge" in run.err
    assert len(run.err.strip().splitlines()) == 1
    assert snapshot(target) == before


def test_a_second_copy_with_merge_changes_nothing(
    demo_store: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    source, _ = demo_store
    target = sqlite_url(tmp_path / "again.db")
    planflow("copy", "--from", sqlite_url(source), "--to", target, "--json", cwd=tmp_path).json()
    before = snapshot(target)

    report = planflow(
        "copy", "--from", sqlite_url(source), "--to", target, "--merge", "--json", cwd=tmp_path
    ).json()

    assert isinstance(report, dict) and report["verified"] is True
    assert all(t["written"] == 0 for t in report["tables"])
    assert snapshot(target) == before


def test_merge_replaces_changed_records_and_keeps_the_targets_own(
    demo_store: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    origin, result = demo_store
    source, target = sqlite_url(tmp_path / "source.db"), sqlite_url(tmp_path / "target.db")
    planflow("copy", "--from", sqlite_url(origin), "--to", source, "--json", cwd=tmp_path).json()
    planflow("copy", "--from", source, "--to", target, "--json", cwd=tmp_path).json()
    changed_id = f"{result['workflow_exec_id']}/summarize"
    with open_provider(source) as provider:
        state = provider.tasks.get_state(changed_id)
        provider.tasks.update_state(state.evolve(output={"edited": True}), state.version)
    with open_provider(target) as provider:
        provider.workflows.upsert_state(WorkflowState("target-only", "local"))

    report = planflow("copy", "--from", source, "--to", target, "--merge", "--json", cwd=tmp_path).json()

    assert isinstance(report, dict) and report["verified"] is True
    lines = {t["name"]: t for t in report["tables"]}
    assert lines["tasks"]["written"] == 1 and lines["tasks"]["unchanged"] == 59
    assert lines["workflows"]["written"] == 0 and lines["workflows"]["target"] == 2
    with open_provider(source) as src, open_provider(target) as dst:
        assert dst.tasks.get_state(changed_id) == src.tasks.get_state(changed_id)
        assert dst.workflows.get_state("target-only").workflow_id == "local"


def test_copy_from_tinydb_moves_the_addon_data_into_sqlite(tmp_path: Path) -> None:
    pytest.importorskip("planflow.infra.tinydb.open")
    addon = f"tinydb:///{tmp_path / 'addon.json'}"
    with open_provider(addon) as provider:
        add_addon_data(provider.executions)
    target = sqlite_url(tmp_path / "moved.db")

    report = planflow("copy", "--from", addon, "--to", target, "--json", cwd=tmp_path).json()

    assert isinstance(report, dict) and report["verified"] is True
    assert [t["name"] for t in report["tables"]] == ["exec_tasks", "exec_occurrences", "exec_executions"]
    before, after = snapshot(addon), snapshot(target)
    for table in ("exec_tasks", "exec_occurrences", "exec_executions"):
        assert after[table] == before[table], table
    assert after["tasks"] == []


# errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not-a-url", "malformed URL 'not-a-url'; accepted: sqlite:///path/to.db"),
        ("nosuch.db", "'nosuch.db' is a file path, not a URL: did you mean sqlite:///nosuch.db?"),
        (
            "mysql://root:hunter2@db.example.com/app",
            "unknown driver 'mysql' in URL 'mysql://root:***@db.example.com/app'",
        ),
    ],
)
def test_a_bad_url_exits_1_with_one_clear_line(tmp_path: Path, url: str, says: str) -> None:
    for command in (["status"], ["demo"], ["copy", "--from", url, "--to", sqlite_url(tmp_path / "t.db")]):
        run = planflow(*command, *([] if command[0] == "copy" else ["--db", url]), cwd=tmp_path)

        assert run.code == 1, command
        assert run.out == ""
        assert run.err.startswith("planflow: error: ")
        assert says in run.err
        assert len(run.err.strip().splitlines()) == 1
        assert "Traceback" not in run.err and "hunter2" not in run.err


def test_the_environment_url_is_the_default_store(tmp_path: Path) -> None:
    env = {"PLANFLOW_DATABASE_URL": "oracle://scott:tiger@db/orcl"}
    run = planflow("status", cwd=tmp_path, env=env)

    assert run.code == 1
    assert "unknown driver 'oracle'" in run.err and "tiger" not in run.err


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["demo", "--tasks", "3"],
        ["demo", "--workers", "0"],
        ["demo", "--failure-rate", "2"],
        ["copy", "--from", "sqlite:///a.db"],
        ["workflows", "--status", "DONE"],
        ["tree"],
    ],
)
def test_bad_usage_exits_2(tmp_path: Path, args: list[str]) -> None:
    run = planflow(*args, cwd=tmp_path)

    assert run.code == 2, run.both
    assert "Traceback" not in run.both


def test_an_unreachable_server_fails_without_printing_the_password(tmp_path: Path) -> None:
    url = "postgresql://planflow:s3cr3t-pw@127.0.0.1:1/db?connect_timeout=2"
    for args in (["status", "--db", url], ["copy", "--from", sqlite_url(tmp_path / "x.db"), "--to", url]):
        if args[0] == "copy":
            planflow("migrate", "--db", sqlite_url(tmp_path / "x.db"), cwd=tmp_path)
        run = planflow(*args, cwd=tmp_path)

        assert run.code == 1, run.both
        assert "s3cr3t" not in run.both
        assert run.err.startswith("planflow: error: ")
        assert len(run.err.strip().splitlines()) == 1


# memory ----------------------------------------------------------------------------------------------------


def _bulk_store(url: str, workflows: int, per_workflow: int) -> None:
    with open_provider(url) as provider:
        for w in range(workflows):
            wf = f"wf-{w:04d}"
            provider.workflows.upsert_state(WorkflowState(wf, "bulk"))
            states: list[TaskState] = []
            for r in range(per_workflow // 100):
                root = f"{wf}/r{r}"
                states.append(TaskState(root, f"r{r}", wf, "bulk", execution_type=ExecutionType.PARALLEL))
                states += [
                    TaskState(
                        f"{root}/c{c}", f"c{c}", wf, "bulk", parent_state_id=root, input={"text": "x" * 200}
                    )
                    for c in range(99)
                ]
            provider.tasks.bulk_upsert(states)


def _max_rss_kb(args: list[str], cwd: Path) -> int:
    code = (
        "import resource, runpy, sys\n"
        f"sys.argv = ['planflow', *{args!r}]\n"
        "try:\n    runpy.run_module('planflow', run_name='__main__')\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_copy_memory_does_not_grow_with_the_number_of_tasks(tmp_path: Path) -> None:
    small, large = sqlite_url(tmp_path / "small.db"), sqlite_url(tmp_path / "large.db")
    _bulk_store(small, 2, 1000)
    _bulk_store(large, 24, 1000)

    rss_small = _max_rss_kb(
        ["copy", "--from", small, "--to", sqlite_url(tmp_path / "s.db"), "--json"], tmp_path
    )
    rss_large = _max_rss_kb(
        ["copy", "--from", large, "--to", sqlite_url(tmp_path / "l.db"), "--json"], tmp_path
    )

    # Holding 22 000 more tasks would take well over 30 MB; pages of 1 000 keep the difference to noise.
    assert rss_large - rss_small < 15_000, (rss_small, rss_large)


# Postgres --------------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_demo_on_postgres(new_postgres_url: Callable[[], str], tmp_path: Path) -> None:  # noqa: F811
    url = new_postgres_url()
    result = planflow("demo", "--db", url, "--tasks", "120", "--workers", "8", "--json", cwd=tmp_path).json()
    status = planflow("status", "--db", url, "--json", cwd=tmp_path).json()

    assert isinstance(result, dict) and isinstance(status, dict)
    assert result["status"] == "SUCCESS" and result["usage_consistent"] is True
    assert status["counts"]["tasks"] == 120
    assert status["workflows_by_status"] == {"SUCCESS": 1}


@pytest.mark.postgres
def test_copy_sqlite_to_postgres_and_back_keeps_every_field(
    demo_store: tuple[Path, dict[str, object]],
    new_postgres_url: Callable[[], str],  # noqa: F811
    tmp_path: Path,
) -> None:
    source, back = sqlite_url(demo_store[0]), sqlite_url(tmp_path / "back.db")
    middle = new_postgres_url()

    there = planflow("copy", "--from", source, "--to", middle, "--json", cwd=tmp_path).json()
    again = planflow("copy", "--from", source, "--to", middle, "--merge", "--json", cwd=tmp_path).json()
    home = planflow("copy", "--from", middle, "--to", back, "--json", cwd=tmp_path).json()

    for report in (there, again, home):
        assert isinstance(report, dict) and report["verified"] is True
    assert all(t["written"] == 0 for t in again["tables"])
    original = snapshot(source)
    for copy in (snapshot(middle), snapshot(back)):
        for table in original:
            assert copy[table] == original[table], table


@pytest.mark.postgres
def test_a_postgres_password_is_never_printed(
    demo_store: tuple[Path, dict[str, object]],
    new_postgres_url: Callable[[], str],  # noqa: F811
    tmp_path: Path,
) -> None:
    # The server's own password, or a made-up one where the server asks for none: the URL carries it.
    url, password = url_with_password(new_postgres_url())
    runs = [
        planflow("demo", "--db", url, "--tasks", "20", cwd=tmp_path),
        planflow("status", "--db", url, cwd=tmp_path),
        planflow("status", "--db", url, "--json", cwd=tmp_path),
        planflow("copy", "--from", sqlite_url(demo_store[0]), "--to", url, cwd=tmp_path),
        planflow("show", "missing", "--db", url, cwd=tmp_path),
    ]

    assert [run.code for run in runs] == [0, 0, 0, 1, 1]
    for run in runs:
        assert password not in run.both
    assert "postgres" in runs[1].out and ":***@" in runs[1].out
