"""What observability costs (issue 18): 10 000 ``get_state`` and 10 000 ``update_state`` on SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.observability_bench [--quick] [--driver sqlite|postgres|all] [--baseline REF]

Variants, interleaved round by round on one database (the ratio is of the median round times):

- ``raw``: the hand-written store of the benchmark suite (``benchmarks/stores``), the floor;
- ``planflow``: nothing enabled (no listener, no telemetry, logging below DEBUG): planflow/raw must stay where
  it was before this issue, within noise;
- ``listener``: one listener counting events: target <= 1.10x of ``planflow``;
- ``otel``: ``telemetry=True`` with the OpenTelemetry SDK, a ``BatchSpanProcessor`` over an exporter that
  drops the spans, and a ``MeterProvider`` with an in-memory reader: target <= 1.25x of ``planflow``. The round
  ends once planflow's worker thread has handed every event to the SDK, so the SDK's work is counted in full
  (in a program whose calls wait for the database, much of it overlaps those waits).
- ``floor``: the hand-written store with the SDK's own work for each call done inline, as a bare loop would:
  one CLIENT span with the same attributes (started and ended with the call's times) and one histogram point.
  ``otel/floor`` is planflow's share of a traced call beyond what the SDK itself costs (issue 26: target
  <= 1.15).

``--baseline REF`` (default: the commit this branch forked from, ``git merge-base HEAD main``) measures the same
raw and planflow variants in a subprocess running REF's ``planflow`` (exported with ``git archive`` to a
temporary folder), so that "stays where it was" is a ratio measured in the same run; ``--baseline none`` skips
it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from io import BytesIO
from pathlib import Path
from time import time_ns
from typing import Any, Protocol

from benchmarks.compare import Result, interleave, postgres_schema, sqlite_file, us
from benchmarks.stores.raw_postgres import RawPostgresStore
from benchmarks.stores.raw_sqlite import RawSqliteStore
from planflow import Provider, TaskState, WorkflowState, open_provider

ROOT = Path(__file__).resolve().parents[1]
TASKS = 1_000
TARGET_LISTENER = 1.10
TARGET_OTEL = 1.25
TARGET_OTEL_FLOOR = 1.15


class Store(Protocol):
    def get_state(self, task_exec_id: str) -> TaskState: ...
    def update_state(self, state: TaskState, expected_version: int) -> TaskState: ...


def install_sdk() -> None:
    """The OpenTelemetry SDK as an application would set it up, exporting nowhere."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropping(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Dropping()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


class SdkFloor:
    """The raw store, each call reported to the OpenTelemetry SDK inline: one span and one histogram point with
    the attributes planflow gives them, made with the call's own start and end times (the SDK's floor)."""

    def __init__(self, raw: Store, driver: str) -> None:
        from opentelemetry import metrics, trace
        from opentelemetry.trace import SpanKind

        self._raw = raw
        self._kind = SpanKind.CLIENT
        self._tracer = trace.get_tracer("sdk-floor")
        self._histogram = metrics.get_meter("sdk-floor").create_histogram("sdk.floor.duration", unit="s")
        system = {"sqlite": "sqlite", "postgres": "postgresql"}[driver]
        self._attributes = {
            method: {
                "db.system.name": system,
                "db.namespace": "bench",
                "db.operation.name": method,
                "db.collection.name": "task_states",
            }
            for method in ("get_state", "update_state")
        }

    def _report(self, method: str, start: int) -> None:
        end = time_ns()
        attributes = self._attributes[method]
        span = self._tracer.start_span(
            f"{method} task_states", kind=self._kind, attributes=attributes, start_time=start
        )
        span.end(end_time=end)
        self._histogram.record((end - start) / 1e9, attributes)

    def get_state(self, task_exec_id: str) -> TaskState:
        start = time_ns()
        found = self._raw.get_state(task_exec_id)
        self._report("get_state", start)
        return found

    def update_state(self, state: TaskState, expected_version: int) -> TaskState:
        start = time_ns()
        written = self._raw.update_state(state, expected_version)
        self._report("update_state", start)
        return written


@contextmanager
def database(driver: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    """A fresh database's URL, and a factory of the hand-written store on it."""
    if driver == "sqlite":
        with sqlite_file() as path:
            yield f"sqlite:///{path}", lambda: RawSqliteStore(path)
    else:
        with postgres_schema() as url:
            head, _, schema = url.rpartition("options=-csearch_path%3D")
            base = head[:-1]  # without the "?" or "&" before the options
            yield url, lambda: RawPostgresStore(base, schema)


def workloads(
    stores: dict[str, Store],
    ids: list[str],
    operations: int,
    rounds: int,
    after: dict[str, Callable[[], object]],
) -> dict[str, Result]:
    """Median rounds of ``operations`` reads and ``operations`` versioned writes per store; ``after[name]``
    runs inside the timed round, after the calls (telemetry: until the worker has reported them all)."""
    rng = random.Random(18)
    current: dict[str, TaskState] = {}
    first: Store = next(iter(stores.values()))
    for task_exec_id in ids:
        current[task_exec_id] = first.get_state(task_exec_id)
    picks = [rng.choice(ids) for _ in range(operations)]

    def reads(store: Store, finish: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            get = store.get_state
            for task_exec_id in picks:
                get(task_exec_id)
            finish()

        return run

    def writes(store: Store, finish: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            update = store.update_state
            for task_exec_id in picks:
                state = current[task_exec_id]
                current[task_exec_id] = update(state.evolve(output={"n": state.version}), state.version)
            finish()

        return run

    def nothing() -> None:
        pass

    return {
        "get_state": interleave(
            {name: reads(s, after.get(name, nothing)) for name, s in stores.items()}, rounds=rounds
        ),
        "update_state": interleave(
            {name: writes(s, after.get(name, nothing)) for name, s in stores.items()}, rounds=rounds
        ),
    }


def fill(provider: Provider) -> list[str]:
    provider.workflows.upsert_state(WorkflowState("wf-obs", "observability-bench"))
    ids = [f"tx-obs-{i:05d}" for i in range(TASKS)]
    provider.tasks.bulk_upsert(
        TaskState(i, "t", "wf-obs", "observability-bench", input={"i": i}) for i in ids
    )
    return ids


def measure(
    driver: str, operations: int, rounds: int, variants: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Seconds per round (median) of every variant and workload."""
    events = [0]

    def counting(event: object) -> None:
        events[0] += 1

    with database(driver) as (url, raw_store), ExitStack() as stack:
        plain = stack.enter_context(open_provider(url))
        ids = fill(plain)
        stores: dict[str, Store] = {}
        after: dict[str, Callable[[], object]] = {}
        raw = raw_store()
        stack.callback(raw.close)
        for variant in variants:
            if variant == "raw":
                stores["raw"] = raw
            elif variant == "floor":
                stores["floor"] = SdkFloor(raw, driver)
            elif variant == "planflow":
                stores["planflow"] = plain.tasks
            elif variant == "listener":
                stores["listener"] = stack.enter_context(open_provider(url, listeners=[counting])).tasks
            elif variant == "otel":
                from planflow.infra.otel import flush

                stores["otel"] = stack.enter_context(open_provider(url, telemetry=True)).tasks
                # The SDK's work, done on planflow's worker thread, is counted in the round: the cost in full,
                # and none of it left to slow the next variant down.
                after["otel"] = lambda: flush(60)
        results = workloads(stores, ids, operations, rounds, after)
    return {work: {name: result.median(name) for name in variants} for work, result in results.items()}


def baseline(ref: str, driver: str, operations: int, rounds: int) -> dict[str, dict[str, float]] | None:
    """:func:`measure` of raw and planflow, in a subprocess running ``ref``'s planflow."""
    if ref == "none":
        return None
    if ref == "merge-base":
        found = subprocess.run(
            ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
            capture_output=True,
            text=True,
            check=False,
        )
        if found.returncode != 0:
            print(f"  (no baseline: {found.stderr.strip() or 'no main branch'})")
            return None
        ref = found.stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "planflow", "migrations"],
        capture_output=True,
        check=True,
    )
    with tempfile.TemporaryDirectory(prefix="pfbench-baseline-") as folder:
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(folder, filter="data")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([folder, str(ROOT)])}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.observability_bench",
                "--driver",
                driver,
                "--operations",
                str(operations),
                "--rounds",
                str(rounds),
                "--child",
            ],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    measured: dict[str, dict[str, float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return measured


def report(
    driver: str, medians: dict[str, dict[str, float]], before: dict[str, dict[str, float]] | None
) -> list[str]:
    """Print the ratios; return the targets missed."""
    missed: list[str] = []
    for work, times in medians.items():
        plain, raw = times["planflow"], times["raw"]
        line = f"{driver:8} {work:12} planflow/raw {plain / raw:.2f}"
        if before is not None:
            line += f" (before: {before[work]['planflow'] / before[work]['raw']:.2f})"
        listener, otel = times["listener"] / plain, times["otel"] / plain
        over_floor = times["otel"] / times["floor"]
        line += f", listener/planflow {listener:.2f}, otel/planflow {otel:.2f}, otel/floor {over_floor:.2f}"
        print(line)
        per = {name: us(t / OPERATIONS[0]) for name, t in times.items()}
        print(f"{'':8} {'':12} per call: " + ", ".join(f"{name} {value}" for name, value in per.items()))
        if listener > TARGET_LISTENER:
            missed.append(f"{driver} {work}: listener {listener:.2f} > {TARGET_LISTENER}")
        if otel > TARGET_OTEL:
            missed.append(f"{driver} {work}: otel {otel:.2f} > {TARGET_OTEL}")
        if over_floor > TARGET_OTEL_FLOOR:
            missed.append(f"{driver} {work}: otel/floor {over_floor:.2f} > {TARGET_OTEL_FLOOR}")
    return missed


OPERATIONS = [10_000]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 000 calls per round, 3 rounds")
    parser.add_argument("--driver", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--operations", type=int, default=None, help="calls per round (default 10 000)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per variant (default 7)")
    parser.add_argument("--baseline", default="merge-base", help="git ref to compare with, or 'none'")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    operations = args.operations or (2_000 if args.quick else 10_000)
    rounds = args.rounds or (3 if args.quick else 7)
    OPERATIONS[0] = operations
    drivers = ["sqlite", "postgres"] if args.driver == "all" else [args.driver]
    if args.child:  # the baseline's planflow: raw and planflow only, as JSON
        print(json.dumps(measure(drivers[0], operations, rounds, ["raw", "planflow"])))
        return
    install_sdk()
    print(f"{operations:,} get_state and {operations:,} update_state per round, {rounds} rounds (medians)")
    missed: list[str] = []
    for driver in drivers:
        before = baseline(args.baseline, driver, operations, rounds)
        medians = measure(driver, operations, rounds, ["raw", "floor", "planflow", "listener", "otel"])
        missed += report(driver, medians, before)
    if missed:
        print("targets missed: " + "; ".join(missed))
    else:
        print(
            f"targets met: listener <= {TARGET_LISTENER}x, otel <= {TARGET_OTEL}x of planflow, "
            f"otel <= {TARGET_OTEL_FLOOR}x of the floor"
        )


if __name__ == "__main__":
    main()
