"""How the command line shows things: rich trees, tables and progress bars, and their JSON twins.

Labels are built as :class:`rich.text.Text`, never as markup, so ids holding ``[brackets]`` print as they are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from planflow.cli.copy import CopyReport
from planflow.cli.records import to_json
from planflow.models import (
    JsonObject,
    JsonValue,
    ParallelStrategy,
    ProgressInfo,
    TaskState,
    TaskStatus,
    TaskTreeNode,
    UsageSummary,
    WorkflowState,
)
from planflow.schema import MigrationStatus

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


def add_task_tree(
    root: Tree, nodes: Sequence[TaskTreeNode], *, max_children: int | None = None, exec_ids: bool = True
) -> None:
    """Attach a task tree (as ``get_task_tree`` returns it: depth, then ``created_at``) under ``root``.

    Args:
        root: Where the tree's root task goes.
        nodes: The root (depth 0) and its descendants.
        max_children: Show at most this many children per task; the others are summarised by status on one
            line (``None``: show all).
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
        summary = Text(f"… {sum(counts.values())} more: ", style="dim")
        for index, (status, count) in enumerate(sorted(counts.items())):
            summary.append(", " if index else "")
            summary.append(f"{count} ")
            summary.append_text(status_text(status))
        branches[parent].add(summary)


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


def _id_column(table: Table, header: str, ids: Iterable[str]) -> None:
    """A column of ids, kept whole where the terminal allows: others shrink first, and what must break folds."""
    longest = max(map(len, ids), default=0)
    table.add_column(header, overflow="fold", min_width=min(max(longest, len(header)), 40))


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
    """Token counts per provider, model and source, with a total row."""
    table = _table(title, footer=True)
    entries = usage.entries if usage is not None else ()
    table.add_column("provider", footer="total")
    table.add_column("model")
    table.add_column("source")
    table.add_column("prompt", justify="right", footer=f"{sum(e.prompt_tokens for e in entries):,}")
    table.add_column("completion", justify="right", footer=f"{sum(e.completion_tokens for e in entries):,}")
    table.add_column("total", justify="right", footer=f"{sum(e.total_tokens for e in entries):,}")
    for entry in entries:
        table.add_row(
            entry.provider,
            entry.model,
            entry.source,
            f"{entry.prompt_tokens:,}",
            f"{entry.completion_tokens:,}",
            f"{entry.total_tokens:,}",
        )
    return table


def workflows_table(states: Sequence[WorkflowState]) -> Table:
    """One row per workflow execution."""
    table = _table(f"{len(states)} workflow executions (times in UTC)")
    _id_column(table, "workflow exec id", (state.workflow_exec_id for state in states))
    table.add_column("workflow", overflow="fold")
    table.add_column("status")
    table.add_column("tasks", justify="right")
    table.add_column("tokens", justify="right")
    # A date and a time: at 10 wide they break between the two rather than inside either.
    table.add_column("created", min_width=10)
    table.add_column("updated", min_width=10)
    for state in states:
        table.add_row(
            state.workflow_exec_id,
            state.workflow_id,
            status_text(state.status),
            str(len(state.tasks)),
            f"{state.usage.total_tokens:,}" if state.usage else "",
            _when(state.created_at),
            _when(state.updated_at),
        )
    return table


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def migrations_table(statuses: Sequence[MigrationStatus]) -> Table:
    """Every known migration, applied (with when) or pending."""
    table = _table("Migrations")
    table.add_column("version", justify="right")
    table.add_column("name")
    table.add_column("applied (UTC)")
    for status in statuses:
        applied = Text(_when(status.applied_at)) if status.applied_at else Text("pending", style="yellow")
        table.add_row(f"{status.version:04d}", status.name, applied)
    return table


def counts_table(counts: Mapping[str, int], *, title: str, key: str = "table") -> Table:
    """A two-column table of names and counts."""
    table = _table(title)
    table.add_column(key)
    table.add_column("records", justify="right")
    for name, count in counts.items():
        table.add_row(name, f"{count:,}")
    return table


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


class RichProgress:
    """A rich progress bar with one line per phase; a :class:`~planflow.cli.copy.CopyProgress`.

    Use it as a context manager. The display starts with the first line, so a command that fails before any
    work prints nothing; phases of no records get no line; with ``enabled=False`` nothing is shown at all.
    """

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        )
        self._lines: dict[str, TaskID] = {}
        self._started = False

    def start(self, phase: str, total: int) -> None:
        """Add the line of ``phase``, out of ``total`` (none when ``total`` is 0)."""
        if total and phase not in self._lines:
            if not self._started:
                self._started = True
                self._progress.start()
            self._lines[phase] = self._progress.add_task(phase, total=total)

    def advance(self, phase: str, count: int) -> None:
        """Move the line of ``phase`` forward by ``count``."""
        if phase in self._lines:
            self._progress.advance(self._lines[phase], count)

    def update(self, phase: str, completed: int, total: int) -> None:
        """Set the line of ``phase`` to ``completed`` out of ``total`` (thread-safe once the line exists)."""
        self.start(phase, total)
        if phase in self._lines:
            self._progress.update(self._lines[phase], completed=completed, total=total)

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._started:
            self._progress.stop()


__all__ = [
    "STATUS_STYLES",
    "RichProgress",
    "add_task_tree",
    "copy_table",
    "counts_table",
    "migrations_table",
    "progress_table",
    "status_text",
    "task_label",
    "tree_json",
    "usage_table",
    "workflow_label",
    "workflows_table",
]
