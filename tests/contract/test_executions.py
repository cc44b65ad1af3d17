"""The ExecutionRepository contract, run unchanged on every driver that serves it (tests/contract/drivers.py).

The suite is handed an empty :class:`~planflow.executions.ExecutionRepository` as the ``executions`` fixture
(tests/contract/conftest.py) and uses nothing but the Protocol.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from planflow import ValidationError
from planflow.executions import (
    RetryPolicy,
    TaskDefinition,
    TaskEvent,
    TaskExecution,
)
from planflow.protocols import ExecutionRepository
from tests.contract.helpers import (
    AWARE,
    AWARE_INDIA,
    NAIVE,
    UNICODE_TITLE,
    a_task,
    an_execution,
    an_occurrence,
    assert_same_execution,
    assert_same_moment,
    assert_same_task,
)


class TestExecutionRepository:
    """Behaviour every ExecutionRepository must have."""

    suite = "executions"

    # Round trips ---------------------------------------------------------------------------------------

    def test_task_round_trips_every_field_with_aware_datetimes(self, executions: ExecutionRepository) -> None:
        task = a_task()
        executions.add_task(task)
        assert_same_task(executions.get_task(task.id), task)

    def test_task_naive_datetimes_come_back_naive(self, executions: ExecutionRepository) -> None:
        task = a_task(created_at=NAIVE, pinned_time=NAIVE + timedelta(hours=1))
        executions.add_task(task)
        stored = executions.get_task(task.id)
        assert_same_task(stored, task)
        assert stored is not None and stored.created_at.tzinfo is None and stored.pinned_time is not None
        assert stored.pinned_time.tzinfo is None

    def test_task_aware_datetime_keeps_its_utc_offset(self, executions: ExecutionRepository) -> None:
        task = a_task(created_at=AWARE_INDIA)
        executions.add_task(task)
        stored = executions.get_task(task.id)
        assert stored is not None
        assert stored.created_at.utcoffset() == timedelta(hours=5, minutes=30)

    def test_task_optional_fields_round_trip_as_none_and_empty(self, executions: ExecutionRepository) -> None:
        task = a_task(description=None, link=None, recurrence=None, preferred_slots=[], pinned_time=None)
        executions.add_task(task)
        assert_same_task(executions.get_task(task.id), task)

    def test_task_defaults_pinned_time_to_none(self, executions: ExecutionRepository) -> None:
        task = TaskDefinition("t", "T", None, None, NAIVE, None, "low", [], RetryPolicy(0))
        executions.add_task(task)
        assert_same_task(executions.get_task("t"), task)

    @pytest.mark.parametrize(
        "recurrence",
        [
            timedelta(0),
            timedelta(microseconds=1),
            timedelta(days=1, microseconds=1),
            timedelta(days=365 * 100, seconds=59, microseconds=999999),
            timedelta(days=-1, seconds=3600),
        ],
        ids=["zero", "one-microsecond", "day-and-a-microsecond", "a-century", "negative"],
    )
    def test_task_recurrence_round_trips_to_the_microsecond(
        self, executions: ExecutionRepository, recurrence: timedelta
    ) -> None:
        task = a_task(recurrence=recurrence)
        executions.add_task(task)
        stored = executions.get_task(task.id)
        assert stored is not None and stored.recurrence == recurrence

    @pytest.mark.parametrize("priority", ["low", "medium", "high"])
    def test_task_every_priority_round_trips(self, executions: ExecutionRepository, priority: str) -> None:
        task = a_task(priority=priority)
        executions.add_task(task)
        assert_same_task(executions.get_task(task.id), task)

    def test_task_unicode_title_and_ids_round_trip(self, executions: ExecutionRepository) -> None:
        task = a_task(
            "tâche-日本-😀", title=UNICODE_TITLE, description=UNICODE_TITLE, preferred_slots=["早上"]
        )
        executions.add_task(task)
        assert_same_task(executions.get_task("tâche-日本-😀"), task)
        assert executions.list_tasks() == [task]

    def test_occurrence_round_trips_every_field(self, executions: ExecutionRepository) -> None:
        occ = an_occurrence()
        executions.add_occurrence(occ)
        stored = executions.get_occurrence(occ.id)
        assert stored == occ
        assert stored is not None
        assert_same_moment(stored.scheduled_for, occ.scheduled_for)
        assert_same_moment(stored.pinned_time, occ.pinned_time)

    def test_occurrence_without_slot_and_pin_round_trips(self, executions: ExecutionRepository) -> None:
        occ = an_occurrence(scheduled_for=NAIVE, slot_name=None, pinned_time=None)
        executions.add_occurrence(occ)
        stored = executions.get_occurrence(occ.id)
        assert stored == occ
        assert stored is not None and stored.scheduled_for.tzinfo is None

    def test_execution_round_trips_every_field(self, executions: ExecutionRepository) -> None:
        execution = an_execution()
        executions.add_execution(execution)
        assert_same_execution(executions.get_execution(execution.occurrence_id), execution)

    @pytest.mark.parametrize("state", ["pending", "done", "missed", "cancelled"])
    def test_execution_every_state_round_trips(self, executions: ExecutionRepository, state: str) -> None:
        execution = an_execution(state=state)
        executions.add_execution(execution)
        assert_same_execution(executions.get_execution(execution.occurrence_id), execution)

    def test_execution_with_empty_history_round_trips(self, executions: ExecutionRepository) -> None:
        execution = TaskExecution("occ-empty", "pending", 0)
        executions.add_execution(execution)
        stored = executions.get_execution("occ-empty")
        assert_same_execution(stored, execution)
        assert stored is not None and stored.history == [] and stored.last_event_time is None

    def test_execution_with_1000_events_round_trips_in_order(self, executions: ExecutionRepository) -> None:
        kinds = ("triggered", "missed", "rescheduled", "completed")
        history = [
            TaskEvent(kinds[i % 4], (AWARE if i % 2 else NAIVE) + timedelta(seconds=i, microseconds=i))
            for i in range(1000)
        ]
        execution = TaskExecution("occ-long", "done", 1, history)
        executions.add_execution(execution)
        assert_same_execution(executions.get_execution("occ-long"), execution)

    def test_execution_properties_hold_after_round_trip(self, executions: ExecutionRepository) -> None:
        execution = an_execution(
            history=[
                TaskEvent("rescheduled", AWARE),
                TaskEvent("missed", AWARE),
                TaskEvent("rescheduled", AWARE_INDIA),
            ]
        )
        executions.add_execution(execution)
        stored = executions.get_execution(execution.occurrence_id)
        assert stored is not None
        assert stored.retry_count == 2
        assert stored.is_reschedulable
        assert_same_moment(stored.last_event_time, AWARE_INDIA)

    # Absent records -------------------------------------------------------------------------------------

    def test_get_returns_none_when_absent(self, executions: ExecutionRepository) -> None:
        assert executions.get_task("nope") is None
        assert executions.get_occurrence("nope") is None
        assert executions.get_execution("nope") is None

    def test_lists_of_an_empty_store_are_empty(self, executions: ExecutionRepository) -> None:
        assert executions.list_tasks() == []
        assert executions.list_occurrences() == []
        assert executions.list_occurrences("task-1") == []
        assert executions.list_executions() == []

    # Idempotent upserts and order ------------------------------------------------------------------------

    def test_adding_a_task_twice_keeps_one_record_with_the_new_fields(
        self, executions: ExecutionRepository
    ) -> None:
        executions.add_task(a_task("t"))
        changed = a_task("t", title="renamed", description=None, recurrence=None, priority="low")
        executions.add_task(changed)
        executions.add_task(changed)
        assert executions.list_tasks() == [changed]
        assert_same_task(executions.get_task("t"), changed)

    def test_lists_return_records_in_the_order_first_added(self, executions: ExecutionRepository) -> None:
        ids = ["zeta", "alpha", "mid", "10", "9"]
        for record_id in ids:
            executions.add_task(a_task(record_id))
            executions.add_occurrence(an_occurrence(record_id, task_id="t"))
            executions.add_execution(an_execution(record_id))
        assert [t.id for t in executions.list_tasks()] == ids
        assert [o.id for o in executions.list_occurrences()] == ids
        assert [e.occurrence_id for e in executions.list_executions()] == ids

    def test_re_adding_a_record_keeps_its_place_in_the_list(self, executions: ExecutionRepository) -> None:
        for record_id in ("a", "b", "c"):
            executions.add_task(a_task(record_id))
            executions.add_occurrence(an_occurrence(record_id))
            executions.add_execution(an_execution(record_id))
        executions.add_task(a_task("a", title="updated"))
        executions.add_occurrence(an_occurrence("a", slot_name="evening"))
        executions.add_execution(an_execution("a", state="done"))
        assert [(t.id, t.title) for t in executions.list_tasks()] == [
            ("a", "updated"),
            ("b", "Title of b"),
            ("c", "Title of c"),
        ]
        assert [(o.id, o.slot_name) for o in executions.list_occurrences()] == [
            ("a", "evening"),
            ("b", "morning"),
            ("c", "morning"),
        ]
        assert [(e.occurrence_id, e.state) for e in executions.list_executions()] == [
            ("a", "done"),
            ("b", "missed"),
            ("c", "missed"),
        ]

    def test_adding_an_occurrence_twice_keeps_one_record(self, executions: ExecutionRepository) -> None:
        executions.add_occurrence(an_occurrence("o", task_id="t1"))
        moved = an_occurrence("o", task_id="t2", slot_name=None)
        executions.add_occurrence(moved)
        assert executions.list_occurrences() == [moved]
        assert executions.list_occurrences("t1") == []
        assert executions.list_occurrences("t2") == [moved]

    def test_executions_are_keyed_by_occurrence_id(self, executions: ExecutionRepository) -> None:
        executions.add_execution(an_execution("o"))
        grown = an_execution("o", state="done", retries_remaining=0, history=[TaskEvent("completed", NAIVE)])
        executions.add_execution(grown)
        assert executions.list_executions() == [grown]
        assert_same_execution(executions.get_execution("o"), grown)

    def test_a_stored_record_is_not_changed_by_mutating_the_added_model(
        self, executions: ExecutionRepository
    ) -> None:
        task = a_task("t", preferred_slots=["morning"])
        execution = an_execution("o", history=[TaskEvent("triggered", NAIVE)])
        executions.add_task(task)
        executions.add_execution(execution)
        task.preferred_slots.append("night")
        execution.history.append(TaskEvent("missed", NAIVE))
        stored_task = executions.get_task("t")
        stored_execution = executions.get_execution("o")
        assert stored_task is not None and stored_task.preferred_slots == ["morning"]
        assert stored_execution is not None and len(stored_execution.history) == 1

    # Filtering and deleting ------------------------------------------------------------------------------

    def test_list_occurrences_of_a_task_returns_only_its_occurrences_in_order(
        self, executions: ExecutionRepository
    ) -> None:
        for occurrence_id, task_id in [("o1", "t1"), ("o2", "t2"), ("o3", "t1"), ("o4", "t3"), ("o5", "t1")]:
            executions.add_occurrence(an_occurrence(occurrence_id, task_id=task_id))
        assert [o.id for o in executions.list_occurrences("t1")] == ["o1", "o3", "o5"]
        assert [o.id for o in executions.list_occurrences("t2")] == ["o2"]
        assert executions.list_occurrences("unknown") == []
        assert len(executions.list_occurrences()) == 5

    def test_delete_task_and_related_removes_the_task_its_occurrences_and_their_executions(
        self, executions: ExecutionRepository
    ) -> None:
        executions.add_task(a_task("t1"))
        for occurrence_id in ("o1", "o2"):
            executions.add_occurrence(an_occurrence(occurrence_id, task_id="t1"))
            executions.add_execution(an_execution(occurrence_id))
        executions.delete_task_and_related("t1")
        assert executions.get_task("t1") is None
        assert executions.list_occurrences("t1") == []
        assert executions.get_occurrence("o1") is None
        assert executions.get_execution("o1") is None
        assert executions.get_execution("o2") is None

    def test_delete_task_and_related_leaves_other_tasks_records_intact(
        self, executions: ExecutionRepository
    ) -> None:
        for task_id in ("t1", "t2", "t3"):
            executions.add_task(a_task(task_id))
            for n in range(2):
                executions.add_occurrence(an_occurrence(f"{task_id}-o{n}", task_id=task_id))
                executions.add_execution(an_execution(f"{task_id}-o{n}"))
        # An execution whose occurrence is not stored belongs to no task and must survive too.
        executions.add_execution(an_execution("orphan"))
        executions.delete_task_and_related("t2")
        assert [t.id for t in executions.list_tasks()] == ["t1", "t3"]
        assert [o.id for o in executions.list_occurrences()] == ["t1-o0", "t1-o1", "t3-o0", "t3-o1"]
        assert [e.occurrence_id for e in executions.list_executions()] == [
            "t1-o0",
            "t1-o1",
            "t3-o0",
            "t3-o1",
            "orphan",
        ]

    def test_delete_of_an_absent_task_changes_nothing(self, executions: ExecutionRepository) -> None:
        executions.add_task(a_task("t1"))
        executions.add_occurrence(an_occurrence("o1", task_id="t1"))
        executions.add_execution(an_execution("o1"))
        executions.delete_task_and_related("absent")
        assert [t.id for t in executions.list_tasks()] == ["t1"]
        assert [o.id for o in executions.list_occurrences()] == ["o1"]
        assert [e.occurrence_id for e in executions.list_executions()] == ["o1"]

    # Purge -----------------------------------------------------------------------------------------------

    def test_purge_removes_occurrences_scheduled_before_with_their_executions_and_keeps_tasks(
        self, executions: ExecutionRepository
    ) -> None:
        executions.add_task(a_task("t1"))
        executions.add_task(a_task("t2"))
        old_aware = an_occurrence("old-aware", "t1", scheduled_for=datetime(2020, 5, 1, 12, tzinfo=UTC))
        old_india = an_occurrence(
            "old-india", "t2", scheduled_for=datetime(2021, 1, 1, 3, tzinfo=AWARE_INDIA.tzinfo)
        )
        old_naive = an_occurrence("old-naive", "t1", scheduled_for=datetime(2019, 7, 1, 9, 30))
        new_aware = an_occurrence("new-aware", "t1", scheduled_for=datetime(2031, 1, 1, tzinfo=UTC))
        new_naive = an_occurrence("new-naive", "t2", scheduled_for=datetime(2032, 3, 1, 8))
        for occ in (old_aware, old_india, old_naive, new_aware, new_naive):
            executions.add_occurrence(occ)
        for occurrence_id in ("old-aware", "old-naive", "new-aware"):  # old-india has no execution
            executions.add_execution(an_execution(occurrence_id))
        assert executions.purge(before=datetime(2025, 1, 1, tzinfo=UTC)) == 3
        assert [o.id for o in executions.list_occurrences()] == ["new-aware", "new-naive"]
        assert [e.occurrence_id for e in executions.list_executions()] == ["new-aware"]
        assert [t.id for t in executions.list_tasks()] == ["t1", "t2"]
        assert (
            executions.get_occurrence("old-aware") is None and executions.get_execution("old-aware") is None
        )
        assert executions.purge(before=datetime(2025, 1, 1, tzinfo=UTC)) == 0

    def test_purge_compares_the_moment_not_the_wall_clock(self, executions: ExecutionRepository) -> None:
        # 09:30 in India is 04:00 UTC: before 05:00 UTC although its wall clock reads later.
        india = timezone(timedelta(hours=5, minutes=30))
        executions.add_occurrence(an_occurrence("o", scheduled_for=datetime(2024, 6, 1, 9, 30, tzinfo=india)))
        assert executions.purge(before=datetime(2024, 6, 1, 4, 0, tzinfo=UTC)) == 0
        assert executions.purge(before=datetime(2024, 6, 1, 5, 0, tzinfo=UTC)) == 1
        assert executions.list_occurrences() == []

    def test_purge_of_an_empty_store_removes_nothing(self, executions: ExecutionRepository) -> None:
        assert executions.purge(before=datetime(2030, 1, 1, tzinfo=UTC)) == 0

    @pytest.mark.parametrize("before", [datetime(2020, 1, 1), "2020-01-01T00:00:00+00:00", 1577836800, None])
    def test_purge_refuses_a_moment_that_is_not_an_aware_datetime_and_removes_nothing(
        self, executions: ExecutionRepository, before: object
    ) -> None:
        executions.add_occurrence(an_occurrence("o", scheduled_for=datetime(2000, 1, 1, tzinfo=UTC)))
        with pytest.raises(ValidationError, match="before"):
            executions.purge(before=before)  # type: ignore[arg-type]
        assert [o.id for o in executions.list_occurrences()] == ["o"]

    def test_a_deleted_task_added_again_goes_to_the_end(self, executions: ExecutionRepository) -> None:
        for task_id in ("a", "b"):
            executions.add_task(a_task(task_id))
        executions.delete_task_and_related("a")
        executions.add_task(a_task("a"))
        assert [t.id for t in executions.list_tasks()] == ["b", "a"]

    # Only typed models -----------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "value",
        [
            {"id": "t", "title": "a dict"},
            an_occurrence("t"),
            an_execution("t"),
            None,
            "t",
        ],
        ids=["dict", "occurrence", "execution", "none", "str"],
    )
    def test_add_task_rejects_anything_but_a_task_definition(
        self, executions: ExecutionRepository, value: object
    ) -> None:
        with pytest.raises(TypeError, match=rf"TaskDefinition.*received {type(value).__name__}"):
            executions.add_task(value)  # pyright: ignore[reportArgumentType]
        assert executions.list_tasks() == []

    @pytest.mark.parametrize(
        "value",
        [{"id": "o", "task_id": "t"}, a_task("o"), an_execution("o")],
        ids=["dict", "task", "execution"],
    )
    def test_add_occurrence_rejects_anything_but_an_occurrence(
        self, executions: ExecutionRepository, value: object
    ) -> None:
        with pytest.raises(TypeError, match=rf"TaskOccurrence.*received {type(value).__name__}"):
            executions.add_occurrence(value)  # pyright: ignore[reportArgumentType]
        assert executions.list_occurrences() == []

    @pytest.mark.parametrize(
        "value", [{"occurrence_id": "o"}, a_task("o"), an_occurrence("o")], ids=["dict", "task", "occurrence"]
    )
    def test_add_execution_rejects_anything_but_an_execution(
        self, executions: ExecutionRepository, value: object
    ) -> None:
        with pytest.raises(TypeError, match=rf"TaskExecution.*received {type(value).__name__}"):
            executions.add_execution(value)  # pyright: ignore[reportArgumentType]
        assert executions.list_executions() == []

    def test_execution_with_an_untyped_event_in_its_history_is_rejected(
        self, executions: ExecutionRepository
    ) -> None:
        bad = TaskExecution("o", "pending", 1, [{"event": "missed", "timestamp": NAIVE}])  # pyright: ignore[reportArgumentType]
        with pytest.raises(TypeError, match=r"TaskEvent.*received dict"):
            executions.add_execution(bad)
        assert executions.list_executions() == []

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"created_at": "2025-01-01T00:00:00"}, "created_at"),
            ({"priority": "urgent"}, "priority"),
            ({"recurrence": 3600}, "recurrence"),
            ({"title": None}, "title"),
            ({"preferred_slots": ["ok", 7]}, "preferred_slots"),
            ({"retry_policy": RetryPolicy(max_retries=True)}, "retry_policy.max_retries"),
            ({"title": "lone \ud800 surrogate"}, "title"),
        ],
        ids=[
            "string-datetime",
            "unknown-priority",
            "int-recurrence",
            "none-title",
            "int-slot",
            "bool",
            "surrogate",
        ],
    )
    def test_task_with_a_wrongly_typed_field_is_rejected_naming_it_and_nothing_is_stored(
        self, executions: ExecutionRepository, changes: dict[str, object], field: str
    ) -> None:
        with pytest.raises(ValidationError, match=rf"task 'bad' field '{field}'"):
            executions.add_task(a_task("bad", **changes))
        assert executions.list_tasks() == []

    def test_execution_with_an_unknown_state_is_rejected_and_nothing_is_stored(
        self, executions: ExecutionRepository
    ) -> None:
        with pytest.raises(ValidationError, match=r"'state'"):
            executions.add_execution(an_execution("o", state="running"))
        assert executions.list_executions() == []

    # Batches ---------------------------------------------------------------------------------------------

    def test_batch_stores_every_write_of_the_block(self, executions: ExecutionRepository) -> None:
        with executions.batch():
            for n in range(50):
                executions.add_task(a_task(f"t{n}"))
                executions.add_occurrence(an_occurrence(f"o{n}", task_id=f"t{n}"))
                executions.add_execution(an_execution(f"o{n}"))
        assert [t.id for t in executions.list_tasks()] == [f"t{n}" for n in range(50)]
        assert len(executions.list_occurrences()) == 50
        assert len(executions.list_executions()) == 50

    def test_reads_inside_a_batch_see_its_writes(self, executions: ExecutionRepository) -> None:
        with executions.batch():
            executions.add_task(a_task("t"))
            assert executions.get_task("t") == a_task("t")
            executions.add_task(a_task("t", title="again"))
            assert [t.title for t in executions.list_tasks()] == ["again"]

    def test_a_batch_that_raises_stores_none_of_its_writes(self, executions: ExecutionRepository) -> None:
        executions.add_task(a_task("kept"))
        executions.add_occurrence(an_occurrence("kept-o", task_id="kept"))
        with pytest.raises(RuntimeError, match="abandon"), executions.batch():
            executions.add_task(a_task("kept", title="changed"))
            executions.add_task(a_task("new"))
            executions.delete_task_and_related("kept")
            raise RuntimeError("abandon")
        assert executions.list_tasks() == [a_task("kept")]
        assert [o.id for o in executions.list_occurrences()] == ["kept-o"]

    def test_a_nested_batch_is_stored_with_the_outer_one(self, executions: ExecutionRepository) -> None:
        with executions.batch():
            executions.add_task(a_task("outer"))
            with executions.batch():
                executions.add_task(a_task("inner"))
            executions.add_task(a_task("after"))
        assert [t.id for t in executions.list_tasks()] == ["outer", "inner", "after"]

    def test_a_nested_batch_that_raises_undoes_only_its_own_writes(
        self, executions: ExecutionRepository
    ) -> None:
        with executions.batch():
            executions.add_task(a_task("outer"))
            with pytest.raises(RuntimeError), executions.batch():
                executions.add_task(a_task("inner"))
                executions.add_task(a_task("outer", title="changed by inner"))
                raise RuntimeError("inner fails")
            assert executions.list_tasks() == [a_task("outer")]
            executions.add_task(a_task("after"))
        assert executions.list_tasks() == [a_task("outer"), a_task("after")]

    def test_an_outer_batch_that_raises_discards_its_nested_batches(
        self, executions: ExecutionRepository
    ) -> None:
        with pytest.raises(RuntimeError), executions.batch():
            with executions.batch():
                executions.add_task(a_task("inner"))
            raise RuntimeError("outer fails")
        assert executions.list_tasks() == []

    # Threads ---------------------------------------------------------------------------------------------

    def test_eight_threads_adding_and_reading_concurrently_lose_nothing(
        self, executions: ExecutionRepository
    ) -> None:
        threads_count, per_thread = 8, 12
        start = threading.Barrier(threads_count)
        failures: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                start.wait()
                for n in range(per_thread):
                    key = f"w{worker}-{n}"
                    executions.add_task(a_task(key))
                    executions.add_occurrence(an_occurrence(key, task_id=f"w{worker}"))
                    executions.add_execution(an_execution(key, retries_remaining=n))
                    assert executions.get_task(key) == a_task(key)
                    stored = executions.get_execution(key)
                    assert stored is not None and stored.retries_remaining == n
                    assert len(executions.list_occurrences(f"w{worker}")) == n + 1
                    executions.list_tasks()
            except BaseException as exc:  # collected and re-raised in the main thread
                failures.append(exc)

        workers = [threading.Thread(target=work, args=(w,)) for w in range(threads_count)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in workers)
        assert failures == []
        expected = {f"w{w}-{n}" for w in range(threads_count) for n in range(per_thread)}
        tasks = executions.list_tasks()
        assert len(tasks) == len(expected) and {t.id for t in tasks} == expected
        assert {o.id for o in executions.list_occurrences()} == expected
        assert {e.occurrence_id for e in executions.list_executions()} == expected
        for w in range(threads_count):
            # Each thread added its own records in order, so their relative order must survive.
            assert [o.id for o in executions.list_occurrences(f"w{w}")] == [
                f"w{w}-{n}" for n in range(per_thread)
            ]
