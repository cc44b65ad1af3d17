"""The ``planflow`` command: config, demo, migrate, status, workflows, tasks, tree, show, purge, copy.

Every subcommand but ``copy`` (``--from`` / ``--to``) takes ``--db URL`` (default: ``PLANFLOW_DATABASE_URL``, else
the embedded SQLite file ``planflow.db`` in the current directory), before or after the command name, as does
``-v``; listings take ``--json``. A planflow error prints one line to stderr and exits 1; bad usage exits 2; Ctrl-C
exits 130; a reader that closes the output early ends it quietly. Locations are printed with any password
replaced by ``***``. Tables fit an 80-column terminal (ids and times whole where they can be; ids fold onto a
second line rather than being cut), and the commands worth running next are printed one a line, whole, so that
they can be pasted.

Each command opens the store for what it does: reading commands read-only (no migration, no journal mode change,
no file created; a store without planflow's schema reads as empty), writing ones after refusing a store that
holds data but no planflow schema, which only ``migrate --force`` adopts.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO, cast

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from planflow.cli import render
from planflow.cli.defaults import (
    DEFAULT_ADDON_TASKS,
    DEFAULT_BATCH,
    DEFAULT_FAILURE_RATE,
    DEFAULT_LEASE,
    DEFAULT_SEED,
    DEFAULT_TASKS,
    DEFAULT_WORKERS,
    MIN_TASKS,
)
from planflow.cli.records import WorkflowsTable, served_tables, serves, to_json, workflow_json
from planflow.cli.settings import effective_settings
from planflow.config import PlanflowConfig, redact_url, resolve_config
from planflow.errors import (
    ConfigError,
    CopyError,
    ForeignStoreError,
    MigrationError,
    NotFoundError,
    PlanflowError,
)
from planflow.infra.execution_codec import scheduled_before
from planflow.infra.sql.migrations import MigrationSql, load_migrations, migration_script
from planflow.migration_records import MigrationStatus
from planflow.models import (
    TERMINAL_STATUSES,
    JsonObject,
    JsonValue,
    Page,
    QueueStats,
    TaskFilter,
    TaskState,
    TaskStatus,
    TaskTreeNode,
    WorkflowFilter,
    WorkflowState,
)
from planflow.version import __version__

if TYPE_CHECKING:  # loaded by the commands that use them, not by --help
    from planflow.cli.addon_demo import AddonResult
    from planflow.cli.copy import CopyReport
    from planflow.cli.demo import DemoResult
    from planflow.infra.provider import Provider

app = typer.Typer(
    name="planflow",
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
        help="Store URL: sqlite:///file.db, postgresql://host/db or tinydb:///file.json (default: "
        "$PLANFLOW_DATABASE_URL, else the SQLite file planflow.db here). Before or after the command.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]

console = Console()
errors = Console(stderr=True)
_FILE_DRIVERS = ("sqlite", "tinydb")
#: Drivers whose stores have a schema (and so migrations).
_SCHEMA_DRIVERS = ("sqlite", "postgres")
#: Tasks read per round trip when a whole workflow's tasks are read.
PAGE = 5000
#: Exit status after Ctrl-C, as shells report a process ended by SIGINT.
INTERRUPTED = 130


def _version(value: bool) -> None:
    if value:
        typer.echo(f"planflow {__version__}")
        raise typer.Exit


#: The handler ``-v`` installs on the ``planflow`` logger (replaced, not stacked, when run again in-process).
_log_handler: logging.Handler | None = None


def _verbosity(count: int) -> None:
    """Send planflow's log records to stderr: INFO with ``-v``, DEBUG (every statement) with ``-vv``."""
    global _log_handler
    logger = logging.getLogger("planflow")
    if _log_handler is not None:
        logger.removeHandler(_log_handler)
        _log_handler = None
    if count <= 0:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if count > 1 else logging.INFO)
    _log_handler = handler


def _verbose_callback(ctx: typer.Context, count: int) -> int:
    return _verbose(ctx, count)


VerboseOption = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        metavar="",
        show_default=False,
        callback=_verbose_callback,
        help="Log to stderr: -v migrations, retries and slow statements; -vv also every statement.",
    ),
]


def _verbose(ctx: typer.Context, count: int) -> int:
    """``-v`` given before the command, after it, or both: the counts add up (``planflow -v status -v``)."""
    before = ctx.parent.params.get("verbose", 0) if ctx.parent is not None else 0
    if ctx.parent is not None and count:
        _verbosity(int(before or 0) + count)
    return count


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    db: DbOption = None,
    verbose: VerboseOption = 0,
) -> None:
    """Workflow and task execution state on SQLite, PostgreSQL or TinyDB: run a demo, migrate, inspect, copy.

    Options may come before the command or after it: planflow --db URL status, planflow status --db URL -v.
    """
    global _given_db
    _given_db = db
    _verbosity(verbose)


#: ``--db`` as given before the command (``planflow --db URL status``), set by every run of the command line.
_given_db: str | None = None


def _store(db: str | None) -> str | None:
    """The store a command was given: its own ``--db``, else the one given before it (``planflow --db URL ...``)."""
    return _given_db if db is None else db


def _config(
    db: str | None, *, auto_migrate: bool | None = None, must_exist: bool = False, option: str = "--db"
) -> PlanflowConfig:
    """The config of ``--db`` (``option`` names the flag that gave it, for messages); ``must_exist`` refuses a
    store file that is not there (reads never create one)."""
    config = resolve_config(db)
    if auto_migrate is not None:
        config = dataclasses.replace(config, auto_migrate=auto_migrate)
    local = config.driver in _FILE_DRIVERS and not config.is_memory
    if must_exist and local and not Path(config.location).exists():
        create = (
            "a TinyDB file is created by its first write: 'planflow demo --db URL' or 'planflow copy --to URL'"
            if config.driver == "tinydb"
            else "create one with 'planflow migrate' or 'planflow demo'"
        )
        given = f"pass {option} URL" if option != "--db" else "pass --db URL, set PLANFLOW_DATABASE_URL,"
        raise ConfigError(f"no {config.driver} store at {config.location}; {given} or {create}")
    return config


def open_provider(config: PlanflowConfig) -> Provider:
    """planflow's ``open_provider``, imported when a command first opens a store (``--help`` never does)."""
    from planflow.infra.provider import open_provider as open_store

    return open_store(config)


def _adopt_command(db: str | None) -> str:
    return _command("planflow", "migrate", "--force", *(["--db", db] if db else []))


def _open_to_read(db: str | None, *, option: str = "--db") -> Provider:
    """The store, opened read-only: never migrated, its journal mode left alone, no file created.

    Raises:
        ConfigError: a store file that does not exist.
        ForeignStoreError: the store holds data but no planflow schema (it is left unchanged).
    """
    config = dataclasses.replace(_config(db, must_exist=True, option=option), read_only=True)
    try:
        return open_provider(config)
    except ForeignStoreError as exc:
        raise ForeignStoreError(
            _foreign_message(exc, db, adopt=option == "--db"), location=exc.location, tables=exc.tables
        ) from exc


def _foreign_message(exc: ForeignStoreError, db: str | None, *, adopt: bool = True) -> str:
    """What the command line says of a foreign store: the library's facts, and the command that adopts it."""
    if not exc.location:  # a driver that says it in its own words
        return str(exc)
    said = f"the store {exc.location} holds tables ({', '.join(exc.tables)}) but no planflow schema; it was left unchanged"
    if not adopt:
        return said
    return f"{said}. Adopt it (create planflow's tables beside its own) with: {_adopt_command(db)}"


def _open_to_write(
    db: str | None, *, force: bool = False, auto_migrate: bool = True, must_exist: bool = False
) -> Provider:
    """The store, opened to write (and migrated, unless ``auto_migrate`` is off); a store that holds data but no
    planflow schema is refused unless ``force`` (``migrate --force``), and left unchanged.

    Raises:
        ForeignStoreError: as said.
    """
    config = _config(db, auto_migrate=auto_migrate, must_exist=must_exist)
    exists = config.driver == "postgres" or (not config.is_memory and Path(config.location).exists())
    if exists and not force:
        try:
            open_provider(dataclasses.replace(config, read_only=True)).close()
        except ForeignStoreError as exc:
            raise ForeignStoreError(
                _foreign_message(exc, db), location=exc.location, tables=exc.tables
            ) from exc
    return open_provider(config)


def _has_schema(provider: Provider) -> bool:
    """Whether the store holds planflow's schema (TinyDB: always); a read-only command reads a store without
    one as empty, since it may not create it. (One whose schema is older is read as it is.)"""
    statuses = provider.migration_status()
    return not statuses or any(m.applied_at is not None for m in statuses)


def _print_json(value: JsonValue) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _where(provider: Provider) -> str:
    return f"{provider.driver} {provider.config.location}"


def _command(*words: str) -> str:
    """A command line safe to paste: each word quoted for the shell, passwords replaced by ``***``."""
    return " ".join(shlex.quote(redact_url(word)) for word in words)


def _next(db: str | None, *commands: Sequence[str]) -> None:
    """Print the commands worth running next, one a line, each whole so that it can be pasted."""
    store = ["--db", db] if db else []
    console.print(Text("Next:", style="dim"))
    for words in commands:
        console.print(Text(f"  {_command('planflow', *words, *store)}", style="dim"), soft_wrap=True)


def _warn_if_incomplete(provider: Provider) -> None:
    """Say on stderr that the store holds an unfinished copy (reads still work; the data is partial)."""
    mark = _mark_of(provider, pending=True)  # a store opened without auto_migrate may predate the mark
    if mark is not None:
        errors.print(
            Text(
                f"planflow: warning: this store holds an incomplete copy from {mark.get('source', 'another store')}; "
                "'planflow status' says more",
                style="yellow",
            )
        )


# config -----------------------------------------------------------------------------------------------------


@app.command(
    name="config",
    help="Show the configuration the commands use and where each setting came from: --db URL (and its "
    "?setting= parameters), PLANFLOW_DATABASE_URL, PLANFLOW_DB_* variables, or the default. Passwords show as ***. "
    "Nothing is opened.",
)
def show_config(
    *,
    db: DbOption = None,
    verbose: VerboseOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Show the effective configuration and where each setting came from (passwords as ***)."""
    config, settings = effective_settings(_store(db), os.environ)
    if as_json:
        _print_json({s.name: {"value": s.value, "source": s.source} for s in settings})
        return
    console.print(render.settings_table(settings, location=f"{config.driver} {config.location}"))


# demo -------------------------------------------------------------------------------------------------------


@app.command(
    help="Run a realistic workflow execution with worker threads, then show what the store holds.\n\n"
    "On a store that serves only the add-on's records (tinydb), run the add-on's scheduler instead: task "
    "definitions, their occurrences, and executions written from timer threads."
)
def demo(
    *,
    db: DbOption = None,
    verbose: VerboseOption = 0,
    tasks: Annotated[
        int | None,
        typer.Option(
            min=MIN_TASKS,
            metavar="N",
            show_default=False,
            help=f"Number of task states in the workflow (default {DEFAULT_TASKS}); on a store of the add-on's "
            f"records only (tinydb), number of task definitions (default {DEFAULT_ADDON_TASKS}).",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, metavar="N", help="Worker threads (tinydb: timer threads).")
    ] = DEFAULT_WORKERS,
    seed: Annotated[
        int, typer.Option(metavar="N", help="Seed of the structure, failures and token counts.")
    ] = DEFAULT_SEED,
    failure_rate: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, metavar="P", help="Chance that an item of a best-effort fan-out fails."
        ),
    ] = DEFAULT_FAILURE_RATE,
    max_children: Annotated[
        int,
        typer.Option(
            min=1, metavar="N", help="Children shown per task in the tree; the rest are summarised."
        ),
    ] = 6,
    lease: Annotated[
        float,
        typer.Option(
            min=0.05,
            max=3600,
            metavar="SECONDS",
            help="How long a worker's claim holds a task before others may take it.",
        ),
    ] = DEFAULT_LEASE,
    no_kill: Annotated[
        bool,
        typer.Option(
            "--no-kill",
            help="Let no worker die: by default one dies midway holding its claims, which the others take over "
            "once their lease lapsed.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run a realistic workflow execution with worker threads, then show what the store holds.

    On a store that serves only the add-on's records (tinydb), run the add-on's scheduler instead: task
    definitions, their occurrences, and executions written from timer threads.
    """
    db = _store(db)
    with _open_to_write(db) as provider:
        try:
            if serves(provider, "tasks") and serves(provider, "workflows"):
                _workflow_demo(
                    provider,
                    db,
                    tasks=tasks or DEFAULT_TASKS,
                    workers=workers,
                    seed=seed,
                    failure_rate=failure_rate,
                    max_children=max_children,
                    lease=lease,
                    kill_worker=not no_kill,
                    as_json=as_json,
                )
            else:
                _addon_demo(
                    provider,
                    db,
                    tasks=tasks or DEFAULT_ADDON_TASKS,
                    threads=workers,
                    seed=seed,
                    as_json=as_json,
                )
        except KeyboardInterrupt:
            errors.print("planflow: interrupted: the demo's records so far stay in the store, unfinished")
            raise typer.Exit(INTERRUPTED) from None


def _workflow_demo(
    provider: Provider,
    db: str | None,
    *,
    tasks: int,
    workers: int,
    seed: int,
    failure_rate: float,
    max_children: int,
    lease: float,
    kill_worker: bool,
    as_json: bool,
) -> None:
    from planflow.cli.demo import DemoRun, build_plan
    from planflow.cli.progress import RichProgress

    plan = build_plan(tasks, seed, failure_rate=failure_rate)
    if not as_json:
        console.print(
            Text.assemble(
                "planflow demo on ",
                (_where(provider), "bold"),
                f": {len(plan.steps)} tasks, {workers} workers claiming with {lease:g} s leases, seed {seed}",
            )
        )
    with RichProgress(console, enabled=not as_json) as bar:
        bar.start("tasks", len(plan.leaves))  # here, so that the workers only ever update it
        result = DemoRun(
            provider,
            plan,
            workers=workers,
            lease=lease,
            kill_worker=kill_worker,
            on_progress=lambda done, total: bar.update("tasks", done, total),
        ).run()
    if not result.usage_consistent:
        raise PlanflowError(
            f"the workflow's usage total ({result.usage_total.total_tokens} tokens) differs from the sum of its "
            f"calls ({result.merged_usage.total_tokens} tokens): a merge was lost"
        )
    if as_json:
        _print_json(_demo_json(provider, result))
        return
    _show_demo(provider, result, max_children)
    _next(db, ["tree", result.plan.workflow_exec_id], ["status"], ["workflows"])


def _status_counts(result: DemoResult) -> dict[str, int]:
    """How many of the run's tasks ended in each status."""
    counts: dict[str, int] = {}
    for step in result.plan.steps:
        status = result.workflow.tasks[step.task_id].status.value
        counts[status] = counts.get(status, 0) + 1
    return dict(sorted(counts.items()))


def _demo_json(provider: Provider, result: DemoResult) -> JsonValue:
    from planflow.cli.demo import CARRIER_LIMIT

    abandoned: list[JsonValue] = [*sorted(result.stats.abandoned)]
    claims: dict[str, JsonValue] = {
        "claimed": result.stats.claims,
        "reclaimed": result.stats.reclaimed,
        "heartbeats": result.stats.heartbeats,
        "leases_lost": result.stats.leases_lost,
        "completions": sum(result.stats.completions.values()),
        "double_completions": result.stats.double_completions,
        "killed_worker": result.stats.killed_worker,
        "abandoned": abandoned,
        "zombie_write_fenced": result.stats.zombie_fenced,
    }
    queue: dict[str, JsonValue] = {
        "retries_after_backoff": result.stats.retries,
        "poison_crashes": result.stats.poison_crashes,
        "carrier_limit": CARRIER_LIMIT,
        "carrier_peak": result.stats.carrier_peak,
    }
    return {
        "driver": provider.driver,
        "location": provider.config.location,
        "workflow_exec_id": result.plan.workflow_exec_id,
        "workflow_id": result.plan.workflow_id,
        "status": result.workflow.status.value,
        "tasks": len(result.plan.steps),
        "task_statuses": dict(_status_counts(result)),
        "top_level_tasks": [root.exec_id for root in result.plan.roots],
        "claims": claims,
        "queue": queue,
        "parent_retries": result.stats.parent_retries,
        "usage": to_json(result.usage_total),
        "usage_consistent": result.usage_consistent,
        "elapsed_seconds": round(result.elapsed, 3),
    }


def _summary_grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    return grid


def _show_demo(provider: Provider, result: DemoResult, max_children: int) -> None:
    from planflow.cli.demo import CARRIER_KEY, CARRIER_LIMIT, MAX_ATTEMPTS

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
    summary = _summary_grid()
    summary.add_row(
        "workflow", Text.assemble(render.status_text(workflow.status), f"  {workflow.workflow_exec_id}")
    )
    summary.add_row("tasks", ", ".join(f"{n} {status}" for status, n in counts.items()))
    stats = result.stats
    summary.add_row(
        "claims",
        f"{stats.claims} claims, {stats.heartbeats} heartbeats; {sum(stats.completions.values())} leaves "
        f"completed, {stats.double_completions} twice",
    )
    if stats.killed_worker is not None:
        summary.add_row(
            "recovery",
            f"{stats.killed_worker} died holding {len(stats.abandoned)} claims; {stats.reclaimed} reclaimed "
            "after their lease and finished by the others; its late write was "
            + ("refused (fenced by version)" if stats.zombie_fenced else "not refused"),
        )
        if stats.abandoned:  # the history of one task it died with: claimed, lost, reclaimed, finished
            reclaimed = sorted(stats.abandoned)[0]
            records = provider.tasks.history(reclaimed, limit=20)
            summary.add_row(
                "history",
                "\n".join([reclaimed, *(timeline_line(r, width=66, entity=False) for r in records)]),
            )
    summary.add_row(
        "queue",
        f"reports (priority 1) claimed before enrichments; {stats.retries} failed attempts retried after a "
        f"backoff; the poison task crashed its worker {stats.poison_crashes} times, then ended FAILED "
        f"(max_attempts {MAX_ATTEMPTS}); at most {stats.carrier_peak} of {CARRIER_KEY} at once "
        f"(limit {CARRIER_LIMIT})",
    )
    summary.add_row("conflicts", f"{stats.parent_retries} parent status updates recomputed (optimistic lock)")
    tokens = result.usage_total.total_tokens
    summary.add_row("usage", f"{tokens:,} tokens in all (usage_total), equal to the sum of every call")
    summary.add_row("elapsed", f"{result.elapsed:.2f} s")
    console.print(
        Group(tree, "", render.progress_table(rows), "", render.usage_table(result.usage_total), "", summary)
    )


def _addon_demo(
    provider: Provider, db: str | None, *, tasks: int, threads: int, seed: int, as_json: bool
) -> None:
    from planflow.cli.addon_demo import AddonRun, build_addon_plan
    from planflow.cli.progress import RichProgress

    plan = build_addon_plan(tasks, seed)
    if not as_json:
        console.print(
            Text.assemble(
                "planflow demo of the add-on's store on ",
                (_where(provider), "bold"),
                f": {len(plan.tasks)} task definitions, {len(plan.occurrences)} occurrences, "
                f"{threads} timer threads, seed {seed}",
            )
        )
    with RichProgress(console, enabled=not as_json) as bar:
        bar.start("occurrences", len(plan.occurrences))
        result = AddonRun(
            provider.executions,
            plan,
            threads=threads,
            on_progress=lambda done, total: bar.update("occurrences", done, total),
        ).run()
    if not result.consistent:
        raise PlanflowError(
            "an execution read back differs from what the timer threads wrote: a concurrent write was lost"
        )
    if as_json:
        _print_json(_addon_json(provider, result))
        return
    summary = _summary_grid()
    summary.add_row("executions", ", ".join(f"{n} {state}" for state, n in result.by_state().items()))
    summary.add_row(
        "timer threads",
        f"{result.stats.writes} writes from {len(result.stats.threads)} threads, "
        f"{result.stats.fired} firings, {result.stats.rescheduled} missed and rescheduled",
    )
    summary.add_row("history", "every execution read back equals what its thread wrote")
    summary.add_row("elapsed", f"{result.elapsed:.2f} s")
    console.print(Group(render.addon_tasks_table(result), "", summary))
    _next(db, ["status"])


def _addon_json(provider: Provider, result: AddonResult) -> JsonValue:
    return {
        "driver": provider.driver,
        "location": provider.config.location,
        "run_id": result.plan.run_id,
        "tasks": len(result.plan.tasks),
        "occurrences": len(result.plan.occurrences),
        "executions_by_state": dict(result.by_state()),
        "writes": result.stats.writes,
        "fired": result.stats.fired,
        "rescheduled": result.stats.rescheduled,
        "timer_threads": len(result.stats.threads),
        "history_consistent": result.consistent,
        "elapsed_seconds": round(result.elapsed, 3),
    }


# migrate and status -----------------------------------------------------------------------------------------


def _file_state(config: PlanflowConfig) -> JsonObject | None:
    """The size and modification time of a file store, or ``None`` (in memory, on a server, or not yet written)."""
    path = Path(config.location)
    if config.driver not in _FILE_DRIVERS or config.is_memory or not path.exists():
        return None
    stat = path.stat()
    modified = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="seconds")
    return {"bytes": stat.st_size, "modified": modified}


def _missing_file(config: PlanflowConfig) -> bool:
    return config.driver in _FILE_DRIVERS and not config.is_memory and not Path(config.location).exists()


def _migration_statuses(
    db: str | None, config: PlanflowConfig, *, force: bool = False
) -> list[MigrationStatus]:
    """Every migration and whether it was applied, read without changing the store: a missing SQLite file, or
    (with ``force``) a store holding data but no planflow schema, has every migration pending."""
    if not _missing_file(config):
        try:
            with _open_to_read(db) as provider:
                return provider.migration_status()
        except ForeignStoreError:
            if not force:
                raise
    return [MigrationStatus(m.version, m.name, None, m.checksum) for m in load_migrations(config.driver)]


@app.command(
    help="Apply pending schema migrations (a no-op when the schema is current; a TinyDB store has none).\n\n"
    "A database or file that holds data but no planflow schema is refused unless --force, which creates planflow's "
    "tables beside what it holds. --sql prints what would run (for review, or to apply by hand); --history and "
    "--status list the migrations; none of these three changes the store."
)
def migrate(
    *,
    db: DbOption = None,
    verbose: VerboseOption = 0,
    status: Annotated[
        bool, typer.Option("--status", help="List applied and pending migrations instead.")
    ] = False,
    history: Annotated[
        bool,
        typer.Option(
            "--history",
            help="List every migration with its file's checksum and when it was applied, or pending.",
        ),
    ] = False,
    sql: Annotated[
        bool,
        typer.Option(
            "--sql",
            help="Print the SQL that would apply the pending migrations and record them, in one transaction; "
            "apply nothing.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Adopt a database or file that holds data but no planflow schema: migrate it anyway.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Apply pending schema migrations (a no-op when the schema is current; a TinyDB store has none)."""
    db = _store(db)
    if status + history + sql > 1:
        raise typer.BadParameter("give one of --status, --history and --sql", param_hint="'--status'")
    config = _config(db)
    if config.driver not in _SCHEMA_DRIVERS:
        _no_schema(config, listing=status or history, as_json=as_json)
        return
    if sql:
        statuses = _migration_statuses(db, config, force=force)
        pending = [
            m
            for m in load_migrations(config.driver)
            if m.version in {s.version for s in statuses if s.applied_at is None}
        ]
        if pending:
            typer.echo(migration_script(pending, _migration_sql(config.driver)), nl=False)
        else:
            version = max((s.version for s in statuses), default=0)
            typer.echo(
                f"-- {config.driver} {config.location}: schema version {version} is current; nothing to apply"
            )
        return
    if status or history:
        statuses = _migration_statuses(db, config)
        if as_json:
            _print_json([to_json(s) for s in statuses])
        else:
            console.print(render.migrations_table(statuses, checksums=history))
        return
    with _open_to_write(db, force=force, auto_migrate=False) as provider:
        applied = provider.migrate()
        version = max((s.version for s in provider.migration_status() if s.applied_at), default=0)
        if as_json:
            _print_json(
                {"applied": [f"{m.version:04d}_{m.name}" for m in applied], "schema_version": version}
            )
        elif applied:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
            console.print(
                f"Applied {len(applied)} {render.plural(len(applied), 'migration')} to {_where(provider)}: {names}"
            )
        else:
            console.print(f"{_where(provider)} is up to date (schema version {version}); nothing to apply.")


def _migration_sql(driver: str) -> MigrationSql:
    """The migration statements of a SQL driver (its dialect module, imported now)."""
    module = importlib.import_module(f"planflow.infra.{driver}.dialect")
    found: MigrationSql = module.MIGRATION_SQL
    return found


def _no_schema(config: PlanflowConfig, *, listing: bool, as_json: bool) -> None:
    """What ``migrate`` says of a store without a schema: nothing to migrate, and the state of its file."""
    state = _file_state(config)
    if as_json:
        _print_json([] if listing else {"applied": [], "schema_version": None, "file": state})
        return
    if config.is_memory:
        where = "it lives in memory"
    elif state is None:
        where = (
            "the file does not exist yet: its first write creates it (planflow demo or planflow copy --to)"
        )
    else:
        where = f"the file holds {state['bytes']:,} bytes"
    console.print(
        f"{config.driver} {config.location}: a TinyDB store keeps documents without a schema, so there is nothing "
        f"to migrate; {where}."
    )


#: ``status`` counts lapsed leases up to this many (reading no more than that).
STUCK_COUNTED = 1000


#: ``status --pool``: psycopg_pool's numbers, in the order shown, with their labels.
POOL_NUMBERS = (
    ("pool_size", "size"),
    ("pool_min", "min size"),
    ("pool_max", "max size"),
    ("in_use", "in use"),
    ("pool_available", "idle"),
    ("requests_waiting", "waiting"),
)


def _pool_status(provider: Provider, as_json: bool) -> None:
    """``status --pool``: the connection pool of this command's provider (psycopg_pool's ``get_stats()``)."""
    stats = provider.pool_stats()
    if stats is None:
        message = (
            f"the {provider.driver} driver has no connection pool; --pool shows a PostgreSQL store's "
            "(--db postgresql://...)"
        )
        if as_json:
            _print_json({"driver": provider.driver, "location": provider.config.location, "pool": None})
        else:
            console.print(Text(message, "yellow"))
        return
    numbers = {**stats, "in_use": max(stats.get("pool_size", 0) - stats.get("pool_available", 0), 0)}
    if as_json:
        _print_json(
            {
                "driver": provider.driver,
                "location": provider.config.location,
                "pool": dict(sorted(numbers.items())),
            }
        )
        return
    about = _summary_grid()
    about.add_row("driver", provider.driver)
    about.add_row("location", Text(provider.config.location, overflow="fold"))
    for key, label in POOL_NUMBERS:
        if key in numbers:
            about.add_row(f"pool {label}", str(numbers[key]))
    console.print(about)


@app.command()
def status(
    db: DbOption = None,
    verbose: VerboseOption = 0,
    as_json: JsonOption = False,
    pool: Annotated[
        bool,
        typer.Option(
            "--pool",
            help="Show the PostgreSQL connection pool instead: size, in use, idle and waiting (psycopg_pool).",
        ),
    ] = False,
) -> None:
    """Show the store: driver, location, schema version, records per table and workflows per status."""
    db = _store(db)
    if pool:
        with _open_to_read(db) as provider:
            _pool_status(provider, as_json)
        return
    with _open_to_read(db) as provider:
        schema = provider.driver in _SCHEMA_DRIVERS
        migrations = provider.migration_status()
        version = max((m.version for m in migrations if m.applied_at), default=0)
        pending = [m for m in migrations if m.applied_at is None]
        mark = _mark_of(provider, pending=bool(pending))
        counts: dict[str, int] = {}
        by_status: dict[str, int] = {}
        stuck: int | None = None
        if not pending and serves(provider, "tasks"):
            stuck = len(provider.tasks.list_lapsed(limit=STUCK_COUNTED + 1))
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
                    "schema_version": version if schema else None,
                    "pending_migrations": [f"{m.version:04d}_{m.name}" for m in pending],
                    "file": _file_state(provider.config),
                    "incomplete_copy": mark,
                    "counts": dict(counts),
                    "workflows_by_status": dict(by_status),
                    "stuck_tasks": stuck,
                }
            )
            return
        about = _summary_grid()
        about.add_row("driver", provider.driver)
        about.add_row("location", Text(provider.config.location, overflow="fold"))
        if schema:
            about.add_row(
                "schema version", f"{version} ({len(pending)} pending)" if pending else f"{version} (current)"
            )
        else:
            about.add_row("schema", "none: a TinyDB store keeps documents (nothing to migrate)")
        state = _file_state(provider.config)
        if state is not None:
            modified = str(state["modified"]).replace("T", " ").replace("+00:00", " UTC")
            about.add_row("file", f"{state['bytes']:,} bytes, modified {modified}")
        console.print(about)
        if mark is not None:
            console.print(render.incomplete_copy_text(mark))
            resume = mark.get("resume")
            if isinstance(resume, str):
                console.print(Text("Resume it with:", style="yellow"))
                console.print(Text(f"  {resume}", style="yellow"), soft_wrap=True)
        if pending:
            console.print(
                Text(
                    f"{len(pending)} pending {render.plural(len(pending), 'migration')}: run "
                    f"'{_command('planflow', 'migrate', *(['--db', db] if db else []))}' to see the records.",
                    "yellow",
                )
            )
            return
        console.print(render.counts_table(counts, title="Records"))
        if serves(provider, "workflows"):
            console.print(render.counts_table(by_status, title="Workflows by status", key="status"))
        if stuck:
            shown = f"more than {STUCK_COUNTED:,}" if stuck > STUCK_COUNTED else f"{stuck:,}"
            console.print(
                Text(
                    f"{shown} {render.plural(stuck, 'stuck task')}: RUNNING with a lapsed lease; see "
                    "'planflow tasks --stuck'.",
                    "yellow",
                )
            )


def _mark_of(provider: Provider, *, pending: bool) -> JsonObject | None:
    """The store's incomplete-copy mark; a store whose schema predates the metadata table has none.

    ``pending``: the schema may be older than the code (pending migrations), so a failed read means no mark.
    """
    from planflow.cli.copy import read_mark

    if not pending:
        return read_mark(provider)
    try:
        return read_mark(provider)
    except PlanflowError:
        return None


# workflows, tree, show --------------------------------------------------------------------------------------


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str, option: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s`` or ``2w`` as a timedelta (a usage error otherwise)."""
    found = _DURATION.match(text)
    if found is not None and int(found[1]) == 0:
        raise typer.BadParameter(f"{text!r}: the duration must be more than zero", param_hint=f"'{option}'")
    if found is None:
        raise typer.BadParameter(
            f"{text!r} is not a duration such as 30d, 12h, 90m, 45s or 2w", param_hint=f"'{option}'"
        )
    try:
        return timedelta(**{_UNITS[found[2].lower()]: int(found[1])})
    except OverflowError:
        raise typer.BadParameter(f"{text!r} is too long a duration", param_hint=f"'{option}'") from None


def before_now(span: timedelta, option: str) -> datetime:
    """The moment ``span`` before now (a usage error when that is before the calendar starts)."""
    try:
        return datetime.now(UTC) - span
    except OverflowError:
        raise typer.BadParameter(
            f"{span.days:,} days back is before the year 1, where the calendar starts",
            param_hint=f"'{option}'",
        ) from None


def parse_moment(text: str, option: str) -> datetime:
    """A bound of a listing: a duration back from now (``7d``), or an ISO 8601 date or time (UTC without an
    offset)."""
    if _DURATION.match(text):
        return before_now(parse_duration(text, option), option)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a duration (7d, 12h) nor an ISO 8601 date or time", param_hint=f"'{option}'"
        ) from None
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def parse_statuses(values: list[str] | None, option: str = "--status") -> frozenset[TaskStatus] | None:
    """Repeated ``--status`` values, each possibly a comma-separated list, case-insensitive."""
    if not values:
        return None
    found: set[TaskStatus] = set()
    for value in values:
        for name in value.split(","):
            try:
                found.add(TaskStatus(name.strip().upper()))
            except ValueError:
                accepted = ", ".join(s.value for s in TaskStatus)
                raise typer.BadParameter(
                    f"{name!r} is not one of {accepted}", param_hint=f"'{option}'"
                ) from None
    return frozenset(found)


StatusesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--status",
        metavar="STATUS",
        help="Only these statuses: repeat it or separate them by commas (--status failed,timed_out).",
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="WHEN",
        help="Created after this: a duration back from now (7d, 12h) or an ISO date.",
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option("--until", metavar="WHEN", help="Created before this: as --since."),
]
OldestFirstOption = Annotated[
    bool, typer.Option("--oldest-first", help="List the oldest first (default: the newest first).")
]


def _bounds(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """``created_after`` and ``created_before`` from ``--since`` and ``--until``."""
    return (
        None if since is None else parse_moment(since, "--since"),
        None if until is None else parse_moment(until, "--until"),
    )


@app.command()
def workflows(
    *,
    db: DbOption = None,
    verbose: VerboseOption = 0,
    status: StatusesOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    oldest_first: OldestFirstOption = False,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List workflow executions, the newest first."""
    after, before = _bounds(since, until)
    flt = WorkflowFilter(statuses=parse_statuses(status), created_after=after, created_before=before)
    db = _store(db)
    with _open_to_read(db) as provider:
        page: Page[WorkflowState] = Page([])
        if _has_schema(provider):  # else a store without planflow's schema: nothing in it yet
            _warn_if_incomplete(provider)
            page = provider.workflows.list_states(flt, limit=limit, order="asc" if oldest_first else "desc")
        if as_json:
            _print_json([{**workflow_json(s), "task_count": len(s.tasks)} for s in page.items])
            return
        console.print(render.workflows_table(page.items, width=console.width))
        if page.next_cursor is not None:
            console.print(Text(f"More exist: raise --limit (now {limit}).", "dim"))


@app.command()
def tasks(
    *,
    db: DbOption = None,
    verbose: VerboseOption = 0,
    workflow: Annotated[
        str | None,
        typer.Option("--workflow", metavar="EXEC_ID", help="Only this workflow execution's tasks."),
    ] = None,
    status: StatusesOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    oldest_first: OldestFirstOption = False,
    stuck: Annotated[
        bool,
        typer.Option(
            "--stuck",
            help="Only RUNNING tasks whose lease lapsed (their worker died or hung), and who held them; the "
            "next claim takes them over.",
        ),
    ] = False,
    dead: Annotated[
        bool,
        typer.Option(
            "--dead",
            help="Only dead tasks: FAILED after using up their max_attempts (poison work), with last_error.",
        ),
    ] = False,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List task states, the newest first; with --stuck, the lapsed claims, longest lapsed first; with --dead,
    the tasks that used up their attempts."""
    statuses = parse_statuses(status)
    if stuck and dead:
        raise PlanflowError("give one of --stuck and --dead")
    if dead and statuses is not None and TaskStatus.FAILED not in statuses:
        named = ",".join(sorted(s.value for s in statuses))
        raise PlanflowError(f"--dead lists FAILED tasks; --status {named} contradicts it")
    after, before = _bounds(since, until)
    filter = TaskFilter(
        workflow_exec_id=workflow, statuses=statuses, created_after=after, created_before=before
    )
    if stuck and statuses is not None and TaskStatus.RUNNING not in statuses:
        named = ",".join(sorted(s.value for s in statuses))
        raise PlanflowError(f"--stuck lists RUNNING tasks; --status {named} contradicts it")
    db = _store(db)
    with _open_to_read(db) as provider:
        if not serves(provider, "tasks"):
            raise PlanflowError(
                f"a {provider.driver} store keeps no workflow tasks (the add-on's records only)"
            )
        states: list[TaskState] = []
        more = False
        if not _has_schema(provider):  # a store without planflow's schema: nothing in it yet
            pass
        elif stuck:
            _warn_if_incomplete(provider)
            states, more = _at_most(provider.tasks.list_lapsed(filter, limit=limit + 1), limit)
        elif dead:
            _warn_if_incomplete(provider)
            states, more = _at_most(_dead_tasks(provider, filter, limit + 1), limit)
        else:
            _warn_if_incomplete(provider)
            page = provider.tasks.list_states(filter, limit=limit, order="asc" if oldest_first else "desc")
            states, more = page.items, page.next_cursor is not None
        if as_json:
            _print_json([to_json(state) for state in states])
            return
        if stuck and not states:
            console.print("No stuck tasks: every RUNNING task's lease is current.")
            return
        if dead and not states:
            console.print("No dead tasks: none used up its attempts.")
            return
        title = (
            "stuck task (lease lapsed)" if stuck else "dead task (attempts used up)" if dead else "task state"
        )
        console.print(
            render.tasks_table(
                states, title=title, now=datetime.now(UTC) if stuck else None, width=console.width
            )
        )
        if more:
            console.print(Text(f"More exist: raise --limit (now {limit}).", "dim"))


def _dead_tasks(provider: Provider, filter: TaskFilter, wanted: int) -> list[TaskState]:
    """Up to ``wanted`` FAILED tasks matching ``filter`` that used up their attempts, the newest first."""
    failed = dataclasses.replace(filter, statuses=None, status=TaskStatus.FAILED)
    found: list[TaskState] = []
    cursor: str | None = None
    while len(found) < wanted:
        page = provider.tasks.list_states(failed, limit=500, cursor=cursor, order="desc")
        found += [s for s in page.items if s.max_attempts is not None and s.attempt >= s.max_attempts]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return found[:wanted]


@app.command()
def queue(
    *,
    db: DbOption = None,
    verbose: VerboseOption = 0,
    workflow: Annotated[
        str | None,
        typer.Option("--workflow", metavar="EXEC_ID", help="Only this workflow execution's tasks."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Queue statistics: tasks by status, due and delayed work, the oldest due task, dead tasks, and the
    RUNNING tasks of each concurrency key against its limits."""
    db = _store(db)
    with _open_to_read(db) as provider:
        if not serves(provider, "tasks"):
            raise PlanflowError(
                f"a {provider.driver} store keeps no workflow tasks (the add-on's records only)"
            )
        if not _has_schema(provider):
            stats = QueueStats(counts={}, due=0, delayed=0, oldest_due_age=None, dead=0, keys=[])
        else:
            _warn_if_incomplete(provider)
            stats = provider.tasks.queue_stats(TaskFilter(workflow_exec_id=workflow))
        if as_json:
            _print_json(to_json(stats))
            return
        for table in render.queue_tables(stats):
            console.print(table)


def _at_most(states: list[TaskState], limit: int) -> tuple[list[TaskState], bool]:
    return states[:limit], len(states) > limit


def _forest(states: list[TaskState]) -> list[list[TaskTreeNode]]:
    """The trees of a workflow's tasks, each depth-first with children in ``created_at`` order (as
    ``get_task_tree``).

    Built from one listing of the workflow's tasks rather than one recursive query per root: the listing is
    needed anyway to find the roots. A task whose parent is not among them (a cycle in stored data) is left out.
    """
    children: dict[str, list[TaskState]] = {}
    roots: list[TaskState] = []
    for state in states:  # in created_at order, so every list of children is too
        if state.parent_state_id is None:
            roots.append(state)
        else:
            children.setdefault(state.parent_state_id, []).append(state)
    forests: list[list[TaskTreeNode]] = []
    for root in roots:
        nodes: list[TaskTreeNode] = []
        stack = [(root, 0)]
        while stack:
            state, depth = stack.pop()
            nodes.append(TaskTreeNode(state, depth))
            stack += [(child, depth + 1) for child in reversed(children.get(state.task_exec_id, ()))]
        forests.append(nodes)
    return forests


def _trees(provider: Provider, exec_id: str) -> tuple[Tree, list[list[TaskTreeNode]], JsonValue]:
    """The tree of a workflow (all its top-level tasks) or of one task (its own root), with the workflow's JSON."""
    # The workflow without its tasks: they are read once, below, to find the roots and build the trees.
    found = provider.workflows.list_states(
        WorkflowFilter(workflow_exec_id=exec_id), limit=1, with_tasks=False
    )
    if not found.items:
        try:
            task = provider.tasks.get_state(exec_id)
        except NotFoundError:
            raise _not_found(provider, exec_id) from None
        nodes = list(provider.tasks.iter_task_tree(task.task_exec_id))
        return Tree("", hide_root=True), [nodes], None
    workflow = found.items[0]
    states = list(provider.tasks.iter_states(TaskFilter(workflow_exec_id=exec_id), batch_size=PAGE))
    return Tree(render.workflow_label(workflow)), _forest(states), workflow_json(workflow)


@app.command()
def tree(
    exec_id: Annotated[str, typer.Argument(help="A workflow exec id (all its tasks) or a task exec id.")],
    *,
    db: DbOption = None,
    verbose: VerboseOption = 0,
    max_children: Annotated[
        int,
        typer.Option(
            min=1, metavar="N", help="Children shown per task; the rest are summarised by status on one line."
        ),
    ] = 20,
    show_all: Annotated[bool, typer.Option("--all", help="Show every child (long for large trees).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show a workflow's or a task's tree with statuses (--json: every task)."""
    db = _store(db)
    with _open_to_read(db) as provider:
        if not _has_schema(provider):
            raise _not_found(provider, exec_id)
        _warn_if_incomplete(provider)
        top, forests, header = _trees(provider, exec_id)
        if as_json:
            tasks: list[JsonValue] = [entry for nodes in forests for entry in render.tree_json(nodes)]
            _print_json(tasks if header is None else {"workflow": header, "tasks": tasks})
            return
        for nodes in forests:
            render.add_task_tree(top, nodes, max_children=None if show_all else max_children)
        console.print(top)


@app.command()
def show(
    exec_id: Annotated[str, typer.Argument(help="A workflow exec id or a task exec id.")],
    db: DbOption = None,
    verbose: VerboseOption = 0,
    with_tasks: Annotated[bool, typer.Option("--tasks", help="Include a workflow's tasks.")] = False,
) -> None:
    """Print one stored state, workflow or task, as JSON, with its last transitions (``planflow history``)."""
    db = _store(db)
    with _open_to_read(db) as provider:
        if not _has_schema(provider):
            raise _not_found(provider, exec_id)
        _warn_if_incomplete(provider)
        doc: JsonObject
        try:
            doc = workflow_json(provider.workflows.get_state(exec_id), with_tasks=with_tasks)
        except NotFoundError:
            try:
                doc = cast("JsonObject", to_json(provider.tasks.get_state(exec_id)))
            except NotFoundError:
                raise _not_found(provider, exec_id) from None
        doc["last_transitions"] = last_transitions(provider, exec_id)
        _print_json(doc)


def _not_found(provider: Provider, exec_id: str) -> NotFoundError:
    return NotFoundError(f"no workflow or task with exec id {exec_id!r} in {_where(provider)}")


# purge ------------------------------------------------------------------------------------------------------


@app.command(
    help="Delete finished workflows (with their tasks) last written before a moment, and the add-on's "
    "occurrences (with their executions) scheduled before it.\n\n"
    "Workflows go in short transactions, so workers may keep writing meanwhile; a workflow whose status is not "
    "one of --status (default: the terminal ones) is never touched. --dry-run counts what would go."
)
def purge(
    *,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", metavar="AGE", help="Purge what is older than this: 30d, 12h, 90m, 45s or 2w."
        ),
    ],
    db: DbOption = None,
    verbose: VerboseOption = 0,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="Workflows in these statuses (repeat it or separate by commas); default "
            "SUCCESS,FAILED,CANCELED,TIMED_OUT.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be purged; delete nothing.")
    ] = False,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            help="Purge without asking (scripts; without a terminal to ask on, purge needs it or --dry-run).",
        ),
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, metavar="N", help="Tasks deleted per transaction (the write lock's length).")
    ] = 500,
    as_json: JsonOption = False,
) -> None:
    """Purge old finished workflows and old occurrences of the add-on."""
    from planflow.cli.progress import RichProgress

    cutoff = before_now(parse_duration(older_than, "--older-than"), "--older-than")
    statuses = parse_statuses(status) or TERMINAL_STATUSES
    db = _store(db)
    opened = _open_to_read(db) if dry_run else _open_to_write(db, must_exist=True)
    with opened as provider:
        report: JsonObject = {
            "dry_run": dry_run,
            "before": cutoff.isoformat(),
            "statuses": [s.value for s in sorted(statuses)],
        }
        schema = _has_schema(provider)  # a store without planflow's schema holds nothing to purge
        if schema:
            _warn_if_incomplete(provider)
        # The same condition as workflows.purge: one of the statuses, last written before the cutoff.
        old = WorkflowFilter(statuses=statuses, updated_before=cutoff)
        workflows: int | None = None
        if serves(provider, "workflows"):
            workflows = provider.workflows.count_states(old) if schema else 0
        occurrences: int | None = None
        if serves(provider, "executions"):
            occurrences = 0
            if schema:
                occurrences = sum(scheduled_before(o, cutoff) for o in provider.executions.list_occurrences())
        if not dry_run and (workflows or occurrences) and not yes:
            what = _purged(workflows, occurrences, statuses, older_than, cutoff)
            _confirm_purge(f"Purge {what} from {_where(provider)}?")
        if not dry_run:
            with RichProgress(console, enabled=not as_json) as bar:
                if workflows:
                    bar.start("purge workflows", workflows)
                    workflows = provider.workflows.purge(
                        finished_before=cutoff,
                        statuses=statuses,
                        batch_size=batch_size,
                        progress=lambda count: bar.advance("purge workflows", count),
                    )
                if occurrences:
                    bar.start("purge occurrences", occurrences)
                    occurrences = provider.executions.purge(before=cutoff)
                    bar.advance("purge occurrences", occurrences)
        report["workflows"] = workflows
        report["occurrences"] = occurrences
        if as_json:
            _print_json(report)
            return
        verb = "would purge" if dry_run else "purged"
        console.print(
            f"{_where(provider)}: {verb} {_purged(workflows, occurrences, statuses, older_than, cutoff)}."
        )
        if dry_run:
            _next(
                db,
                [
                    "purge",
                    "--older-than",
                    older_than.strip(),
                    # The defaults go without saying; statuses the user chose are repeated.
                    *(f"--status={s.value}" for s in sorted(statuses) if statuses != TERMINAL_STATUSES),
                ],
            )


def _purged(
    workflows: int | None,
    occurrences: int | None,
    statuses: frozenset[TaskStatus],
    age: str,
    cutoff: datetime,
) -> str:
    """What a purge deletes (or would), in words."""
    parts: list[str] = []
    if workflows is not None:
        named = ", ".join(sorted(s.value for s in statuses))
        parts.append(f"{workflows:,} {render.plural(workflows, 'workflow')} ({named}) with their tasks")
    if occurrences is not None:
        parts.append(f"{occurrences:,} {render.plural(occurrences, 'occurrence')} with their executions")
    return f"{' and '.join(parts)}, older than {age.strip()} (before {cutoff:%Y-%m-%d %H:%M:%S} UTC)"


def _confirm_purge(question: str) -> None:
    """Ask on a terminal before deleting; without one (a script, a pipe), refuse: ``--yes`` says so instead.

    Raises:
        PlanflowError: no terminal to ask on, or the answer was no; nothing was deleted.
    """
    if not sys.stdin.isatty():
        raise PlanflowError(
            "purge deletes without undo: pass --yes to purge without a terminal to confirm on "
            "(or --dry-run to count what would go); nothing was deleted"
        )
    if not typer.confirm(question, default=False, err=True):
        raise PlanflowError("purge cancelled: nothing was deleted")


# copy -------------------------------------------------------------------------------------------------------


class Repository(StrEnum):
    """A repository ``copy`` can copy or leave behind."""

    WORKFLOWS = "workflows"
    TASKS = "tasks"
    AUTH = "auth"
    EXECUTIONS = "executions"


RepositoriesOption = list[Repository] | None


@app.command(
    help="Copy every repository both stores serve, verbatim, then verify counts and checksums per table.\n\n"
    "A target that cannot store some of the source's records (tinydb keeps only the add-on's) is refused unless "
    "--only or --skip says what to copy. While the copy runs the target is marked incomplete ('planflow status' "
    "shows it); Ctrl-C says what was copied and how to resume (--merge), which clears the mark."
)
def copy(
    *,
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
            "others kept. A second run changes nothing; it also resumes an interrupted copy.",
        ),
    ] = False,
    only: Annotated[
        RepositoriesOption,
        typer.Option(
            "--only",
            metavar="REPOSITORY",
            case_sensitive=False,
            show_default=False,
            help="Copy only this repository (repeat for more): workflows, tasks, auth or executions.",
        ),
    ] = None,
    skip: Annotated[
        RepositoriesOption,
        typer.Option(
            "--skip",
            metavar="REPOSITORY",
            case_sensitive=False,
            show_default=False,
            help="Leave this repository behind (repeat for more).",
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, metavar="N", help="Records per read and write.")
    ] = DEFAULT_BATCH,
    verbose: VerboseOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Copy every repository both stores serve, verbatim, then verify counts and checksums per table.

    A target that cannot store some of the source's records (tinydb keeps only the add-on's) is refused unless
    --only or --skip says what to copy. While the copy runs the target is marked incomplete ('planflow status'
    shows it); Ctrl-C says what was copied and how to resume (--merge), which clears the mark.
    """
    from planflow.cli.copy import CopyInterruptedError, copy_store
    from planflow.cli.progress import RichProgress

    if _store(None) is not None:
        raise typer.BadParameter(
            "copy takes its two stores as --from URL and --to URL, not --db", param_hint="'--db'"
        )
    if only and skip:
        raise typer.BadParameter("give --only or --skip, not both", param_hint="'--only' / '--skip'")
    chosen = None if not only else [r.value for r in only]
    left = [r.value for r in skip or ()]
    selection = [word for r in only or () for word in ("--only", r.value)] + [
        word for r in skip or () for word in ("--skip", r.value)
    ]
    source_config = _config(from_url, must_exist=True, option="--from")
    target_config = _config(to_url)
    # Kept in the target's mark, so it must work from any folder: file stores by their absolute path.
    ends = ["--from", _absolute(from_url, source_config), "--to", _absolute(to_url, target_config)]
    resume = _command("planflow", "copy", *ends, *selection, "--merge")
    with _open_to_read(from_url, option="--from") as source, _open_to_write(to_url) as target:
        pending = [m for m in source.migration_status() if m.applied_at is None]
        if pending:
            raise MigrationError(
                f"the source {_where(source)} has {len(pending)} pending "
                f"{render.plural(len(pending), 'migration')}; migrate it first with: "
                f"{_command('planflow', 'migrate', '--db', from_url)}"
            )
        if not as_json:
            console.print(Text.assemble("copy ", (_where(source), "bold"), " → ", (_where(target), "bold")))
        bar = RichProgress(console, enabled=not as_json)
        try:
            with bar:
                report = copy_store(
                    source,
                    target,
                    merge=merge,
                    batch_size=batch_size,
                    progress=bar,
                    only=chosen,
                    skip=left,
                    resume=resume,
                )
        except CopyInterruptedError as stop:
            _say_interrupted(stop.report, resume)
            raise typer.Exit(INTERRUPTED) from None
        if as_json:
            _print_json(
                {
                    "source": _where(source),
                    "target": _where(target),
                    "merge": merge,
                    "verified": report.verified,
                    "elapsed_seconds": round(report.elapsed, 3),
                    "tables": [to_json(line) for line in report.tables],
                    "skipped": dict(report.skipped),
                }
            )
        else:
            console.print(render.copy_table(report))
            if report.skipped:
                left_behind = ", ".join(f"{name} ({count:,})" for name, count in report.skipped)
                console.print(f"Left behind as asked: {left_behind}.")
            console.print(f"{'Verified' if report.verified else 'NOT verified'} in {report.elapsed:.2f} s.")
        if not report.verified:
            failed = ", ".join(line.name for line in report.tables if not line.verified)
            raise CopyError(
                f"verification failed for {failed}: the target does not hold the source's records; "
                "it stays marked incomplete"
            )


def _absolute(url: str, config: PlanflowConfig) -> str:
    """``url`` naming a store file by its absolute path (other URLs as given)."""
    if config.driver not in _FILE_DRIVERS or config.is_memory:
        return url
    return f"{config.driver}:///{Path(config.location).resolve()}"


def _say_interrupted(report: CopyReport, resume: str) -> None:
    """Tell, on stderr, what an interrupted copy left in the target and the command that completes it."""
    # The target is named in the resume command; a long location here would only wrap.
    errors.print("planflow: interrupted: the target holds part of the copy, marked incomplete:")
    done = Table.grid(padding=(0, 2))
    done.add_column(no_wrap=True)
    done.add_column(justify="right", no_wrap=True)
    for line in report.tables:
        if line.source or line.copied:
            done.add_row(f"  {line.name}", f"{line.copied:,} of {line.source:,} copied")
    errors.print(done)
    errors.print("Resume it with ('planflow status' shows the mark until then):")
    errors.print(Text(f"  {resume}"), soft_wrap=True)


class _PipeAware(io.TextIOBase):
    """Standard output that takes a reader closing it early (``planflow status | head -1``) as the end of the
    output, not as an error: what is written after that goes nowhere and the command ends as it would have."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed_by_reader()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed_by_reader()

    def _closed_by_reader(self) -> None:
        # The descriptor goes to /dev/null: what the stream still buffers, and what follows, is dropped there,
        # including the flush at exit, which would otherwise report the closed pipe and set the exit status.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self._stream.encoding

    @property
    def errors(self) -> str | None:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self._stream.errors


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``planflow`` command (the console script and ``python -m planflow``).

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Raises:
        SystemExit: always; 0 on success, 1 after a planflow error (one line on stderr, no traceback), 2 on
            bad usage, 130 after Ctrl-C.
    """
    if not isinstance(sys.stdout, _PipeAware):
        sys.stdout = _PipeAware(sys.stdout)
    try:
        app(args=None if argv is None else list(argv), prog_name="planflow")
    except PlanflowError as exc:
        message = " ".join(redact_url(str(exc)).split())
        typer.echo(f"planflow: error: {message}", err=True)
        sys.exit(1)


# The commands of run history and workflow control register themselves on ``app``.
from planflow.cli.control import last_transitions, timeline_line  # noqa: E402

__all__ = ["app", "main"]
