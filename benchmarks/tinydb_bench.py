"""TinyDB benchmarks: workload 9, and the add-on's store at scale (``python -m benchmarks.tinydb_bench``).

Workload 9 times ``add_execution``, one by one and in one ``batch()``, against raw TinyDB. planflow's variants
use the add-on's setup, ``TinyDbExecutionRepository`` over ``JournaledStorage`` (each write one fsynced
journal append). The raw variant is TinyDB as it comes: ``TinyDB(path)`` with its default ``JSONStorage``,
inserting the same documents into the same table. Each run starts from a new, empty file.

The scale run (:func:`run_tinydb_scale`) times single ``add_execution`` calls into a store already holding
``n`` records, for each ``n``, three ways in the same run: the journaled storage, today's
``CrashSafeJSONStorage`` (every write re-reads and rewrites the whole file) and raw TinyDB ``insert``; each
starts from a copy of the same file. It reports each call's p50 and p99, and for the journaled store
``get_execution``, ``list_executions`` (the first after opening, which decodes every record, and the next
ones), the time to open the store and to close it (folding the journal in) and the file's size against raw
TinyDB's for the same data.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinydb import TinyDB
from tinydb.storages import JSONStorage

from benchmarks import data
from benchmarks.harness import Measurement, Progress, rotated, timed
from planflow import TaskExecution
from planflow.infra.execution_codec import execution_to_doc
from planflow.infra.tinydb import CrashSafeJSONStorage, JournaledStorage, TinyDbExecutionRepository

ONE_BY_ONE = "planflow"
BATCH = "planflow-batch"
RAW = "raw"
VARIANTS = (ONE_BY_ONE, BATCH, RAW)


def raw_doc(execution: TaskExecution) -> dict[str, object]:
    """The document planflow stores for ``execution``, built by hand."""
    return {
        "occurrence_id": execution.occurrence_id,
        "state": execution.state,
        "retries_remaining": execution.retries_remaining,
        "history": [{"event": e.event, "timestamp": e.timestamp.isoformat()} for e in execution.history],
    }


def _one_by_one(path: Path, records: list[TaskExecution]) -> tuple[Callable[[], None], TinyDB]:
    db = TinyDB(path, storage=JournaledStorage)
    repository = TinyDbExecutionRepository(db)

    def run() -> None:
        for record in records:
            repository.add_execution(record)

    return run, db


def _batch(path: Path, records: list[TaskExecution]) -> tuple[Callable[[], None], TinyDB]:
    db = TinyDB(path, storage=JournaledStorage)
    repository = TinyDbExecutionRepository(db)

    def run() -> None:
        with repository.batch():
            for record in records:
                repository.add_execution(record)

    return run, db


def _raw(path: Path, records: list[TaskExecution]) -> tuple[Callable[[], None], TinyDB]:
    db = TinyDB(path)
    table = db.table("executions")

    def run() -> None:
        for record in records:
            table.insert(raw_doc(record))

    return run, db


PREPARE = {ONE_BY_ONE: _one_by_one, BATCH: _batch, RAW: _raw}


def run_tinydb_workload(
    count: int,
    *,
    repetitions: int,
    warmup: int,
    workdir: str | None = None,
    progress: Progress | None = None,
) -> Measurement:
    """Time ``count`` adds per variant, interleaved, each run on a new file."""
    title = f"{count:,} x add_execution"
    measurement = Measurement(9, "tinydb_add_execution", title, "tinydb", count, "main")
    records = data.executions(count)
    folder = Path(tempfile.mkdtemp(prefix="planflow-bench-tinydb-", dir=workdir))
    try:
        for variant in VARIANTS:
            measurement.samples[variant] = []
            measurement.operations[variant] = count
        for repetition in range(warmup + repetitions):
            for variant in rotated(VARIANTS, repetition):
                path = folder / f"{variant}-{repetition}.json"
                run, db = PREPARE[variant](path, records)
                try:
                    _, seconds = timed(run)
                finally:
                    db.close()
                stored = TinyDB(path).table("executions")
                assert len(stored) == count, f"{variant} stored {len(stored)} of {count} executions"
                stored.storage.close()
                for leftover in folder.iterdir():
                    leftover.unlink()
                if repetition >= warmup:
                    measurement.samples[variant].append(seconds)
            if progress is not None:
                label = "warm-up" if repetition < warmup else f"rep {repetition - warmup + 1}/{repetitions}"
                progress(f"tinydb w9 {title}: {label}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return measurement


# --- the add-on's store at scale ---

JOURNALED = "journaled"
CRASH_SAFE = "crash-safe"
RAW_INSERT = "raw-tinydb"
#: The floor: appending a record-sized line to a file and fsyncing it, what any durable write costs here.
FSYNC_FLOOR = "append+fsync"
SCALE_VARIANTS = (JOURNALED, CRASH_SAFE, RAW_INSERT, FSYNC_FLOOR)
SCALE_SIZES = (100, 1_000, 20_000, 100_000)


@dataclass(slots=True)
class ScalePoint:
    """What one store size measured: per variant the seconds of each single add, then the journaled reads."""

    size: int
    adds: dict[str, list[float]] = field(default_factory=dict[str, list[float]])
    get_seconds: list[float] = field(default_factory=list[float])
    first_list_seconds: float = 0.0
    list_seconds: list[float] = field(default_factory=list[float])
    open_seconds: list[float] = field(default_factory=list[float])
    close_seconds: float = 0.0
    #: Single adds timed while a compaction of the whole store ran in the background.
    during_compaction: list[float] = field(default_factory=list[float])
    compaction_seconds: float = 0.0
    journaled_file_bytes: int = 0
    raw_file_bytes: int = 0

    def percentile(self, variant: str, fraction: float) -> float:
        """The ``fraction`` quantile (0.5, 0.99) of one add's seconds for ``variant``."""
        return _quantile(self.adds[variant], fraction)

    def summary(self) -> dict[str, object]:
        """Medians and quantiles, JSON-ready (the raw samples are in :func:`dataclasses.asdict`)."""
        return {
            "size": self.size,
            "add_p50_ms": {v: self.percentile(v, 0.5) * 1e3 for v in self.adds},
            "add_p99_ms": {v: self.percentile(v, 0.99) * 1e3 for v in self.adds},
            "add_samples": {v: len(samples) for v, samples in self.adds.items()},
            "get_execution_median_ms": statistics.median(self.get_seconds) * 1e3,
            "list_executions_first_ms": self.first_list_seconds * 1e3,
            "list_executions_median_ms": statistics.median(self.list_seconds) * 1e3,
            "open_median_s": statistics.median(self.open_seconds),
            "close_s": self.close_seconds,
            "add_during_compaction_p50_ms": _quantile(self.during_compaction, 0.5) * 1e3,
            "add_during_compaction_max_ms": max(self.during_compaction) * 1e3,
            "compaction_s": self.compaction_seconds,
            "journaled_file_bytes": self.journaled_file_bytes,
            "raw_file_bytes": self.raw_file_bytes,
        }


def _quantile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _base_store(path: Path, records: Sequence[TaskExecution]) -> None:
    """A store of ``records`` as raw TinyDB writes it (JSONStorage's own json.dumps)."""
    table = {str(n): execution_to_doc(record) for n, record in enumerate(records, start=1)}
    path.write_text(json.dumps({"executions": table}), encoding="utf-8")


def _time_each(add: Callable[[TaskExecution], None], records: Sequence[TaskExecution]) -> list[float]:
    seconds: list[float] = []
    gc.collect()
    for record in records:
        start = time.perf_counter()
        add(record)
        seconds.append(time.perf_counter() - start)
    return seconds


def _adds_journaled(path: Path, records: Sequence[TaskExecution], point: ScalePoint) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        repo.get_execution(records[0].occurrence_id)
        point.adds[JOURNALED] = _time_each(repo.add_execution, records)


def _adds_crash_safe(path: Path, records: Sequence[TaskExecution], point: ScalePoint) -> None:
    with TinyDB(path, storage=CrashSafeJSONStorage) as db:
        repo = TinyDbExecutionRepository(db)
        point.adds[CRASH_SAFE] = _time_each(repo.add_execution, records)


def _adds_raw(path: Path, records: Sequence[TaskExecution], point: ScalePoint) -> None:
    with TinyDB(path) as db:
        table = db.table("executions")
        point.adds[RAW_INSERT] = _time_each(lambda record: table.insert(raw_doc(record)), records)


def _appends(path: Path, records: Sequence[TaskExecution], point: ScalePoint) -> None:
    fd = os.open(path.with_suffix(".floor"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:

        def append(record: TaskExecution) -> None:
            os.write(fd, json.dumps(raw_doc(record)).encode() + b"\n")
            os.fsync(fd)

        point.adds[FSYNC_FLOOR] = _time_each(append, records)
    finally:
        os.close(fd)


SCALE_ADDS = {
    JOURNALED: _adds_journaled,
    CRASH_SAFE: _adds_crash_safe,
    RAW_INSERT: _adds_raw,
    FSYNC_FLOOR: _appends,
}


def _journaled_reads(path: Path, size: int, point: ScalePoint, rng: random.Random) -> None:
    for _ in range(3):
        start = time.perf_counter()
        db = TinyDB(path, storage=JournaledStorage)
        repo = TinyDbExecutionRepository(db)
        repo.get_execution("occ-000000")
        point.open_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        listed = repo.list_executions()
        first = time.perf_counter() - start
        point.first_list_seconds = max(point.first_list_seconds, first)
        assert len(listed) >= size
        del listed
        for _ in range(5):
            gc.collect()
            start = time.perf_counter()
            repo.list_executions()
            point.list_seconds.append(time.perf_counter() - start)
        keys = [f"occ-{rng.randrange(size):06d}" for _ in range(2_000)]
        for key in keys:
            start = time.perf_counter()
            repo.get_execution(key)
            point.get_seconds.append(time.perf_counter() - start)
        db.close()


def _adds_during_compaction(path: Path, records: Sequence[TaskExecution], point: ScalePoint) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        storage = db.storage
        assert isinstance(storage, JournaledStorage)
        repo.get_execution("occ-000000")
        gc.collect()
        start = time.perf_counter()
        storage.compact(background=True)
        for record in records:
            begun = time.perf_counter()
            repo.add_execution(record)
            point.during_compaction.append(time.perf_counter() - begun)
        storage.compact()  # waits for the background one, then folds what was written meanwhile
        point.compaction_seconds = time.perf_counter() - start


def run_tinydb_scale(
    sizes: Sequence[int] = SCALE_SIZES,
    *,
    adds: int = 1_000,
    baseline_budget: float = 40.0,
    workdir: str | None = None,
    progress: Progress | None = None,
) -> list[ScalePoint]:
    """Time single adds into stores of each size: journaled, crash-safe and raw TinyDB, from copies of one file.

    Args:
        sizes: Records already in the store.
        adds: Adds timed on the journaled store (and at most this many on the baselines).
        baseline_budget: Roughly how many seconds each baseline may spend per size: they cost O(size) per
            add, so at 100 000 records they are timed on fewer adds (never fewer than 20).
        workdir: Where the temporary stores go (a fresh temporary folder by default).
        progress: Called with a line after each step.
    """
    rng = random.Random(19)
    points: list[ScalePoint] = []
    folder = Path(tempfile.mkdtemp(prefix="planflow-bench-tinydb-scale-", dir=workdir))
    try:
        for turn, size in enumerate(sizes):
            records = data.executions(size + adds)
            base = folder / "base.json"
            _base_store(base, records[:size])
            point = ScalePoint(size)
            # A rough cost of one baseline add at this size: about 4 µs per stored record (issue 19's figures).
            estimate = max(0.001, 4e-6 * size)
            baseline_adds = max(20, min(adds, int(baseline_budget / estimate)))
            for variant in rotated(SCALE_VARIANTS, turn):
                path = folder / f"{variant}.json"
                shutil.copyfile(base, path)
                count = adds if variant in (JOURNALED, FSYNC_FLOOR) else baseline_adds
                SCALE_ADDS[variant](path, records[size : size + count], point)
                if progress is not None:
                    progress(f"tinydb scale {size:,}: {variant} ({count} adds)")
            journaled = folder / f"{JOURNALED}.json"
            _journaled_reads(journaled, size, point, rng)
            _adds_during_compaction(journaled, records[size : size + adds], point)
            with TinyDB(journaled, storage=JournaledStorage) as db:
                TinyDbExecutionRepository(db).add_execution(records[-1])
                start = time.perf_counter()
            point.close_seconds = time.perf_counter() - start
            point.journaled_file_bytes = journaled.stat().st_size
            raw = folder / "raw-same-data.json"
            with TinyDB(raw, storage=JSONStorage) as plain:
                plain.storage.write(json.loads(journaled.read_bytes()))
            point.raw_file_bytes = raw.stat().st_size
            points.append(point)
            if progress is not None:
                progress(f"tinydb scale {size:,}: reads and file size")
            for leftover in folder.iterdir():
                leftover.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return points


# --- the first write after opening ---

FIRST_WRITE_SIZE = 20_000


@dataclass(slots=True)
class FirstWritePoint:
    """One store size: per round the seconds to open, of the first add, and of each later add."""

    size: int
    open_seconds: list[float] = field(default_factory=list[float])
    first_seconds: list[float] = field(default_factory=list[float])
    later_seconds: list[float] = field(default_factory=list[float])
    #: The floor, the same way: a record-sized append+fsync to a new file after parsing the store, then more.
    floor_first_seconds: list[float] = field(default_factory=list[float])
    floor_later_seconds: list[float] = field(default_factory=list[float])

    def summary(self) -> dict[str, object]:
        """Medians and quantiles in milliseconds, JSON-ready."""
        later_p50 = _quantile(self.later_seconds, 0.5)
        return {
            "size": self.size,
            "rounds": len(self.first_seconds),
            "open_median_ms": statistics.median(self.open_seconds) * 1e3,
            "first_add_median_ms": statistics.median(self.first_seconds) * 1e3,
            "first_add_max_ms": max(self.first_seconds) * 1e3,
            "later_add_p50_ms": later_p50 * 1e3,
            "later_add_p99_ms": _quantile(self.later_seconds, 0.99) * 1e3,
            "first_over_later_p50": statistics.median(self.first_seconds) / later_p50,
            "floor_first_median_ms": statistics.median(self.floor_first_seconds) * 1e3,
            "floor_later_p50_ms": _quantile(self.floor_later_seconds, 0.5) * 1e3,
        }


def run_first_write(
    sizes: Sequence[int] = (FIRST_WRITE_SIZE,),
    *,
    rounds: int = 5,
    later: int = 200,
    workdir: str | None = None,
    progress: Progress | None = None,
) -> list[FirstWritePoint]:
    """Open a store of each size, time the first ``add_execution`` and ``later`` more; ``rounds`` times.

    Each round opens a fresh copy of one file written as raw TinyDB writes it, so no round profits from the
    previous one's compaction.
    """
    points: list[FirstWritePoint] = []
    folder = Path(tempfile.mkdtemp(prefix="planflow-bench-tinydb-first-", dir=workdir))
    try:
        for size in sizes:
            records = data.executions(size + 1 + later)
            base = folder / "base.json"
            _base_store(base, records[:size])
            point = FirstWritePoint(size)
            for turn in range(rounds):
                path = folder / f"store-{turn}.json"
                shutil.copyfile(base, path)
                gc.collect()
                start = time.perf_counter()
                db = TinyDB(path, storage=JournaledStorage)
                repo = TinyDbExecutionRepository(db)
                point.open_seconds.append(time.perf_counter() - start)
                try:
                    start = time.perf_counter()
                    repo.add_execution(records[size])
                    point.first_seconds.append(time.perf_counter() - start)
                    for record in records[size + 1 :]:
                        start = time.perf_counter()
                        repo.add_execution(record)
                        point.later_seconds.append(time.perf_counter() - start)
                finally:
                    db.close()
                _floor(base, path.with_suffix(".floor"), records[size:], point)
                for leftover in folder.iterdir():
                    if leftover != base:
                        leftover.unlink()
                if progress is not None:
                    progress(f"tinydb first write {size:,}: round {turn + 1}/{rounds}")
            base.unlink()
            points.append(point)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return points


def _floor(base: Path, path: Path, records: Sequence[TaskExecution], point: FirstWritePoint) -> None:
    """Append+fsync record-sized lines to a new file, the first right after parsing the store as an open does.

    The first fsync after the disk sat idle (as it does while an open parses the store) costs more on some
    machines than the ones that follow it, whoever writes: this is that floor for the first and later adds.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        json.loads(base.read_bytes())
        for n, record in enumerate(records):
            line = json.dumps(raw_doc(record)).encode() + b"\n"
            start = time.perf_counter()
            os.write(fd, line)
            os.fsync(fd)
            (point.floor_later_seconds if n else point.floor_first_seconds).append(
                time.perf_counter() - start
            )
    finally:
        os.close(fd)


def first_write_table(points: Sequence[FirstWritePoint]) -> str:
    """The first-write run as a Markdown table."""
    lines = [
        "| records | open (median) | first add after open (median / max) | later adds p50 / p99 | first / later p50 "
        "| append+fsync floor: first / later p50 |",
        "|---|---|---|---|---|---|",
    ]
    for p in points:
        summary = p.summary()
        lines.append(
            f"| {p.size:,} | {summary['open_median_ms']:.1f} ms "
            f"| {summary['first_add_median_ms']:.2f} / {summary['first_add_max_ms']:.2f} ms "
            f"| {summary['later_add_p50_ms']:.2f} / {summary['later_add_p99_ms']:.2f} ms "
            f"| {summary['first_over_later_p50']:.1f}x "
            f"| {summary['floor_first_median_ms']:.2f} / {summary['floor_later_p50_ms']:.2f} ms |"
        )
    return "\n".join(lines)


def scale_table(points: Sequence[ScalePoint]) -> str:
    """The scale run as a Markdown table."""
    lines = [
        "| records | journaled p50 / p99 | crash-safe p50 / p99 | raw TinyDB p50 / p99 | append+fsync p50 / p99 "
        "| raw/journaled (p50) "
        "| get_execution | list_executions first / next | open | close | adds during a compaction p50 / max "
        "| file / raw file |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        cells = [f"{p.size:,}"]
        for variant in SCALE_VARIANTS:
            cells.append(
                f"{p.percentile(variant, 0.5) * 1e3:.2f} / {p.percentile(variant, 0.99) * 1e3:.2f} ms "
                f"(n={len(p.adds[variant])})"
            )
        cells.append(f"{p.percentile(RAW_INSERT, 0.5) / p.percentile(JOURNALED, 0.5):.0f}x")
        cells.append(f"{statistics.median(p.get_seconds) * 1e6:.1f} µs")
        cells.append(f"{p.first_list_seconds * 1e3:.0f} / {statistics.median(p.list_seconds) * 1e3:.1f} ms")
        cells.append(f"{statistics.median(p.open_seconds):.3f} s")
        cells.append(f"{p.close_seconds:.3f} s")
        cells.append(
            f"{_quantile(p.during_compaction, 0.5) * 1e3:.2f} / {max(p.during_compaction) * 1e3:.1f} ms "
            f"(n={len(p.during_compaction)}, {p.compaction_seconds:.2f} s)"
        )
        cells.append(f"{p.journaled_file_bytes:,} / {p.raw_file_bytes:,} B")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.tinydb_bench [--sizes 100,1000] [--adds N] [--json FILE] [--first-write]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--sizes", help=f"store sizes, comma-separated (default {SCALE_SIZES}; first write: 20000)"
    )
    parser.add_argument("--adds", type=int, default=1_000, help="adds timed on the journaled store")
    parser.add_argument("--baseline-budget", type=float, default=40.0, help="seconds per baseline and size")
    parser.add_argument(
        "--first-write",
        action="store_true",
        help="only time the first add after opening against the later ones (with --rounds)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="first write: stores opened per size")
    parser.add_argument("--json", help="write the results (with raw samples) to this file")
    parser.add_argument("--workdir", help="folder for the temporary stores")
    args = parser.parse_args(argv)
    if args.first_write:
        sizes = [int(size) for size in args.sizes.split(",")] if args.sizes else [FIRST_WRITE_SIZE]
        first = run_first_write(sizes, rounds=args.rounds, workdir=args.workdir, progress=_print)
        print(first_write_table(first))
        if args.json:
            Path(args.json).write_text(
                json.dumps([{"summary": p.summary(), "samples": asdict(p)} for p in first], indent=1),
                encoding="utf-8",
            )
        return 0
    sizes = [int(size) for size in args.sizes.split(",")] if args.sizes else list(SCALE_SIZES)
    points = run_tinydb_scale(
        sizes,
        adds=args.adds,
        baseline_budget=args.baseline_budget,
        workdir=args.workdir,
        progress=_print,
    )
    print(scale_table(points))
    if args.json:
        Path(args.json).write_text(
            json.dumps([{"summary": p.summary(), "samples": asdict(p)} for p in points], indent=1),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
