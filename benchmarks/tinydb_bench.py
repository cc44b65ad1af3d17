"""Workload 9: TinyDB ``add_execution``, one by one and in one ``batch()``, against raw TinyDB.

planflow's variants use the add-on's setup, ``TinyDbExecutionRepository`` over ``CrashSafeJSONStorage``
(every write replaces the file atomically: temp file, fsync, rename, folder fsync). The raw variant is
TinyDB as it comes: ``TinyDB(path)`` with its default ``JSONStorage``, inserting the same documents into the
same table. Each run starts from a new, empty file.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tinydb import TinyDB

from benchmarks import data
from benchmarks.harness import Measurement, Progress, rotated, timed
from planflow import TaskExecution
from planflow.infra.tinydb import CrashSafeJSONStorage, TinyDbExecutionRepository

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
    db = TinyDB(path, storage=CrashSafeJSONStorage)
    repository = TinyDbExecutionRepository(db)

    def run() -> None:
        for record in records:
            repository.add_execution(record)

    return run, db


def _batch(path: Path, records: list[TaskExecution]) -> tuple[Callable[[], None], TinyDB]:
    db = TinyDB(path, storage=CrashSafeJSONStorage)
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
                path.unlink()
                if repetition >= warmup:
                    measurement.samples[variant].append(seconds)
            if progress is not None:
                label = "warm-up" if repetition < warmup else f"rep {repetition - warmup + 1}/{repetitions}"
                progress(f"tinydb w9 {title}: {label}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return measurement
