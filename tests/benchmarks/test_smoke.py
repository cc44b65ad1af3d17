"""Smoke test of the benchmark suite: every workload runs at a tiny size for every implementation.

No timing is asserted (timings of tiny runs on a shared machine mean nothing); what is proved is that each
workload produces a result row for each implementation, that the three implementations return the same
objects from the same database (so the comparison is fair), and that the command writes its JSON and chart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from benchmarks import copy_memory, data, tinydb_bench
from benchmarks.cli import main
from benchmarks.databases import BenchDatabase, DatabaseFactory, PostgresFactory, SqliteFactory
from benchmarks.harness import run_sql_workload
from benchmarks.stores.base import IMPLEMENTATIONS, PLANFLOW, TaskStore
from benchmarks.tinydb_bench import SCALE_VARIANTS, VARIANTS, run_tinydb_scale, run_tinydb_workload
from benchmarks.workloads import WorkloadSpec, main_workloads, scaling_workloads
from planflow import ConflictError, Provider, TaskState

TINY_SPECS = [
    *main_workloads(20, 60, threads=2, per_thread=5, page=7),
    *(s for s in scaling_workloads([30], page=7)),
]
DRIVERS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DRIVERS)
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseFactory]:
    """A factory of fresh benchmark databases of each driver (Postgres: schemas on the test server)."""
    made: DatabaseFactory
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_server_url")
        made = PostgresFactory(url)
    else:
        made = SqliteFactory(str(tmp_path))
    yield made
    made.close()


def _spec_id(spec: WorkloadSpec) -> str:
    return f"w{spec.number}-{spec.key}"


@pytest.mark.parametrize("spec", TINY_SPECS, ids=_spec_id)
def test_workload_produces_a_result_row_for_each_implementation(
    factory: DatabaseFactory, spec: WorkloadSpec
) -> None:
    measurement = run_sql_workload(factory, spec, implementations=IMPLEMENTATIONS, repetitions=1, warmup=0)

    assert set(measurement.samples) == set(IMPLEMENTATIONS)
    assert all(len(samples) == 1 and samples[0] > 0 for samples in measurement.samples.values())
    assert set(measurement.operations.values()) == {spec.size}
    assert measurement.ratio("sqlalchemy", PLANFLOW) > 0


def test_tinydb_workload_produces_a_result_row_for_each_variant(tmp_path: Path) -> None:
    measurement = run_tinydb_workload(15, repetitions=1, warmup=0, workdir=str(tmp_path))

    assert set(measurement.samples) == set(VARIANTS)
    assert all(len(samples) == 1 for samples in measurement.samples.values())


def test_tinydb_scale_run_measures_every_variant_and_the_journaled_reads(tmp_path: Path) -> None:
    points = run_tinydb_scale((5, 30), adds=6, baseline_budget=1.0, workdir=str(tmp_path))

    assert [p.size for p in points] == [5, 30]
    for point in points:
        assert set(point.adds) == set(SCALE_VARIANTS)
        assert all(len(samples) == 6 for samples in point.adds.values())
        assert point.percentile(SCALE_VARIANTS[0], 0.99) >= point.percentile(SCALE_VARIANTS[0], 0.5) > 0
        assert len(point.get_seconds) > 0 and len(point.list_seconds) > 0 and point.open_seconds
        assert 0 < point.journaled_file_bytes <= point.raw_file_bytes
        assert point.summary()["size"] == point.size
    assert list(tmp_path.iterdir()) == []


def test_tinydb_scale_command_prints_a_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scale.json"
    assert (
        tinydb_bench.main(["--sizes", "8", "--adds", "3", "--baseline-budget", "1", "--json", str(out)]) == 0
    )

    assert "| 8 |" in capsys.readouterr().out
    assert out.exists()


def test_tinydb_first_write_run_times_the_first_and_the_later_adds_after_opening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [point] = tinydb_bench.run_first_write((40,), rounds=2, later=3, workdir=str(tmp_path))

    assert point.size == 40
    assert len(point.open_seconds) == len(point.first_seconds) == 2
    assert len(point.later_seconds) == len(point.floor_later_seconds) == 6
    assert point.summary()["rounds"] == 2
    assert list(tmp_path.iterdir()) == []
    assert tinydb_bench.main(["--first-write", "--sizes", "30", "--rounds", "1"]) == 0
    assert "| 30 |" in capsys.readouterr().out


def _seed(provider: Provider) -> None:
    provider.workflows.upsert_state(data.workflow("wf"))
    provider.tasks.bulk_upsert(data.tree("tree", 25, "wf") + data.flat("flat", 30, "wf"))


def _all_pages(store: TaskStore) -> list[TaskState]:
    states: list[TaskState] = []
    cursor: object | None = None
    while True:
        items, cursor = store.list_page("wf", 7, cursor)
        states += items
        if cursor is None:
            return states


def _reads(store: TaskStore) -> dict[str, object]:
    ids = [data.task_id_for("flat", i) for i in (29, 3, 17, 8)] + ["missing"]
    return {
        "get": store.get_state(data.task_id_for("flat", 5)),
        "by_ids": store.list_by_ids(ids),
        "tree": store.get_task_tree(data.task_id_for("tree", 0)),
        "pages": _all_pages(store),
    }


def _without_stamps(state: TaskState, task_exec_id: str = "x") -> TaskState:
    return state.evolve(task_exec_id=task_exec_id, created_at=None, updated_at=None)


def test_implementations_return_identical_objects_from_one_database(factory: DatabaseFactory) -> None:
    database: BenchDatabase = factory.create("same-objects")
    with database.open_provider() as provider:
        _seed(provider)
    stores = {name: database.open_store(name) for name in IMPLEMENTATIONS}
    try:
        expected = _reads(stores[PLANFLOW])
        assert len(expected["pages"]) == 55  # type: ignore[arg-type]
        for name, store in stores.items():
            assert _reads(store) == expected, name

        written: dict[str, TaskState] = {}
        for offset, (name, store) in enumerate(stores.items()):
            target = data.task("flat", 10 + offset, "wf", round_=3)
            written[name] = store.update_state(target, 1)
            assert written[name] == stores[PLANFLOW].get_state(target.task_exec_id), name
            assert written[name].version == 2
            with pytest.raises(ConflictError):
                store.update_state(target, 1)
        shapes = {name: _without_stamps(s) for name, s in written.items()}
        assert shapes[PLANFLOW].status == data.task("flat", 10, "wf", round_=3).status
        assert len({s.task_id for s in shapes.values()}) == len(IMPLEMENTATIONS)  # one task each, all written

        for offset, (name, store) in enumerate(stores.items()):
            old, new = data.task("flat", 20 + offset, "wf", round_=5), data.task(f"new-{name}", 0, "wf")
            assert store.bulk_upsert([old, new]) == 2
            stored_old = stores[PLANFLOW].get_state(old.task_exec_id)
            stored_new = stores[PLANFLOW].get_state(new.task_exec_id)
            assert (stored_old.version, stored_new.version) == (2, 1), name
            assert _without_stamps(stored_old) == _without_stamps(old.evolve(version=2)), name
            assert _without_stamps(stored_new) == _without_stamps(new.evolve(version=1)), name
    finally:
        for store in stores.values():
            store.close()
        database.drop()


def test_command_writes_results_and_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"

    status = main(["--smoke", "--driver", "sqlite", "--out", str(out), "--workdir", str(tmp_path)])

    assert status == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    numbers = {m["number"] for m in results["measurements"]}
    assert numbers == {1, 2, 3, 4, 5, 6, 7, 8, 9}
    assert results["checks"] and results["growth"]
    assert (out / "scaling.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "planflow/raw" in printed and "sqlalchemy/planflow" in printed


def test_profile_option_writes_a_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pyinstrument")
    out = tmp_path / "out"

    status = main(
        ["--smoke", "--driver", "sqlite", "--profile", "2", "--out", str(out), "--workdir", str(tmp_path)]
    )

    assert status == 0
    assert (out / "profile-w2-sqlite-planflow.txt").read_text(encoding="utf-8")
    capsys.readouterr()


def test_copy_memory_measures_the_real_command_at_two_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = copy_memory.main(["--tasks", "2000", "--workdir", str(tmp_path)])

    assert status == 0
    printed = capsys.readouterr().out
    assert "floor: status" in printed
    assert "copy sqlite -> sqlite" in printed
    assert "2x the tasks: peak memory x" in printed
    assert not list(tmp_path.glob("planflow-bench-*/*.db")), "the stores must be removed afterwards"


_unused: Callable[[], None] | None = None
