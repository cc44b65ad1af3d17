"""``planflow history``, ``cancel``, ``resume`` and ``fork``: a run's timeline, and the workflow control operations.

Registered on :data:`planflow.cli.app.app` when that module is imported (it imports this one at its end). These
are commands of that module kept apart, and use its private helpers as its own commands do.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from typing import TYPE_CHECKING, Annotated

import typer

from planflow.cli.app import (
    DbOption,
    JsonOption,
    VerboseOption,
    _has_schema,  # pyright: ignore[reportPrivateUsage]
    _not_found,  # pyright: ignore[reportPrivateUsage]
    _open_to_read,  # pyright: ignore[reportPrivateUsage]
    _open_to_write,  # pyright: ignore[reportPrivateUsage]
    _print_json,  # pyright: ignore[reportPrivateUsage]
    _store,  # pyright: ignore[reportPrivateUsage]
    _where,  # pyright: ignore[reportPrivateUsage]
    app,
    console,
)
from planflow.cli.records import to_json, workflow_json
from planflow.errors import NotFoundError, PlanflowError
from planflow.models import HistoryRecord, JsonValue

if TYPE_CHECKING:  # loaded by the commands that open a store, not by --help
    from planflow.infra.provider import Provider

#: Width of a timeline line (a terminal's default).
WIDTH = 80
#: Continuation lines of a record are indented this much (little, so that a long id still fits a line).
INDENT = 4
#: Records read per round trip.
PAGE = 500
#: Transitions ``planflow show`` adds.
LAST = 5


def history_of(provider: Provider, exec_id: str, *, limit: int) -> list[HistoryRecord] | None:
    """The records of a workflow (with its tasks') or of a task, oldest first, at most ``limit`` (the newest
    ``limit`` when there are more); None when neither exists."""
    is_workflow = True
    try:
        provider.workflows.get_state(exec_id)
    except NotFoundError:
        is_workflow = False

    def read(after: int | None) -> list[HistoryRecord]:
        if is_workflow:
            return provider.workflows.history(exec_id, include_tasks=True, after=after, limit=PAGE)
        return provider.tasks.history(exec_id, after=after, limit=PAGE)

    records: list[HistoryRecord] = []
    after: int | None = None
    try:
        while page := read(after):
            records.extend(page)
            records = records[-limit:]
            after = page[-1].history_id
    except NotFoundError:
        return None
    return records


def timeline_line(record: HistoryRecord, *, width: int = WIDTH, entity: bool = True) -> str:
    """One record in lines of at most ``width`` characters: when, which entity (unless not ``entity``), the
    change, by whom, why. Nothing is cut: what does not fit goes on indented lines below (an id is never split,
    and one longer than a line stands on a line of its own)."""
    change = f"{record.from_status or 'new'} -> {record.to_status}"
    who = f" by {record.worker}" if record.worker else ""
    attempt = f" #{record.attempt}" if record.attempt else ""
    why = f": {record.error}" if record.error else ""
    line = (
        f"{record.recorded_at:%Y-%m-%d %H:%M:%S} "
        f"{f'{record.entity[0]} {record.entity_id} ' if entity else ''}"
        f"{change} v{record.version}{attempt}{who}{why}"
    )
    return "\n".join(
        textwrap.wrap(
            " ".join(line.split()),
            width,
            subsequent_indent=" " * INDENT,
            break_long_words=False,
            break_on_hyphens=False,
        )
    )


def last_transitions(provider: Provider, exec_id: str, *, count: int = LAST) -> JsonValue:
    """The newest ``count`` records of ``exec_id`` as JSON (what ``planflow show`` adds)."""
    records = history_of(provider, exec_id, limit=count) or []
    return [to_json(record) for record in records]


@app.command(
    help="Print the history of a workflow (with its tasks) or of a task: every change of status, holder, "
    "attempt or error, oldest first, one line each (80 columns), or as JSON."
)
def history(
    exec_id: Annotated[str, typer.Argument(help="A workflow exec id or a task exec id.")],
    db: DbOption = None,
    verbose: VerboseOption = 0,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="Show the newest N records at most.")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Print a run's timeline."""
    db = _store(db)
    with _open_to_read(db) as provider:
        records = history_of(provider, exec_id, limit=limit) if _has_schema(provider) else None
        if records is None:
            raise _not_found(provider, exec_id)
        if as_json:
            _print_json([to_json(record) for record in records])
            return
        for record in records:
            typer.echo(timeline_line(record))
        if not records:
            console.print(f"{exec_id}: no recorded change")


def _confirm(question: str, yes: bool, command: str) -> None:
    """Ask on a terminal unless ``yes``; without one, ``--yes`` is needed.

    Raises:
        PlanflowError: no terminal to ask on, or the answer was no; nothing was changed.
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise PlanflowError(
            f"{command} changes the store: pass --yes to run it without a terminal to confirm on; "
            "nothing was changed"
        )
    if not typer.confirm(question, default=False, err=True):
        raise PlanflowError(f"{command} cancelled: nothing was changed")


YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking.")]


@app.command(
    help="Cancel a workflow: it and every unfinished task of it become CANCELED in one transaction; "
    "workers holding its tasks are fenced at their next write or heartbeat."
)
def cancel(
    workflow_exec_id: Annotated[str, typer.Argument(help="The workflow exec id.")],
    *,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the history and the states).")],
    db: DbOption = None,
    verbose: VerboseOption = 0,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Cancel a workflow."""
    db = _store(db)
    with _open_to_write(db, must_exist=True) as provider:
        _confirm(f"Cancel workflow {workflow_exec_id} in {_where(provider)}?", yes, "cancel")
        done = provider.workflows.cancel(workflow_exec_id, reason=reason)
        _report(provider, done.workflow_exec_id, as_json, f"workflow {workflow_exec_id} is {done.status}")


@app.command(
    help="Resume a workflow: its FAILED, CANCELED and TIMED_OUT tasks go back to PENDING (attempt "
    "counts kept), the workflow to RUNNING; SUCCESS tasks keep their outputs."
)
def resume(
    workflow_exec_id: Annotated[str, typer.Argument(help="The workflow exec id.")],
    db: DbOption = None,
    verbose: VerboseOption = 0,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Resume a workflow."""
    db = _store(db)
    with _open_to_write(db, must_exist=True) as provider:
        _confirm(f"Resume workflow {workflow_exec_id} in {_where(provider)}?", yes, "resume")
        done = provider.workflows.resume(workflow_exec_id)
        _report(provider, done.workflow_exec_id, as_json, f"workflow {workflow_exec_id} is {done.status}")


@app.command(
    help="Fork a workflow: a new execution whose tasks are copied, succeeded ones with their outputs, "
    "and which runs again from the --from tasks on (them, their descendants, the tasks created after them)."
)
def fork(
    workflow_exec_id: Annotated[str, typer.Argument(help="The workflow exec id to fork.")],
    *,
    restart_from: Annotated[
        list[str] | None,
        typer.Option(
            "--from", metavar="TASK", help="A task exec id to run again from (repeat it for several)."
        ),
    ] = None,
    new_id: Annotated[
        str | None,
        typer.Option("--as", metavar="ID", help="The new workflow exec id (default: ID-fork-XXXXXXXX)."),
    ] = None,
    db: DbOption = None,
    verbose: VerboseOption = 0,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Fork a workflow."""
    db = _store(db)
    target = new_id or f"{workflow_exec_id}-fork-{uuid.uuid4().hex[:8]}"
    with _open_to_write(db, must_exist=True) as provider:
        _confirm(f"Fork workflow {workflow_exec_id} as {target} in {_where(provider)}?", yes, "fork")
        made = provider.workflows.fork(
            workflow_exec_id, new_workflow_exec_id=target, restart_from=list(restart_from or ())
        )
        pending = sum(1 for t in made.tasks.values() if t.status.value == "PENDING")
        _report(
            provider,
            made.workflow_exec_id,
            as_json,
            f"forked {workflow_exec_id} as {made.workflow_exec_id}: {len(made.tasks)} tasks, {pending} to run again",
        )


def _report(provider: Provider, workflow_exec_id: str, as_json: bool, said: str) -> None:
    if as_json:
        _print_json(workflow_json(provider.workflows.get_state(workflow_exec_id)))
        return
    typer.echo(said)
