"""The ``planflow`` command: demo, migrate, status, workflows, tree, show, copy.

Every subcommand takes ``--db URL`` (default: ``PLANFLOW_DATABASE_URL``, else the embedded SQLite file
``planflow.db`` in the current directory); listings take ``--json``. A planflow error prints one line to stderr
and exits 1; bad usage exits 2. Locations are printed with any password replaced by ``***``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from planflow.cli import render
from planflow.cli.copy import DEFAULT_BATCH, CopyError, copy_store
from planflow.cli.demo import (
    DEFAULT_FAILURE_RATE,
    DEFAULT_SEED,
    DEFAULT_TASKS,
    DEFAULT_WORKERS,
    MIN_TASKS,
    DemoResult,
    DemoRun,
    build_plan,
)
from planflow.cli.records import WorkflowsTable, served_tables, serves, to_json, workflow_json
from planflow.config import PlanflowConfig, redact_url, resolve_config
from planflow.errors import ConfigError, MigrationError, NotFoundError, PlanflowError
from planflow.infra.provider import Provider, open_provider
from planflow.models import JsonValue, TaskFilter, TaskStatus, TaskTreeNode, WorkflowFilter

app = typer.Typer(
    name="planflow",
    help="Workflow and task execution state on SQLite, PostgreSQL or TinyDB: run a demo, migrate, inspect, copy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        show_default=False,
        help="Store URL (sqlite:///file.db, postgresql://user:pw@host/db, tinydb:///file.json). "
        "Default: $PLANFLOW_DATABASE_URL, else the SQLite file planflow.db here.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]

console = Console()
_FILE_DRIVERS = ("sqlite", "tinydb")


def _config(db: str | None, *, auto_migrate: bool | None = None, must_exist: bool = False) -> PlanflowConfig:
    """The config of ``--db``; ``must_exist`` refuses a store file that is not there (reads never create one)."""
    config = resolve_config(db)
    if auto_migrate is not None:
        config = dataclasses.replace(config, auto_migrate=auto_migrate)
    local = config.driver in _FILE_DRIVERS and not config.is_memory
    if must_exist and local and not Path(config.location).exists():
        raise ConfigError(
            f"no {config.driver} store at {config.location}; pass --db URL, set PLANFLOW_DATABASE_URL, "
            "or create one with 'planflow migrate' or 'planflow demo'"
        )
    return config


def _open(db: str | None, *, auto_migrate: bool | None = None, must_exist: bool = False) -> Provider:
    return open_provider(_config(db, auto_migrate=auto_migrate, must_exist=must_exist))


def _print_json(value: JsonValue) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _where(provider: Provider) -> str:
    return f"{provider.driver} {provider.config.location}"


# demo -------------------------------------------------------------------------------------------------------


@app.command()
def demo(
    *,
    db: DbOption = None,
    tasks: Annotated[
        int, typer.Option(min=MIN_TASKS, help="Number of task states in the workflow.")
    ] = DEFAULT_TASKS,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker threads.")] = DEFAULT_WORKERS,
    seed: Annotated[
        int, typer.Option(help="Seed of the structure, failures and token counts.")
    ] = DEFAULT_SEED,
    failure_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Chance that an item of a best-effort fan-out fails.")
    ] = DEFAULT_FAILURE_RATE,
    max_children: Annotated[
        int, typer.Option(min=1, help="Children shown per task in the tree; the rest are summarised.")
    ] = 6,
    as_json: JsonOption = False,
) -> None:
    """Run a realistic workflow execution with worker threads, then show what the store holds."""
    with _open(db) as provider:
        _ = (
            provider.tasks,
            provider.workflows,
        )  # a store without them fails here, before anything is written
        plan = build_plan(tasks, seed, failure_rate=failure_rate)
        if not as_json:
            console.print(
                Text.assemble(
                    "planflow demo on ",
                    (_where(provider), "bold"),
                    f": {len(plan.steps)} tasks, {workers} workers, seed {seed}",
                )
            )
        with render.RichProgress(console, enabled=not as_json) as bar:
            bar.start("tasks", len(plan.leaves))  # here, so that the workers only ever update it
            result = DemoRun(
                provider,
                plan,
                workers=workers,
                on_progress=lambda done, total: bar.update("tasks", done, total),
            ).run()
        if not result.usage_consistent:
            stored = result.workflow.usage.total_tokens if result.workflow.usage else 0
            raise PlanflowError(
                f"the workflow's merged usage ({stored} tokens) differs from the sum of its calls "
                f"({result.merged_usage.total_tokens} tokens): a concurrent merge was lost"
            )
        if as_json:
            _print_json(_demo_json(provider, result))
        else:
            _show_demo(provider, result, max_children)


def _status_counts(result: DemoResult) -> dict[str, int]:
    """How many of the run's tasks ended in each status."""
    counts: dict[str, int] = {}
    for step in result.plan.steps:
        status = result.workflow.tasks[step.task_id].status.value
        counts[status] = counts.get(status, 0) + 1
    return dict(sorted(counts.items()))


def _demo_json(provider: Provider, result: DemoResult) -> JsonValue:
    return {
        "driver": provider.driver,
        "location": provider.config.location,
        "workflow_exec_id": result.plan.workflow_exec_id,
        "workflow_id": result.plan.workflow_id,
        "status": result.workflow.status.value,
        "tasks": len(result.plan.steps),
        "task_statuses": dict(_status_counts(result)),
        "top_level_tasks": [root.exec_id for root in result.plan.roots],
        "conflicts": {
            "claims_lost": result.stats.claims_lost,
            "parent_retries": result.stats.parent_retries,
            "total": result.stats.conflicts,
        },
        "usage": to_json(result.workflow.usage),
        "usage_consistent": result.usage_consistent,
        "elapsed_seconds": round(result.elapsed, 3),
    }


def _show_demo(provider: Provider, result: DemoResult, max_children: int) -> None:
    plan, workflow = result.plan, result.workflow
    tree = Tree(render.workflow_label(workflow))
    for root in plan.roots:
        render.add_task_tree(
            tree, provider.tasks.get_task_tree(root.exec_id), max_children=max_children, exec_ids=False
        )
    rows = [
        (workflow.tasks[step.task_id], provider.tasks.get_progress_info(step.exec_id), step.strategy)
        for step in plan.parents
    ]
    counts = _status_counts(result)
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row(
        "workflow", Text.assemble(render.status_text(workflow.status), f"  {workflow.workflow_exec_id}")
    )
    summary.add_row("tasks", ", ".join(f"{n} {status}" for status, n in counts.items()))
    summary.add_row(
        "conflicts resolved",
        f"{result.stats.conflicts} ({result.stats.claims_lost} lost claims of a pending task, "
        f"{result.stats.parent_retries} parent status updates recomputed)",
    )
    tokens = workflow.usage.total_tokens if workflow.usage else 0
    summary.add_row("usage", f"{tokens:,} tokens merged concurrently, equal to the sum of every call")
    summary.add_row("elapsed", f"{result.elapsed:.2f} s")
    console.print(
        Group(tree, "", render.progress_table(rows), "", render.usage_table(workflow.usage), "", summary)
    )
    console.print(
        Text(
            f"Explore: planflow tree {workflow.workflow_exec_id}  ·  planflow status  ·  planflow workflows",
            "dim",
        )
    )


# migrate and status -----------------------------------------------------------------------------------------


@app.command()
def migrate(
    db: DbOption = None,
    status: Annotated[
        bool, typer.Option("--status", help="List applied and pending migrations instead.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Apply pending schema migrations (a no-op when the schema is current)."""
    with _open(db, auto_migrate=False) as provider:
        if status:
            statuses = provider.migration_status()
            if as_json:
                _print_json([to_json(s) for s in statuses])
            else:
                console.print(render.migrations_table(statuses))
            return
        applied = provider.migrate()
        version = max((s.version for s in provider.migration_status() if s.applied_at), default=0)
        if as_json:
            _print_json(
                {"applied": [f"{m.version:04d}_{m.name}" for m in applied], "schema_version": version}
            )
        elif applied:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
            console.print(f"Applied {len(applied)} migration(s) to {_where(provider)}: {names}")
        else:
            console.print(f"{_where(provider)} is up to date (schema version {version}); nothing to apply.")


@app.command()
def status(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Show the store: driver, location, schema version, records per table and workflows per status."""
    with _open(db, auto_migrate=False, must_exist=True) as provider:
        migrations = provider.migration_status()
        version = max((m.version for m in migrations if m.applied_at), default=0)
        pending = [m for m in migrations if m.applied_at is None]
        counts: dict[str, int] = {}
        by_status: dict[str, int] = {}
        if not pending:
            for table in served_tables(provider):
                if isinstance(table, WorkflowsTable):
                    by_status = {s.value: n for s, n in sorted(table.count_by_status(provider).items())}
                    counts[table.name] = sum(by_status.values())
                else:
                    counts[table.name] = table.count(provider)
        if as_json:
            _print_json(
                {
                    "driver": provider.driver,
                    "location": provider.config.location,
                    "schema_version": version,
                    "pending_migrations": [f"{m.version:04d}_{m.name}" for m in pending],
                    "counts": dict(counts),
                    "workflows_by_status": dict(by_status),
                }
            )
            return
        about = Table.grid(padding=(0, 2))
        about.add_column(style="bold")
        about.add_column()
        about.add_row("driver", provider.driver)
        about.add_row("location", provider.config.location)
        if provider.driver in ("sqlite", "postgres"):
            about.add_row(
                "schema version", f"{version} ({len(pending)} pending)" if pending else f"{version} (current)"
            )
        console.print(about)
        if pending:
            console.print(
                Text(
                    f"{len(pending)} pending migration(s): run 'planflow migrate' to see the records.",
                    "yellow",
                )
            )
            return
        console.print(render.counts_table(counts, title="Records"))
        if serves(provider, "workflows"):
            console.print(render.counts_table(by_status, title="Workflows by status", key="status"))


# workflows, tree, show --------------------------------------------------------------------------------------


@app.command()
def workflows(
    db: DbOption = None,
    status: Annotated[
        TaskStatus | None,
        typer.Option("--status", case_sensitive=False, help="Only workflows in this status."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, oldest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List workflow executions, oldest first."""
    with _open(db, must_exist=True) as provider:
        page = provider.workflows.list_states(WorkflowFilter(status=status), limit=limit)
        if as_json:
            _print_json([{**workflow_json(s), "task_count": len(s.tasks)} for s in page.items])
            return
        console.print(render.workflows_table(page.items))
        if page.next_cursor is not None:
            console.print(Text(f"More exist: raise --limit (now {limit}).", "dim"))


def _trees(provider: Provider, exec_id: str) -> tuple[Tree, list[list[TaskTreeNode]], JsonValue]:
    """The tree of a workflow (all its top-level tasks) or of one task (its own root), with the workflow's JSON."""
    try:
        workflow = provider.workflows.get_state(exec_id)
    except NotFoundError:
        try:
            task = provider.tasks.get_state(exec_id)
        except NotFoundError:
            raise NotFoundError(
                f"no workflow or task with exec id {exec_id!r} in {_where(provider)}"
            ) from None
        nodes = provider.tasks.get_task_tree(task.task_exec_id)
        return Tree("", hide_root=True), [nodes], None
    roots: list[str] = []
    cursor: str | None = None
    while True:
        page = provider.tasks.list_states(TaskFilter(workflow_exec_id=exec_id), limit=1000, cursor=cursor)
        roots += [state.task_exec_id for state in page.items if state.parent_state_id is None]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    forests = [provider.tasks.get_task_tree(root) for root in roots]
    return Tree(render.workflow_label(workflow)), forests, workflow_json(workflow)


@app.command()
def tree(
    exec_id: Annotated[str, typer.Argument(help="A workflow exec id (all its tasks) or a task exec id.")],
    db: DbOption = None,
    max_children: Annotated[
        int | None, typer.Option(min=1, help="Children shown per task; the rest are summarised.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a workflow's or a task's tree with statuses."""
    with _open(db, must_exist=True) as provider:
        top, forests, header = _trees(provider, exec_id)
        if as_json:
            tasks: list[JsonValue] = [entry for nodes in forests for entry in render.tree_json(nodes)]
            _print_json(tasks if header is None else {"workflow": header, "tasks": tasks})
            return
        for nodes in forests:
            render.add_task_tree(top, nodes, max_children=max_children)
        console.print(top)


@app.command()
def show(
    exec_id: Annotated[str, typer.Argument(help="A workflow exec id or a task exec id.")],
    db: DbOption = None,
    with_tasks: Annotated[bool, typer.Option("--tasks", help="Include a workflow's tasks.")] = False,
) -> None:
    """Print one stored state, workflow or task, as JSON."""
    with _open(db, must_exist=True) as provider:
        try:
            _print_json(workflow_json(provider.workflows.get_state(exec_id), with_tasks=with_tasks))
            return
        except NotFoundError:
            pass
        try:
            _print_json(to_json(provider.tasks.get_state(exec_id)))
        except NotFoundError:
            raise NotFoundError(
                f"no workflow or task with exec id {exec_id!r} in {_where(provider)}"
            ) from None


# copy -------------------------------------------------------------------------------------------------------


@app.command()
def copy(
    from_url: Annotated[
        str, typer.Option("--from", metavar="URL", help="The store to copy from (never written).")
    ],
    to_url: Annotated[
        str, typer.Option("--to", metavar="URL", help="The store to copy into (migrated first).")
    ],
    merge: Annotated[
        bool,
        typer.Option(
            "--merge",
            help="Allow a non-empty target: equal records are left alone, different ones replaced by the source's, "
            "others kept. A second run changes nothing.",
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Records per read and write.")] = DEFAULT_BATCH,
    as_json: JsonOption = False,
) -> None:
    """Copy every repository both stores serve, verbatim, then verify counts and checksums per table."""
    source_config = _config(from_url, auto_migrate=False, must_exist=True)
    target_config = _config(to_url, auto_migrate=True)
    with open_provider(source_config) as source, open_provider(target_config) as target:
        pending = [m for m in source.migration_status() if m.applied_at is None]
        if pending:
            raise MigrationError(
                f"the source {_where(source)} has {len(pending)} pending migration(s); "
                "migrate it first with: planflow migrate --db <source URL>"
            )
        if not as_json:
            console.print(Text.assemble("copy ", (_where(source), "bold"), " → ", (_where(target), "bold")))
        with render.RichProgress(console, enabled=not as_json) as bar:
            report = copy_store(source, target, merge=merge, batch_size=batch_size, progress=bar)
        for name, count in report.not_copied:
            typer.echo(
                f"planflow: warning: {name} not copied ({count} records): the {target.driver} driver does not "
                "store them",
                err=True,
            )
        if as_json:
            _print_json(
                {
                    "source": _where(source),
                    "target": _where(target),
                    "merge": merge,
                    "verified": report.verified,
                    "elapsed_seconds": round(report.elapsed, 3),
                    "tables": [to_json(line) for line in report.tables],
                    "not_copied": dict(report.not_copied),
                }
            )
        else:
            console.print(render.copy_table(report))
            console.print(f"{'Verified' if report.verified else 'NOT verified'} in {report.elapsed:.2f} s.")
        if not report.verified:
            failed = ", ".join(line.name for line in report.tables if not line.verified)
            raise CopyError(
                f"verification failed for {failed}: the target does not hold the source's records"
            )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``planflow`` command (the console script and ``python -m planflow``).

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Raises:
        SystemExit: always; 0 on success, 1 after a planflow error (one line on stderr, no traceback), 2 on
            bad usage.
    """
    try:
        app(args=None if argv is None else list(argv), prog_name="planflow")
    except PlanflowError as exc:
        message = " ".join(redact_url(str(exc)).split())
        typer.echo(f"planflow: error: {message}", err=True)
        sys.exit(1)


__all__ = ["app", "main"]
