"""What the commands print, at 80 columns: tables and hints fit or fold cleanly, ids are never cut, large trees
are summarised (and fast), and progress bars carry a rate and an ETA."""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from planflow import TaskFilter, open_provider
from planflow.cli.progress import RichProgress
from tests.cli.helpers import assert_fits, big_workflow, planflow, sqlite_url

NARROW = {"COLUMNS": "80"}
#: One bar line: phase, bar, done/total, rate, elapsed, "eta" and the time remaining.
BAR = r"{phase} +━+ *[\d,]+/[\d,]+ +[\d,]+/s +\d+:\d\d:\d\d eta \d+:\d\d:\d\d"
LABEL = re.compile(r"(SUCCESS|FAILED) (enrich-\d{4}) ")
TASK_LINE = re.compile(r"── (?:SUCCESS|FAILED|CANCELED) ")


@pytest.fixture(scope="module")
def twenty_thousand(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A SQLite file with one workflow of 20 000 tasks (5% of the leaves FAILED); never written by tests."""
    path = tmp_path_factory.mktemp("tree") / "big.db"
    return path, big_workflow(sqlite_url(path), 20_000)


def test_every_command_fits_80_columns_and_keeps_ids_whole(tmp_path: Path) -> None:
    demo = planflow("demo", "--tasks", "200", cwd=tmp_path, env=NARROW)
    assert demo.code == 0, demo.err
    with open_provider(sqlite_url(tmp_path / "planflow.db")) as provider:
        [workflow] = provider.workflows.list_states().items
        notify = provider.tasks.list_states(TaskFilter(task_id="notify")).items[0].task_exec_id
    runs = {
        "demo": demo,
        "status": planflow("status", cwd=tmp_path, env=NARROW),
        "workflows": planflow("workflows", cwd=tmp_path, env=NARROW),
        "tree": planflow("tree", workflow.workflow_exec_id, cwd=tmp_path, env=NARROW),
        "tree of a task": planflow("tree", notify, cwd=tmp_path, env=NARROW),
        "migrate": planflow("migrate", cwd=tmp_path, env=NARROW),
        "migrate --status": planflow("migrate", "--status", cwd=tmp_path, env=NARROW),
        "copy": planflow("copy", "--from", "sqlite:///planflow.db", "--to", "sqlite:///c.db", cwd=tmp_path, env=NARROW),
        "copy --only": planflow(
            "copy", "--from", "sqlite:///planflow.db", "--to", "tinydb:///a.json", "--only", "executions",
            cwd=tmp_path, env=NARROW,
        ),
        "demo tinydb": planflow("demo", "--db", "tinydb:///d.json", cwd=tmp_path, env=NARROW),
        "status tinydb": planflow("status", "--db", "tinydb:///d.json", cwd=tmp_path, env=NARROW),
        "migrate tinydb": planflow("migrate", "--db", "tinydb:///d.json", cwd=tmp_path, env=NARROW),
    }  # fmt: skip

    for name, run in runs.items():
        assert run.code == 0, (name, run.err)
        assert_fits(run.out)
    assert workflow.workflow_exec_id in runs["workflows"].out.split()
    assert "order-fulfilment" in runs["workflows"].out.split()
    # Every task line of the tree carries its exec id whole (folded onto the next line when long).
    ids = [word for word in runs["tree"].out.split() if word.startswith(f"{workflow.workflow_exec_id}/")]
    assert set(ids) <= {state.task_exec_id for state in workflow.tasks.values()}
    assert len(ids) == len(TASK_LINE.findall(runs["tree"].out)) > 20
    for command in (f"planflow tree {workflow.workflow_exec_id}", "planflow status", "planflow workflows"):
        assert f"  {command}" in demo.out.splitlines()


def test_the_hints_name_the_store_that_was_given(tmp_path: Path) -> None:
    run = planflow("demo", "--db", "sqlite:///mine.db", "--tasks", "20", cwd=tmp_path, env=NARROW)

    assert run.code == 0, run.err
    hints = run.out[run.out.index("Next:") :].splitlines()[1:]
    assert hints[1:] == [
        "  planflow status --db sqlite:///mine.db",
        "  planflow workflows --db sqlite:///mine.db",
    ]
    assert hints[0].startswith("  planflow tree demo-42-") and hints[0].endswith(" --db sqlite:///mine.db")


def test_tree_shows_20_children_per_parent_and_sums_up_the_rest_worst_status_first(
    twenty_thousand: tuple[Path, str], tmp_path: Path
) -> None:
    path, workflow_exec_id = twenty_thousand
    run = planflow("tree", workflow_exec_id, "--db", sqlite_url(path), cwd=tmp_path, env=NARROW)
    few = planflow("tree", workflow_exec_id, "--db", sqlite_url(path), "--max-children", "3", cwd=tmp_path)

    assert run.code == 0, run.err
    assert_fits(run.out)
    with open_provider(sqlite_url(path)) as provider:
        children = provider.tasks.list_children(f"{workflow_exec_id}/enrich")
    shown = LABEL.findall(run.out)
    assert len(shown) == 20
    hidden = Counter(c.status.value for c in children) - Counter(status for status, _ in shown)
    assert hidden["FAILED"] > 0 and hidden["SUCCESS"] > 0
    summary = f"… {len(children) - 20:,} more ({hidden['FAILED']:,} FAILED, {hidden['SUCCESS']:,} SUCCESS)"
    assert summary in run.out
    assert len(run.out.splitlines()) < 250
    assert few.code == 0 and len(LABEL.findall(few.out)) == 3
    assert f"… {len(children) - 3:,} more (" in few.out


def test_tree_all_shows_every_child(demo_store: tuple[Path, dict[str, object]]) -> None:
    path, result = demo_store
    shown = planflow(
        "tree", str(result["workflow_exec_id"]), "--db", sqlite_url(path), "--all", cwd=path.parent
    )

    assert shown.code == 0, shown.err
    assert " more (" not in shown.out
    assert len(TASK_LINE.findall(shown.out)) == result["tasks"]


def test_tree_of_20000_tasks_prints_a_few_hundred_lines_nested_as_in_the_store(
    twenty_thousand: tuple[Path, str], tmp_path: Path
) -> None:
    # How long it takes is measured by benchmarks/cli_tree_bench.py: a test asserts what it prints.
    path, workflow_exec_id = twenty_thousand
    run = planflow("tree", workflow_exec_id, "--db", sqlite_url(path), cwd=tmp_path)  # wide: one line a task

    assert run.code == 0, run.err
    assert len(run.out.splitlines()) < 250
    with open_provider(sqlite_url(path)) as provider:
        parents = {
            s.task_exec_id: s.parent_state_id
            for s in provider.tasks.iter_states(TaskFilter(workflow_exec_id=workflow_exec_id))
        }
    # Each task line sits one level (4 columns) deeper than its parent's line, which came before it.
    stack: list[str] = []
    lines = 0
    for line in run.out.splitlines():
        found = re.search(r"[├└]── .*  (\S+)$", line)
        if found is None or found[1] not in parents:
            continue
        depth = line.index("──") // 4
        stack = stack[:depth]
        assert parents[found[1]] == (stack[-1] if stack else None), line
        stack.append(found[1])
        lines += 1
    assert lines > 40


def test_progress_bars_of_demo_and_copy_show_counts_rate_elapsed_and_eta(tmp_path: Path) -> None:
    demo = planflow("demo", "--tasks", "60", cwd=tmp_path, env=NARROW)
    copy = planflow(
        "copy", "--from", "sqlite:///planflow.db", "--to", "sqlite:///c.db", cwd=tmp_path, env=NARROW
    )

    assert demo.code == 0 and copy.code == 0, demo.err + copy.err
    assert re.search(BAR.format(phase="tasks"), demo.out), demo.out
    for phase in ("copy workflows", "copy tasks", "verify tasks"):
        assert re.search(BAR.format(phase=phase), copy.out), copy.out


def test_the_progress_helper_serves_any_command_with_the_same_columns() -> None:
    out = io.StringIO()
    with RichProgress(Console(file=out, width=80)) as bar:
        bar.start("purge workflows", 1500)
        for _ in range(3):
            bar.advance("purge workflows", 500)

    assert re.search(BAR.format(phase="purge workflows"), out.getvalue()), out.getvalue()
    assert "1,500/1,500" in out.getvalue()
