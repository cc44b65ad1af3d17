"""``python -m benchmarks``: run the suite, print the tables, write the JSON results and the scaling chart."""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from rich.console import Console

from benchmarks.databases import (
    DEFAULT_POSTGRES_URL,
    DatabaseFactory,
    PostgresFactory,
    SqliteFactory,
    postgres_problem,
)
from benchmarks.harness import Extra, Measurement, Schedule, run_sql_group
from benchmarks.report import draw_scaling_chart, print_report, write_json
from benchmarks.stores.base import IMPLEMENTATIONS
from benchmarks.tinydb_bench import run_tinydb_workload
from benchmarks.workloads import WorkloadSpec, main_workloads, scaling_workloads
from planflow import redact_url

URL_VARIABLES = ("PLANFLOW_BENCH_POSTGRES_URL", "PLANFLOW_TEST_POSTGRES_URL")


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes and repetition counts of a run."""

    size: int
    paging_size: int
    threads: int
    per_thread: int
    scaling_sizes: tuple[int, ...]
    tinydb_count: int
    repetitions: int
    warmup: int
    #: Fewer repetitions for scaling points at or above this many rows (they take longest).
    large: int
    large_repetitions: int
    tinydb_repetitions: int
    #: Extra rounds for cheap workloads (see :class:`Extra`).
    extra: Extra
    #: Page size of the paging workloads.
    page: int = 500


FULL = Plan(10_000, 50_000, 8, 1_000, (1_000, 10_000, 100_000), 2_000, 5, 1, 100_000, 3, 3, Extra(15, 20.0))
QUICK = Plan(1_000, 5_000, 8, 100, (300, 3_000), 400, 3, 1, 3_000, 3, 3, Extra(7, 1.0))
#: Tiny sizes and one round: proves that everything runs (the smoke test); its timings mean nothing.
SMOKE = Plan(20, 60, 2, 5, (10, 100), 10, 1, 0, 100, 1, 1, Extra(1, 0.0), page=7)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="planflow against raw driver code and SQLAlchemy 2.0 ORM (issue 6), interleaved, medians.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes, 3 repetitions: under two minutes")
    size.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one repetition: only checks that all runs"
    )
    parser.add_argument("--driver", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results"), help="folder for JSON and PNG"
    )
    parser.add_argument(
        "--postgres-url",
        default=next((os.environ[v] for v in URL_VARIABLES if os.environ.get(v)), DEFAULT_POSTGRES_URL),
        help=f"server for the Postgres runs (default: ${URL_VARIABLES[0]}, ${URL_VARIABLES[1]}, "
        f"else {DEFAULT_POSTGRES_URL}); each run works in schemas of its own and drops them",
    )
    parser.add_argument(
        "--workloads",
        default="1,2,3,4,5,6,7,8,9",
        help="comma-separated workload numbers to run (default: all, 1-9)",
    )
    parser.add_argument("--repetitions", type=int, help="timed repetitions per workload (overrides the plan)")
    parser.add_argument(
        "--workdir", help="where the SQLite and TinyDB files go (default: the system temp dir)"
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        help="instead of benchmarking, profile planflow on workload N with pyinstrument (text and HTML to --out)",
    )
    parser.add_argument(
        "--variant",
        choices=IMPLEMENTATIONS,
        default=IMPLEMENTATIONS[0],
        help="with --profile: which implementation to profile (default: planflow)",
    )
    return parser.parse_args(argv)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def _postgres_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def _factories(args: argparse.Namespace, console: Console) -> list[DatabaseFactory]:
    factories: list[DatabaseFactory] = []
    if args.driver in ("sqlite", "all"):
        factories.append(SqliteFactory(args.workdir))
    if args.driver in ("postgres", "all"):
        problem = postgres_problem(args.postgres_url)
        if problem is None:
            factories.append(PostgresFactory(args.postgres_url))
        elif args.driver == "postgres":
            raise SystemExit(f"cannot run the Postgres benchmarks: {redact_url(problem)}")
        else:
            console.print(f"[yellow]Skipping Postgres: {redact_url(problem)}[/yellow]")
    return factories


def _groups(
    plan: Plan, chosen: set[int], args: argparse.Namespace
) -> list[list[tuple[WorkloadSpec, Schedule]]]:
    """Workloads to run together: each of 1-7 alone; the sizes of each scaled workload interleaved."""
    repetitions = args.repetitions or plan.repetitions
    extra = None if args.repetitions else plan.extra
    usual = Schedule(repetitions, plan.warmup, extra)
    # The largest scaling points take longest, and are warm after their first seconds anyway.
    largest = usual if args.repetitions else Schedule(plan.large_repetitions, 0, None)
    groups: list[list[tuple[WorkloadSpec, Schedule]]] = [
        [(spec, usual)]
        for spec in main_workloads(plan.size, plan.paging_size, plan.threads, plan.per_thread, plan.page)
        if spec.number in chosen
    ]
    if 8 in chosen:
        scaled: dict[str, list[tuple[WorkloadSpec, Schedule]]] = {}
        for spec in scaling_workloads(list(plan.scaling_sizes), plan.page):
            schedule = largest if spec.size >= plan.large else usual
            scaled.setdefault(spec.group, []).append((spec, schedule))
        groups += scaled.values()
    return groups


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the benchmarks the arguments ask for; returns the exit status."""
    plan = SMOKE if args.smoke else QUICK if args.quick else FULL
    chosen = {int(part) for part in args.workloads.split(",") if part.strip()}
    if args.profile is not None:
        from benchmarks.profiling import profile_workload

        return profile_workload(args, plan, console)
    started, commit = time.perf_counter(), _git_commit()
    progress_console = Console(stderr=True)

    def progress(line: str) -> None:
        progress_console.print(f"[dim]{time.perf_counter() - started:7.1f}s[/dim] {line}", highlight=False)

    factories = _factories(args, console)
    measurements: list[Measurement] = []
    try:
        for factory in factories:
            for group in _groups(plan, chosen, args):
                measurements += run_sql_group(
                    factory, group, implementations=IMPLEMENTATIONS, progress=progress
                )
        if 9 in chosen:
            reps = args.repetitions or plan.tinydb_repetitions
            measurements.append(
                run_tinydb_workload(
                    plan.tinydb_count, repetitions=reps, warmup=0, workdir=args.workdir, progress=progress
                )
            )
    finally:
        for factory in factories:
            factory.close()
    elapsed = time.perf_counter() - started
    print_report(console, measurements)
    args.out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, object] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(elapsed, 1),
        "quick": args.quick,
        "smoke": args.smoke,
        "plan": asdict(plan),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "packages": {p: _version(p) for p in ("planflow", "sqlalchemy", "psycopg", "psycopg-pool", "tinydb")},
        "git_commit": commit,
    }
    if any(f.driver == "postgres" for f in factories):
        meta["postgres"] = _postgres_version(args.postgres_url)
    results = args.out / "results.json"
    write_json(results, measurements, meta)
    chart = args.out / "scaling.png"
    drawn = draw_scaling_chart(chart, measurements)
    console.print(f"Results: {results}" + (f"; chart: {chart}" if drawn else "") + f"; took {elapsed:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``."""
    args = parse_args(argv)
    # Wide enough for the tables when the output is a file or a pipe (rich assumes 80 columns there).
    console = Console(width=None if sys.stdout.isatty() else 180)
    return run(args, console)
