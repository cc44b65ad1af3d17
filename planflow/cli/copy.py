"""Copy every table two stores both serve, verbatim, streaming, parents before children, then verify.

A copy reads the source page by page through the repositories' cursors and writes each page with the
repositories' verbatim imports, so ids, versions and timestamps arrive unchanged and memory stays flat however
large the tables are. A record whose parent has not been written yet waits for it (task pages are ordered by
``created_at``, so this is rare). With ``merge`` the target may already hold records: a record equal in every
field is left alone (a second run writes nothing), a different one is replaced by the source's, and records only
in the target stay. At the end every source record is looked up in the target: the counts and an
order-independent checksum of both sides (:class:`~planflow.cli.records.Digest`) must agree.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, cast

from planflow.cli.defaults import DEFAULT_BATCH
from planflow.cli.records import REPOSITORIES, TABLES, Digest, Table, serves
from planflow.errors import CopyError, PlanflowError
from planflow.models import JsonObject

if TYPE_CHECKING:
    from planflow.infra.provider import Provider, Repositories

#: The metadata key of the mark an unfinished copy leaves in its target: a JSON object with ``source``,
#: ``started_at``, ``resume`` (the command that resumes it) and ``tables`` (``source`` and ``copied`` counts).
INCOMPLETE_KEY = "planflow.copy.incomplete"


class CopyInterruptedError(CopyError):
    """A ``KeyboardInterrupt`` stopped the copy; the target keeps the incomplete-copy mark.

    Attributes:
        report: What was copied until then.
    """

    def __init__(self, report: CopyReport) -> None:
        super().__init__("the copy was interrupted; the target holds part of it")
        self.report = report


class CopyProgress(Protocol):
    """Where a copy reports progress: one line per phase (``copy tasks``, ``verify tasks`` ...)."""

    def start(self, phase: str, total: int) -> None:
        """A phase over ``total`` records begins."""
        ...

    def advance(self, phase: str, count: int) -> None:
        """``count`` more records of ``phase`` are done."""
        ...


class _Silent:
    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, phase: str, count: int) -> None:
        pass


@dataclass
class TableReport:
    """What a copy did to one table and what verification found.

    Attributes:
        name: The table.
        source: Records in the source.
        written: Records written to the target (new, or different from the target's).
        unchanged: Records the target already held, equal in every field (not written).
        target: Records in the target after the copy (more than ``source`` when merging into other data).
        missing: Source records absent from the target at verification.
        source_checksum: Checksum of the source's records.
        target_checksum: Checksum of the target's records with the same keys.
    """

    name: str
    source: int
    written: int = 0
    unchanged: int = 0
    target: int = 0
    missing: int = 0
    source_checksum: str = ""
    target_checksum: str = ""
    exact: bool = True

    @property
    def copied(self) -> int:
        """Source records the target holds equal so far (written, or already there)."""
        return self.written + self.unchanged

    @property
    def verified(self) -> bool:
        """Every source record is in the target, equal in every field (and nothing else is, unless merging)."""
        return (
            self.missing == 0
            and self.source_checksum == self.target_checksum
            and (self.target == self.source or not self.exact)
        )


@dataclass
class CopyReport:
    """The outcome of a copy.

    Attributes:
        tables: One report per copied table.
        skipped: ``(table, records)`` for each non-empty source table left behind as the caller asked.
        merge: Whether the copy merged into a non-empty target.
        elapsed: Seconds the copy and verification took.
    """

    tables: list[TableReport] = field(default_factory=list[TableReport])
    skipped: list[tuple[str, int]] = field(default_factory=list[tuple[str, int]])
    merge: bool = False
    elapsed: float = 0.0

    @property
    def verified(self) -> bool:
        """True when every copied table verified."""
        return all(table.verified for table in self.tables)


def same_store(source: Provider, target: Provider) -> bool:
    """True when both providers open the same database (an in-memory store is never the same as another)."""
    a, b = source.config, target.config
    if a.driver != b.driver or a.is_memory or b.is_memory:
        return False
    return a.location == b.location if a.driver == "postgres" else _real(a.location) == _real(b.location)


def _real(path: str) -> str:
    return os.path.realpath(path)


def describe(provider: Provider) -> str:
    """The store as one line safe to print and to keep: driver and absolute path, or URL without password."""
    config = provider.config
    local = config.driver != "postgres" and not config.is_memory
    return f"{config.driver} {_real(config.location) if local else config.location}"


def _records(count: int) -> str:
    return f"{count:,} record{'' if count == 1 else 's'}"


def _select(
    source: Provider, target: Provider, only: Collection[str] | None, skip: Collection[str]
) -> tuple[list[str], list[tuple[str, int]]]:
    """The repositories to copy and the non-empty tables left behind as asked.

    Raises:
        CopyError: a repository named that the source does not serve, one that the target does not store
            (named, or implied by naming nothing), or tasks without their workflows.
    """
    served = [name for name in REPOSITORIES if serves(source, name)]
    for name in [*(only or ()), *skip]:
        if name not in REPOSITORIES:
            raise CopyError(f"unknown repository {name!r}; choose from: {', '.join(REPOSITORIES)}")
    absent = [name for name in (only or ()) if name not in served]
    if absent:
        raise CopyError(
            f"the {source.driver} source does not serve {', '.join(absent)}; it serves {', '.join(served)}"
        )
    chosen = [name for name in served if (only is None or name in only) and name not in skip]
    if "tasks" in chosen and "workflows" not in chosen:
        raise CopyError("tasks belong to their workflows: copy the workflows with them, or skip both")
    unstored = [
        (table.name, count)
        for table in TABLES
        if table.repository in chosen
        and not serves(target, table.repository)
        and (count := table.count(source))
    ]
    if unstored:
        kept = [name for name in chosen if serves(target, name)]
        lost = [name for name in REPOSITORIES if any(table.repository == name for table in _named(unstored))]
        hint = f"copy only what it stores with --only {' --only '.join(kept)}, or " if kept else ""
        raise CopyError(
            f"the {target.driver} target does not store "
            + ", ".join(f"{name} ({_records(count)})" for name, count in unstored)
            + f"; nothing was copied: {hint}leave them behind with --skip {' --skip '.join(lost)}"
        )
    chosen = [name for name in chosen if serves(target, name)]
    left = [
        (table.name, count)
        for table in TABLES
        if table.repository in served and table.repository not in chosen and (count := table.count(source))
    ]
    return chosen, left


def _named(counts: list[tuple[str, int]]) -> list[Table[object]]:
    names = {name for name, _ in counts}
    return [table for table in TABLES if table.name in names]


def read_mark(repos: Repositories) -> JsonObject | None:
    """The incomplete-copy mark of a store (see :data:`INCOMPLETE_KEY`), or ``None`` when it has none."""
    text = repos.metadata.get(INCOMPLETE_KEY)
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    # A mark some other tool wrote still says the store is incomplete; shown as it is.
    return cast("JsonObject", doc) if isinstance(doc, dict) else {"note": text}


class _Mark:
    """The incomplete-copy mark this copy keeps in the target while it runs."""

    def __init__(self, target: Provider, source: str, resume: str | None, report: CopyReport) -> None:
        self._target = target
        self._report = report
        self._doc: JsonObject = {
            "source": source,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "resume": resume,
        }

    def save(self) -> None:
        """Write the mark with what has been copied so far."""
        self._doc["tables"] = {
            line.name: {"source": line.source, "copied": line.copied} for line in self._report.tables
        }
        self._target.metadata.set(INCOMPLETE_KEY, json.dumps(self._doc, ensure_ascii=False))

    def clear(self) -> None:
        """Remove the mark: the copy is complete."""
        self._target.metadata.delete(INCOMPLETE_KEY)


def copy_store(
    source: Provider,
    target: Provider,
    *,
    merge: bool = False,
    batch_size: int = DEFAULT_BATCH,
    progress: CopyProgress | None = None,
    only: Collection[str] | None = None,
    skip: Collection[str] = (),
    resume: str | None = None,
) -> CopyReport:
    """Copy every table both stores serve from ``source`` to ``target``, then verify the target.

    While the copy runs the target carries a mark (metadata :data:`INCOMPLETE_KEY`: where from, since when,
    what was copied so far, ``resume``), updated after every page and removed once the target verified; a copy
    that stops part-way, however it stops, leaves it for ``planflow status`` to show and a copy with ``merge``
    to resume.

    Args:
        source: The store read from (never written).
        target: The store written to (its schema must be current: open it with ``auto_migrate``).
        merge: Allow a non-empty target (see the module docstring); without it a non-empty target is refused.
        batch_size: Records read, looked up and written per round trip.
        progress: Told about each phase as it advances.
        only: Copy only these repositories (``workflows``, ``tasks``, ``auth``, ``executions``).
        skip: Leave these repositories behind.
        resume: The command that resumes this copy, kept in the mark.

    Returns:
        What was copied, and whether each table verified (the caller decides what a failed check means).

    Raises:
        CopyError: same store on both sides, a repository of records the target cannot store that the caller
            did not leave behind, nothing in common, a non-empty target without ``merge``, a target marked by
            an unfinished copy from another store, a record whose parent never appears, or a failure part-way
            (the target then holds a partial copy that a second run with ``merge`` completes).
        CopyInterruptedError: a ``KeyboardInterrupt`` stopped the copy (the target stays marked).
    """
    if batch_size < 1:
        raise CopyError(f"the batch size must be at least 1, got {batch_size}")
    if same_store(source, target):
        raise CopyError(f"the source and the target are the same store ({source.config.location})")
    started = time.perf_counter()
    sink = progress or _Silent()
    chosen, left = _select(source, target, only, skip)
    tables = [table for table in TABLES if table.repository in chosen]
    report = CopyReport(merge=merge, skipped=left)
    if not tables:
        raise CopyError(
            f"the {source.driver} and {target.driver} drivers serve no repository in common; nothing to copy"
            if only is None and not skip
            else "no repository is left to copy"
        )
    origin = describe(source)
    mark = read_mark(target)
    if mark is not None and mark.get("source", origin) != origin:
        raise CopyError(
            f"the target {target.config.location} holds an incomplete copy from {mark.get('source')}; "
            f"finish that one first: {mark.get('resume') or 'copy from that store again with --merge'}"
        )
    if not merge:
        occupied = [table.name for table in tables if not table.is_empty(target)]
        if occupied:
            unfinished = " holds an incomplete copy from this source and" if mark is not None else ""
            raise CopyError(
                f"the target {target.config.location}{unfinished} is not empty ({', '.join(occupied)} hold "
                "records); pass --merge to merge into it"
                + (" and complete the copy" if mark is not None else "")
            )
    for table in tables:
        report.tables.append(TableReport(table.name, table.count(source), exact=not merge))
    marker = _Mark(target, origin, resume, report)
    try:
        marker.save()
        copier = _Copier(source, target, batch_size, sink, merge=merge, on_page=marker.save)
        for line in report.tables:
            sink.start(f"copy {line.name}", line.source)
        for table, line in zip(tables, report.tables, strict=True):
            try:
                copier.copy(table, line)
            except CopyError:
                raise
            except PlanflowError as exc:
                raise CopyError(
                    f"copying {table.name} stopped: {exc}; the target holds a partial copy: "
                    "run the same command with --merge to complete it"
                ) from exc
        for table, line in zip(tables, report.tables, strict=True):
            copier.verify(table, line)
    except KeyboardInterrupt as exc:
        with suppress(PlanflowError):  # the mark of the last page stays if this last write fails
            if not merge:
                # The interrupt may have landed after a page was stored and before it was counted: the target,
                # empty when the copy began, says exactly what it holds.
                for table, line in zip(tables, report.tables, strict=False):
                    line.written = table.count(target)
            marker.save()
        report.elapsed = time.perf_counter() - started
        raise CopyInterruptedError(report) from exc
    if report.verified:
        marker.clear()
    report.elapsed = time.perf_counter() - started
    return report


class _Copier:
    """Copies and verifies one table at a time between two stores."""

    def __init__(
        self,
        source: Provider,
        target: Provider,
        batch_size: int,
        sink: CopyProgress,
        *,
        merge: bool,
        on_page: Callable[[], None],
    ) -> None:
        self.source = source
        self.target = target
        self.merge = merge
        self.batch_size = batch_size
        self.sink = sink
        self.on_page = on_page

    def copy(self, table: Table[object], line: TableReport) -> None:
        """Write every source record of ``table`` that the target lacks or holds differently."""
        waiting: dict[str, list[object]] = {}
        phase = f"copy {table.name}"
        for page in table.pages(self.source, self.batch_size):
            self._write_changed(table, self._parents_first(table, page, waiting), line)
            self.on_page()
            self.sink.advance(phase, len(page))
        if waiting:
            orphans = [table.key(record) for records in waiting.values() for record in records]
            raise CopyError(
                f"{len(orphans)} {table.name} records were not copied: their parents are missing from the "
                f"source or form a cycle (for example {', '.join(repr(key) for key in orphans[:3])})"
            )

    def _parents_first(
        self, table: Table[object], page: list[object], waiting: dict[str, list[object]]
    ) -> list[object]:
        """The records of ``page`` (and those waiting for them) that can be written now, each after its parent.

        A record whose parent is neither in the target nor placed before it waits in ``waiting`` (by parent
        key) until its parent is placed.
        """
        keys = {table.key(record) for record in page}
        outside = sorted(
            {
                parent
                for record in page
                if (parent := table.parent_key(record)) is not None and parent not in keys
            }
        )
        placed = set(table.lookup(self.target, outside)) if outside else set[str]()
        ready: list[object] = []
        for record in page:
            parent = table.parent_key(record)
            if parent is not None and parent not in placed:
                waiting.setdefault(parent, []).append(record)
                continue
            stack = [record]
            while stack:
                current = stack.pop()
                ready.append(current)
                key = table.key(current)
                placed.add(key)
                stack.extend(reversed(waiting.pop(key, [])))
        return ready

    def _write_changed(self, table: Table[object], records: Sequence[object], line: TableReport) -> None:
        if not records:
            return
        # Without merge the target was empty and the source yields each key once: nothing to compare with.
        existing = table.lookup(self.target, [table.key(record) for record in records]) if self.merge else {}
        changed = [
            record
            for record in records
            if (stored := existing.get(table.key(record))) is None
            or table.to_json(stored) != table.to_json(record)
        ]
        if changed:
            table.write(self.target, changed)
        line.written += len(changed)
        line.unchanged += len(records) - len(changed)

    def verify(self, table: Table[object], line: TableReport) -> None:
        """Look every source record up in the target; fill in the counts and both checksums of ``line``."""
        phase = f"verify {table.name}"
        self.sink.start(phase, line.source)
        ours, theirs = Digest(), Digest()
        missing = 0
        for page in table.pages(self.source, self.batch_size):
            stored = table.lookup(self.target, [table.key(record) for record in page])
            for record in page:
                ours.add(table.to_json(record))
                match = stored.get(table.key(record))
                if match is None:
                    missing += 1
                else:
                    theirs.add(table.to_json(match))
            self.sink.advance(phase, len(page))
        line.source = ours.count
        line.missing = missing
        line.source_checksum = ours.hexdigest
        line.target_checksum = theirs.hexdigest
        line.target = table.count(self.target)


__all__ = [
    "DEFAULT_BATCH",
    "INCOMPLETE_KEY",
    "CopyError",
    "CopyInterruptedError",
    "CopyProgress",
    "CopyReport",
    "TableReport",
    "copy_store",
    "describe",
    "read_mark",
    "same_store",
]
