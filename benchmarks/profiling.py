"""``--profile N``: one run of workload N under pyinstrument, to find where planflow's time goes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from benchmarks import tinydb_bench
from benchmarks.databases import PostgresFactory, SqliteFactory, postgres_problem
from benchmarks.stores.base import PLANFLOW
from benchmarks.workloads import main_workloads

if TYPE_CHECKING:
    from benchmarks.cli import Plan


def _write(profiler: object, out: Path, name: str, console: Console) -> None:
    from pyinstrument import Profiler

    assert isinstance(profiler, Profiler)
    out.mkdir(parents=True, exist_ok=True)
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    (out / f"{name}.txt").write_text(text, encoding="utf-8")
    (out / f"{name}.html").write_text(profiler.output_html(), encoding="utf-8")
    console.print(text, highlight=False, markup=False)
    console.print(f"Profile written to {out / name}.txt and .html")


def profile_workload(args: argparse.Namespace, plan: Plan, console: Console) -> int:
    """Profile one timed run (after a warm-up run) of workload ``args.profile`` for ``args.variant``."""
    from pyinstrument import Profiler

    number: int = args.profile
    variant: str = args.variant
    if number == 9:
        records = tinydb_bench.data.executions(plan.tinydb_count)
        folder = Path(args.out) / "tinydb-profile"
        folder.mkdir(parents=True, exist_ok=True)
        for name in (tinydb_bench.ONE_BY_ONE, tinydb_bench.BATCH, tinydb_bench.RAW):
            path = folder / f"{name}.json"
            path.unlink(missing_ok=True)
            run, db = tinydb_bench.PREPARE[name](path, records)
            profiler = Profiler(interval=0.0005)
            profiler.start()
            run()
            profiler.stop()
            db.close()
            path.unlink()
            _write(profiler, Path(args.out), f"profile-w9-{name}", console)
        return 0
    specs = {
        s.number: s
        for s in main_workloads(plan.size, plan.paging_size, plan.threads, plan.per_thread, plan.page)
    }
    if number not in specs:
        raise SystemExit(f"--profile takes a workload number 1-7 or 9, not {number}")
    spec = specs[number]
    if args.driver == "postgres":
        problem = postgres_problem(args.postgres_url)
        if problem is not None:
            raise SystemExit(f"cannot profile on Postgres: {problem}")
        factory: SqliteFactory | PostgresFactory = PostgresFactory(args.postgres_url)
    else:
        factory = SqliteFactory(args.workdir)
    try:
        database = factory.create(f"profile-w{number}")
        workload = spec.make()
        with database.open_provider() as provider:
            workload.seed(provider)
        database.maintain()
        store = database.open_store(variant)
        try:
            workload.before(database)
            workload.run(store)  # warm-up
            workload.before(database)
            profiler = Profiler(interval=0.0005)
            profiler.start()
            workload.run(store)
            profiler.stop()
        finally:
            store.close()
            workload.close()
    finally:
        factory.close()
    _write(profiler, Path(args.out), f"profile-w{number}-{factory.driver}-{variant}", console)
    return 0


__all__ = ["PLANFLOW", "profile_workload"]
