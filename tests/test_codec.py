"""Row mapping helpers shared by the SQL drivers."""

from __future__ import annotations

import gc

import pytest

from planflow.infra.sql.codec import GC_PAUSE_ROWS, map_rows


def test_map_rows_pauses_the_collector_for_large_results_and_restores_it() -> None:
    seen: list[bool] = []
    rows = [(i,) for i in range(GC_PAUSE_ROWS)]
    assert map_rows(rows, lambda row: seen.append(gc.isenabled()) or row[0]) == list(range(GC_PAUSE_ROWS))
    assert not any(seen)
    assert gc.isenabled()
    seen.clear()
    map_rows(rows[:10], lambda row: seen.append(gc.isenabled()))
    assert all(seen)


def test_map_rows_reenables_the_collector_when_mapping_fails() -> None:
    def boom(row: tuple[int]) -> int:
        raise ValueError(f"bad row {row}")

    with pytest.raises(ValueError, match="bad row"):
        map_rows([(i,) for i in range(GC_PAUSE_ROWS)], boom)
    assert gc.isenabled()


def test_map_rows_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        map_rows([(i,) for i in range(GC_PAUSE_ROWS)], lambda row: row)
        assert not gc.isenabled()
    finally:
        gc.enable()
