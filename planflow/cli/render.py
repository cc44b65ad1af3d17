"""How the command line shows things: rich trees, tables and progress bars, and their JSON twins.

Labels are built as :class:`rich.text.Text`, never as markup, so ids holding ``[brackets]`` print as they are.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from planflow.cli.records import to_json
from planflow.cli.settings import Setting
from planflow.migration_records import MigrationStatus
from planflow.models import (
    JsonObject,
    JsonValue,
    ParallelStrategy,
    ProgressInfo,
    QueueStats,
    TaskState,
    TaskStatus,
    TaskTreeNode,
    UsageSummary,
    WorkflowState,
)

if TYPE_CHECKING:  # the commands that print these load them; --help does not
    from planflow.cli.addon_demo import AddonResult
    from planflow.cli.copy import CopyReport

STATUS_STYLES: dict[TaskStatus, str] = {
    TaskStatus.PENDING: "dim",
    TaskStatus.RUNNING: "yellow",
    TaskStatus.WAITING: "cyan",
    TaskStatus.PAUSED: "cyan",
    TaskStatus.SUCCESS: "green",
    TaskStatus.FAILED: "bold red",
    TaskStatus.TIMED_OUT: "red",
    TaskStatus.CANCELED: "magenta",
}


def status_text(status: TaskStatus) -> Text:
    """A status, coloured."""
    return Text(status.value, style=STATUS_STYLES.get(status, ""))


def task_label(state: TaskState, *, exec_id: bool = True) -> Text:
    """One line for a task: status, task id, execution type, agent or tool, tokens, and its exec id."""
    label = Text.assemble(
        status_text(state.status), " ", (state.task_id, "bold"), f"  {state.execution_type.value}"
    )
    if state.agent_id:
        label.append(f"  agent={state.agent_id}", style="blue")
    if state.tool_id:
        label.append(f"  tool={state.tool_id}", style="blue")
    if state.usage is not None and state.usage.total_tokens:
        label.append(f"  {state.usage.total_tokens:,} tokens", style="dim")
    if exec_id:
        label.append(f"  {state.task_exec_id}", style="dim")
    return label


def workflow_label(state: WorkflowState) -> Text:
    """One line for a workflow: status, workflow id and exec id."""
    return Text.assemble(
        status_text(state.status), " ", (state.workflow_id, "bold"), "  ", (state.workflow_exec_id, "dim")
    )


#: The order of statuses in a summary of hidden children: what needs attention first.
SUMMARY_ORDER: tuple[TaskStatus, ...] = (
    TaskStatus.FAILED,
    TaskStatus.TIMED_OUT,
    TaskStatus.CANCELED,
    TaskStatus.RUNNING,
    TaskStatus.WAITING,
    TaskStatus.PAUSED,
    TaskStatus.PENDING,
    TaskStatus.SUCCESS,
)


def hidden_summary(counts: Mapping[TaskStatus, int]) -> Text:
    """The line standing for hidden children: ``… 180 more (3 FAILED, 177 SUCCESS)``, worst statuses first."""
    summary = Text(f"… {sum(counts.values()):,} more (", style="dim")
    shown = [status for status in SUMMARY_ORDER if counts.get(status)]
    for index, status in enumerate(shown):
        summary.append(", " if index else "")
        summary.append(f"{counts[status]:,} ")
        summary.append_text(status_text(status))
    summary.append(")")
    return summary


def add_task_tree(
    root: Tree, nodes: Sequence[TaskTreeNode], *, max_children: int | None = None, exec_ids: bool = True
) -> None:
    """Attach a task tree under ``root``: its nodes with every parent before its children (as ``get_task_tree``
    returns them, depth-first), each parent's children in creation order.

    Args:
        root: Where the tree's root task goes.
        nodes: The root (depth 0) and its descendants.
        max_children: Show at most this many children per task; the others are summarised by status on one
            line (``None``: show all). Labels are built only for the tasks shown, so a tree of any size with
            a small limit renders in the time its rows take to read.
        exec_ids: Show each task's exec id.
    """
    branches: dict[str, Tree] = {}
    shown: Counter[str] = Counter()
    hidden: dict[str, Counter[TaskStatus]] = {}
    for node in nodes:
        state = node.state
        parent = state.parent_state_id
        if node.depth == 0:
            holder = root
        elif parent in branches:
            assert parent is not None
            if max_children is not None and shown[parent] >= max_children:
                hidden.setdefault(parent, Counter())[state.status] += 1
                continue
            shown[parent] += 1
            holder = branches[parent]
        else:
            continue  # under a hidden task
        branches[state.task_exec_id] = holder.add(task_label(state, exec_id=exec_ids))
    for parent, counts in hidden.items():
        branches[parent].add(hidden_summary(counts))


def tree_json(nodes: Sequence[TaskTreeNode]) -> list[JsonValue]:
    """A task tree as nested JSON: ``[{"task": {...}, "children": [...]}]`` (one entry per root)."""
    children_of: dict[str, list[JsonValue]] = {}
    roots: list[JsonValue] = []
    for node in nodes:
        children: list[JsonValue] = []
        children_of[node.state.task_exec_id] = children
        entry: JsonObject = {"task": to_json(node.state), "children": children}
        siblings = children_of.get(node.state.parent_state_id or "") if node.depth else None
        (roots if siblings is None else siblings).append(entry)
    return roots


def _table(title: str, *, footer: bool = False) -> Table:
    """A table in the command's style: a rule under the header (and above a footer), no frame, one space between
    columns, so that most tables fit an 80-column terminal. Id columns fold rather than being cut short."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD if not footer else box.SIMPLE,
        show_footer=footer,
        pad_edge=False,
        padding=(0, 0),
        collapse_padding=True,
        min_width=len(title),
    )


def _id_column(table: Table, header: str, ids: Iterable[str], *, whole: bool | None = None) -> None:
    """A column of ids, kept whole where the terminal allows: others shrink first, and what must break folds.

    ``whole``: never wrap them (the caller measured that they fit); ``None``: ids of up to 40 characters.
    """
    longest = max(map(len, ids), default=0)
    # Ids that fit are never wrapped, so the narrowing a tight terminal needs falls on the other columns.
    table.add_column(
        header,
        overflow="fold",
        no_wrap=longest <= 40 if whole is None else whole,
        min_width=min(max(longest, len(header)), 40),
    )


def progress_table(rows: Iterable[tuple[TaskState, ProgressInfo, ParallelStrategy]]) -> Table:
    """The progress of each parent task: children by status, rates and the overall status under its strategy.

    Only the statuses some child is in get a count, and the execution types are in the tree, so the table fits
    an 80-column terminal.
    """
    table = _table("Progress of parent tasks")
    table.add_column("task", overflow="fold")
    table.add_column("strategy")
    table.add_column("total", justify="right")
    table.add_column("by status")
    table.add_column("done", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("overall")
    for state, info, strategy in rows:
        by_status = Text(", ").join(
            Text.assemble(f"{count} ", status_text(status))
            for status, count in sorted(info.status_counts.items(), key=lambda item: -item[1])
            if count
        )
        table.add_row(
            state.task_id,
            strategy.value,
            str(info.total),
            by_status,
            f"{info.completion_rate:.0%}",
            f"{info.failure_rate:.0%}",
            status_text(info.overall_status(strategy)),
        )
    return table


def usage_table(usage: UsageSummary | None, *, title: str = "LLM usage") -> Table:
    """Token counts per provider, model and source, with a total row (cached and reasoning: parts of the
    prompt and completion counts)."""
    table = _table(title, footer=True)
    entries = usage.entries if usage is not None else ()
    table.add_column("provider", footer="total")
    table.add_column("model")
    table.add_column("source")
    for header, count in (
        ("prompt", "prompt_tokens"),
        ("cached", "cached_tokens"),
        ("completion", "completion_tokens"),
        ("reasoning", "reasoning_tokens"),
        ("total", "total_tokens"),
    ):
        table.add_column(header, justify="right", footer=f"{sum(getattr(e, count) for e in entries):,}")
    for entry in entries:
        table.add_row(
            entry.provider,
            entry.model,
            entry.source,
            f"{entry.prompt_tokens:,}",
            f"{entry.cached_tokens:,}",
            f"{entry.completion_tokens:,}",
            f"{entry.reasoning_tokens:,}",
            f"{entry.total_tokens:,}",
        )
    return table


def plural(count: int, noun: str) -> str:
    """``noun`` as ``count`` of it reads: ``1 workflow``, ``2 workflows`` (the count is the caller's)."""
    return noun if count == 1 else f"{noun}s"


#: How a listing writes its times, most precise first: the first whose table fits the terminal is used.
#: One day for every row: the date goes into the title, and the cells hold the time of day.
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")


def _fitting(
    build: Callable[[str, str, bool], Table], moments: Iterable[datetime | None], width: int | None
) -> Table:
    """The table ``build(time format, title note, ids whole)`` makes, in the most readable form that fits
    ``width`` columns: ids whole and times to the second where possible, then times to the minute; ids fold
    onto a second line only when nothing else makes room. Times are never cut."""
    days = {moment.date() for moment in moments if moment is not None}
    if len(days) == 1:
        day = next(iter(days))
        forms = [("%H:%M:%S", f"times in UTC, on {day:%Y-%m-%d}")]
    else:
        forms = [(form, "times in UTC") for form in _TIME_FORMATS]
    if width is None:
        return build(*forms[0], True)
    console = Console(width=width, file=io.StringIO())
    for form, note in forms:
        table = build(form, note, True)
        if Measurement.get(console, console.options, table).maximum <= width:
            return table
    return build(*forms[-1], False)


def workflows_table(states: Sequence[WorkflowState], *, width: int | None = None) -> Table:
    """One row per workflow execution, fitting ``width`` columns (see :func:`_fitting`)."""

    def build(form: str, note: str, whole: bool) -> Table:
        table = _table(f"{len(states)} workflow {plural(len(states), 'execution')} ({note})")
        _id_column(table, "workflow exec id", (state.workflow_exec_id for state in states), whole=whole)
        _id_column(table, "workflow", (state.workflow_id for state in states), whole=whole)
        table.add_column("status")
        table.add_column("tasks", justify="right")
        table.add_column("tokens", justify="right")
        table.add_column("created", no_wrap=True)
        table.add_column("updated", no_wrap=True)
        for state in states:
            table.add_row(
                state.workflow_exec_id,
                state.workflow_id,
                status_text(state.status),
                str(len(state.tasks)),
                f"{state.usage.total_tokens:,}" if state.usage else "",
                _when(state.created_at, form),
                _when(state.updated_at, form),
            )
        return table

    return _fitting(build, [m for state in states for m in (state.created_at, state.updated_at)], width)


def tasks_table(
    states: Sequence[TaskState], *, title: str, now: datetime | None = None, width: int | None = None
) -> Table:
    """One row per task state; with ``now``, how long ago each lease lapsed (the stuck tasks' listing). Fits
    ``width`` columns (see :func:`_fitting`); ``title`` names one row (``task state``)."""

    def build(form: str, note: str, whole: bool) -> Table:
        noun, _, rest = title.partition(" (")
        named = f"{plural(len(states), noun)}{f' ({rest}' if rest else ''}"
        table = _table(f"{len(states)} {named} ({note})")
        _id_column(table, "task exec id", (state.task_exec_id for state in states), whole=whole)
        table.add_column("status", no_wrap=True)
        table.add_column("claimed by", overflow="fold")
        if now is None:
            table.add_column("updated", no_wrap=True)
        else:
            table.add_column("lease lapsed", no_wrap=True)
            table.add_column("ago", justify="right", no_wrap=True)
        for state in states:
            if now is None:
                table.add_row(
                    state.task_exec_id,
                    status_text(state.status),
                    state.claimed_by or "",
                    _when(state.updated_at, form),
                )
            else:
                lapsed = state.lease_expires_at
                ago = "" if lapsed is None else f"{(now - lapsed).total_seconds():,.0f} s"
                table.add_row(
                    state.task_exec_id,
                    status_text(state.status),
                    state.claimed_by or "",
                    _when(lapsed, form),
                    ago,
                )
        return table

    moments = [state.updated_at if now is None else state.lease_expires_at for state in states]
    return _fitting(build, moments, width)


def _when(moment: datetime | None, form: str = "%Y-%m-%d %H:%M:%S") -> str:
    return "" if moment is None else moment.strftime(form)


def migrations_table(statuses: Sequence[MigrationStatus], *, checksums: bool = False) -> Table:
    """Every known migration, applied (with when) or pending; with ``checksums``, the first 16 hex digits of
    each file's SHA-256 (the history)."""
    table = _table("Migrations")
    table.add_column("version", justify="right")
    table.add_column("name")
    if checksums:
        table.add_column("sha256", no_wrap=True)
    table.add_column("applied (UTC)", no_wrap=True)
    for status in statuses:
        applied = Text(_when(status.applied_at)) if status.applied_at else Text("pending", style="yellow")
        row: list[str | Text] = [f"{status.version:04d}", status.name]
        if checksums:
            row.append(status.checksum[:16])
        table.add_row(*row, applied)
    return table


def settings_table(settings: Sequence[Setting], *, location: str) -> Table:
    """Each setting, its value and where it came from (``planflow config``)."""
    table = _table(f"Configuration of {location}")
    table.add_column("setting", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("from", overflow="fold")
    for setting in settings:
        value = "-" if setting.value is None else str(setting.value)
        source = Text(setting.source, style="dim" if setting.source == "default" else "")
        table.add_row(setting.name, value, source)
    return table


def counts_table(counts: Mapping[str, int], *, title: str, key: str = "table") -> Table:
    """A two-column table of names and counts."""
    table = _table(title)
    table.add_column(key)
    table.add_column("records", justify="right")
    for name, count in counts.items():
        table.add_row(name, f"{count:,}")
    return table


def queue_tables(stats: QueueStats) -> list[Table]:
    """What ``planflow queue`` shows: the figures of the queue, then each concurrency key against its limits
    (narrow columns: both fit 80 columns)."""
    figures = _table("queue")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    for status, count in sorted(stats.counts.items(), key=lambda item: item[0].value):
        figures.add_row(status.value, f"{count:,}")
    age = "-" if stats.oldest_due_age is None else f"{stats.oldest_due_age:,.1f} s"
    figures.add_row("due now", f"{stats.due:,}")
    figures.add_row("delayed (run_after ahead)", f"{stats.delayed:,}")
    figures.add_row("oldest due for", age)
    figures.add_row("dead (FAILED, attempts used up)", f"{stats.dead:,}")
    tables = [figures]
    if stats.keys:
        keys = _table("concurrency keys")
        keys.add_column("key", overflow="fold", max_width=30)
        keys.add_column("running", justify="right")
        keys.add_column("limit", justify="right")
        keys.add_column("rate", justify="right")
        keys.add_column("in window", justify="right")
        for key in stats.keys:
            rate = "-" if key.rate is None else f"{key.rate[0]}/{key.rate[1]:g}s"
            keys.add_row(
                key.key,
                f"{key.running:,}",
                "-" if key.concurrency is None else f"{key.concurrency:,}",
                rate,
                "-" if key.rate is None else f"{key.claims_in_window:,}",
            )
        tables.append(keys)
    return tables


def copy_table(report: CopyReport) -> Table:
    """What a copy wrote per table and what verification found."""
    table = _table("Copy")
    table.add_column("table", no_wrap=True)
    for name in ("source", "written", "unchanged", "target", "missing"):
        table.add_column(name, justify="right")
    table.add_column("checksum")
    table.add_column("verified")
    for line in report.tables:
        same = line.source_checksum == line.target_checksum
        table.add_row(
            line.name,
            f"{line.source:,}",
            f"{line.written:,}",
            f"{line.unchanged:,}",
            f"{line.target:,}",
            f"{line.missing:,}",
            Text(
                line.source_checksum[:12]
                if same
                else f"{line.source_checksum[:12]} ≠ {line.target_checksum[:12]}",
                style="" if same else "red",
            ),
            Text("yes", style="green") if line.verified else Text("NO", style="bold red"),
        )
    return table


def _span(span: timedelta | None) -> str:
    if span is None:
        return "once"
    hours = span.total_seconds() / 3600
    return f"{hours / 24:g} d" if hours % 24 == 0 else f"{hours:g} h"


def _pinned(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("at %H:%M")


def addon_tasks_table(result: AddonResult, *, limit: int = 20) -> Table:
    """The add-on demo's task definitions with what became of their occurrences (the first ``limit``)."""
    states: dict[str, Counter[str]] = {}
    executions = {execution.occurrence_id: execution for execution in result.executions}
    for planned in result.plan.occurrences:
        execution = executions[planned.occurrence.id]
        states.setdefault(planned.occurrence.task_id, Counter())[execution.state] += 1
    shown = result.plan.tasks[:limit]
    table = _table(f"{len(result.plan.tasks)} task definitions (the add-on's)")
    # Short titles stay on one line; the slots, a list, wrap between their items instead.
    table.add_column(
        "title", overflow="fold", no_wrap=max(map(len, (t.title for t in shown)), default=0) <= 24
    )
    table.add_column("priority")
    table.add_column("every")
    table.add_column("slots", overflow="fold")
    table.add_column("retries", justify="right")
    table.add_column("done", justify="right")
    table.add_column("missed", justify="right")
    table.add_column("cancelled", justify="right")
    for task in shown:
        counts = states.get(task.id, Counter[str]())
        table.add_row(
            task.title,
            task.priority,
            _span(task.recurrence),
            ", ".join(task.preferred_slots) or _pinned(task.pinned_time),
            str(task.retry_policy.max_retries),
            str(counts["done"]),
            Text(str(counts["missed"]), style="red" if counts["missed"] else ""),
            str(counts["cancelled"]),
        )
    if len(result.plan.tasks) > limit:
        table.caption = f"… {len(result.plan.tasks) - limit:,} more task definitions"
        table.caption_justify = "left"
    return table


def incomplete_copy_text(mark: JsonObject) -> Text:
    """What an incomplete-copy mark says, as a paragraph (the resume command is printed on its own)."""
    tables = mark.get("tables")
    copied = ", ".join(
        f"{name} {count.get('copied', 0):,} of {count.get('source', 0):,}"
        for name, count in (tables.items() if isinstance(tables, dict) else ())
        if isinstance(count, dict)
        and isinstance(count.get("copied", 0), int)
        and isinstance(count.get("source", 0), int)
        and (count.get("copied") or count.get("source"))
    )
    text = Text("Incomplete copy: ", style="bold yellow")
    text.append(f"this store holds part of a copy from {mark.get('source', 'another store')}")
    started = mark.get("started_at")
    if isinstance(started, str):
        text.append(f", started {started.replace('T', ' ').replace('+00:00', ' UTC')}")
    text.append(f" (copied: {copied})." if copied else ".")
    if "note" in mark:
        text.append(f" {mark['note']}")
    return text


__all__ = [
    "STATUS_STYLES",
    "SUMMARY_ORDER",
    "add_task_tree",
    "addon_tasks_table",
    "copy_table",
    "counts_table",
    "hidden_summary",
    "incomplete_copy_text",
    "migrations_table",
    "plural",
    "progress_table",
    "settings_table",
    "status_text",
    "task_label",
    "tree_json",
    "usage_table",
    "workflow_label",
    "workflows_table",
]
