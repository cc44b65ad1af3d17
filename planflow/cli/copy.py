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

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from planflow.cli.records import TABLES, Digest, Table, served_tables, serves
from planflow.errors import PlanflowError
from planflow.infra.provider import Provider

DEFAULT_BATCH = 1000


class CopyError(PlanflowError):
    """A copy was refused or stopped; the message says why and what to do."""


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
        not_copied: ``(table, records)`` for each non-empty source table the target's driver does not serve.
        merge: Whether the copy merged into a non-empty target.
        elapsed: Seconds the copy and verification took.
    """

    tables: list[TableReport] = field(default_factory=list[TableReport])
    not_copied: list[tuple[str, int]] = field(default_factory=list[tuple[str, int]])
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


def copy_store(
    source: Provider,
    target: Provider,
    *,
    merge: bool = False,
    batch_size: int = DEFAULT_BATCH,
    progress: CopyProgress | None = None,
) -> CopyReport:
    """Copy every table both stores serve from ``source`` to ``target``, then verify the target.

    Args:
        source: The store read from (never written).
        target: The store written to (its schema must be current: open it with ``auto_migrate``).
        merge: Allow a non-empty target (see the module docstring); without it a non-empty target is refused.
        batch_size: Records read, looked up and written per round trip.
        progress: Told about each phase as it advances.

    Returns:
        What was copied, and whether each table verified (the caller decides what a failed check means).

    Raises:
        CopyError: same store on both sides, no table in common, a non-empty target without ``merge``, a record
            whose parent never appears, or a failure part-way (the target then holds a partial copy that a
            second run with ``merge`` completes).
    """
    if batch_size < 1:
        raise CopyError(f"the batch size must be at least 1, got {batch_size}")
    if same_store(source, target):
        raise CopyError(f"the source and the target are the same store ({source.config.location})")
    started = time.perf_counter()
    sink = progress or _Silent()
    tables = [table for table in served_tables(source) if serves(target, table.repository)]
    report = CopyReport(merge=merge)
    for table in TABLES:
        if serves(source, table.repository) and not serves(target, table.repository):
            count = table.count(source)
            if count:
                report.not_copied.append((table.name, count))
    if not tables:
        raise CopyError(
            f"the {source.driver} and {target.driver} drivers serve no repository in common; nothing to copy"
        )
    if not merge:
        occupied = [table.name for table in tables if not table.is_empty(target)]
        if occupied:
            raise CopyError(
                f"the target {target.config.location} is not empty ({', '.join(occupied)} hold records); "
                "pass --merge to merge into it"
            )
    copier = _Copier(source, target, batch_size, sink, merge=merge)
    for table in tables:
        report.tables.append(TableReport(table.name, table.count(source), exact=not merge))
        sink.start(f"copy {table.name}", report.tables[-1].source)
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
    report.elapsed = time.perf_counter() - started
    return report


class _Copier:
    """Copies and verifies one table at a time between two stores."""

    def __init__(
        self, source: Provider, target: Provider, batch_size: int, sink: CopyProgress, *, merge: bool
    ) -> None:
        self.source = source
        self.target = target
        self.merge = merge
        self.batch_size = batch_size
        self.sink = sink

    def copy(self, table: Table[object], line: TableReport) -> None:
        """Write every source record of ``table`` that the target lacks or holds differently."""
        waiting: dict[str, list[object]] = {}
        phase = f"copy {table.name}"
        for page in table.pages(self.source, self.batch_size):
            self._write_changed(table, self._parents_first(table, page, waiting), line)
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
    "CopyError",
    "CopyProgress",
    "CopyReport",
    "TableReport",
    "copy_store",
    "same_store",
]
