"""Interleaved timing: every implementation of a workload runs in the same process, taking turns.

Repetition ``r`` runs the implementations in an order rotated by ``r``, so slow drift of a noisy machine
(other processes, thermal state, the database's background work) spreads over all of them instead of
landing on whichever ran last. Only medians are reported.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from benchmarks.databases import BenchDatabase, DatabaseFactory
from benchmarks.stores.base import TaskStore
from benchmarks.workloads import Workload, WorkloadSpec

T = TypeVar("T")

Progress = Callable[[str], None]


@dataclass(slots=True)
class Measurement:
    """The timings of one workload at one size on one driver, per implementation (variant)."""

    number: int
    key: str
    title: str
    driver: str
    size: int
    group: str
    samples: dict[str, list[float]] = field(default_factory=dict[str, list[float]])
    operations: dict[str, int] = field(default_factory=dict[str, int])
    counts: dict[str, dict[str, list[int]]] = field(default_factory=dict[str, dict[str, list[int]]])

    def median(self, variant: str) -> float:
        """Median seconds of ``variant``."""
        return statistics.median(self.samples[variant])

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median of ``numerator`` over median of ``denominator``."""
        return self.median(numerator) / self.median(denominator)

    def paired_ratio(self, numerator: str, denominator: str) -> float:
        """Median of the per-repetition ratios (each pair ran back to back)."""
        pairs = zip(self.samples[numerator], self.samples[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready summary with the raw samples."""
        return {
            "number": self.number,
            "key": self.key,
            "title": self.title,
            "driver": self.driver,
            "size": self.size,
            "group": self.group,
            "median_seconds": {v: self.median(v) for v in self.samples},
            "samples_seconds": self.samples,
            "operations": self.operations,
            "counts": self.counts,
        }


def rotated(items: Sequence[str], turn: int) -> list[str]:
    """``items`` rotated left by ``turn``."""
    shift = turn % len(items)
    return [*items[shift:], *items[:shift]]


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """What ``call`` returned and the seconds it took, after a full collection so that garbage of earlier
    runs is not billed to it."""
    gc.collect()
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


@dataclass(frozen=True, slots=True)
class Extra:
    """More rounds for cheap workloads: medians of more samples resist a noisy machine better.

    Rounds continue past the minimum while the timed runs so far took less than ``budget`` seconds, up to
    ``most`` rounds in all.
    """

    most: int
    budget: float


@dataclass(frozen=True, slots=True)
class Schedule:
    """How many rounds one workload gets: ``warmup`` untimed, at least ``repetitions`` timed, maybe ``extra``."""

    repetitions: int
    warmup: int = 1
    extra: Extra | None = None


@dataclass(slots=True)
class _Cell:
    """One workload at one size for one implementation, on its own database."""

    database: BenchDatabase
    workload: Workload
    store: TaskStore | None = None


@dataclass(slots=True)
class _Entry:
    spec: WorkloadSpec
    schedule: Schedule
    measurement: Measurement
    cells: dict[str, _Cell] = field(default_factory=dict[str, _Cell])
    rounds: int = 0
    spent: float = 0.0

    def wants_round(self) -> bool:
        timed_rounds = self.rounds - self.schedule.warmup
        if timed_rounds < self.schedule.repetitions:
            return True
        extra = self.schedule.extra
        return extra is not None and timed_rounds < extra.most and self.spent < extra.budget


def run_sql_group(
    factory: DatabaseFactory,
    specs: Sequence[tuple[WorkloadSpec, Schedule]],
    *,
    implementations: Sequence[str],
    progress: Progress | None = None,
) -> list[Measurement]:
    """Time every spec for each implementation, each on its own fresh database, all interleaved.

    A round runs every spec that still wants one, each for every implementation in an order rotated by the
    round, so the sizes of a scaling run are measured side by side too and their growth factors are not
    skewed by the machine getting busier between them.
    """
    entries = [
        _Entry(
            spec,
            schedule,
            Measurement(spec.number, spec.key, spec.title, factory.driver, spec.size, spec.group),
        )
        for spec, schedule in specs
    ]
    try:
        for entry in entries:
            for implementation in implementations:
                database = factory.create(f"w{entry.spec.number}-{implementation}")
                cell = entry.cells[implementation] = _Cell(database, entry.spec.make())
                with database.open_provider() as provider:
                    cell.workload.seed(provider)
                database.maintain()
                cell.store = database.open_store(implementation)
                entry.measurement.samples[implementation] = []
                entry.measurement.counts[implementation] = {}
        turn = 0
        while any(entry.wants_round() for entry in entries):
            for entry in entries:
                if entry.wants_round():
                    _round(entry, rotated(implementations, turn))
                    if progress is not None:
                        warm = entry.rounds <= entry.schedule.warmup
                        label = "warm-up" if warm else f"rep {entry.rounds - entry.schedule.warmup}"
                        progress(f"{factory.driver} w{entry.spec.number} {entry.spec.title}: {label}")
            turn += 1
    finally:
        for entry in entries:
            for cell in entry.cells.values():
                if cell.store is not None:
                    cell.store.close()
                cell.workload.close()
                cell.database.drop()
    return [entry.measurement for entry in entries]


def _round(entry: _Entry, order: Sequence[str]) -> None:
    counted = entry.rounds >= entry.schedule.warmup
    measurement = entry.measurement
    for implementation in order:
        cell = entry.cells[implementation]
        store = cell.store
        assert store is not None
        cell.workload.before(cell.database)
        outcome, seconds = timed(partial(cell.workload.run, store))
        if counted:
            entry.spent += seconds
            measurement.samples[implementation].append(seconds)
            measurement.operations[implementation] = outcome.operations
            for name, value in outcome.counts.items():
                measurement.counts[implementation].setdefault(name, []).append(value)
    entry.rounds += 1


def run_sql_workload(
    factory: DatabaseFactory,
    spec: WorkloadSpec,
    *,
    implementations: Sequence[str],
    repetitions: int,
    warmup: int,
    extra: Extra | None = None,
    progress: Progress | None = None,
) -> Measurement:
    """Time one spec for each implementation, interleaved (see :func:`run_sql_group`)."""
    schedule = Schedule(repetitions, warmup, extra)
    return run_sql_group(factory, [(spec, schedule)], implementations=implementations, progress=progress)[0]
