"""Retention, listings in either order with time bounds, and usage totals: the contract on every SQL driver."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from planflow import (
    NotFoundError,
    Provider,
    TaskFilter,
    TaskState,
    TaskStatus,
    UsageEntry,
    UsageSummary,
    ValidationError,
    WorkflowFilter,
    WorkflowState,
    open_provider,
)
from planflow.models import TERMINAL_STATUSES
from tests.contract.helpers import task, unique, workflow

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
STATUSES = list(TaskStatus)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def imported_workflow(
    provider: Provider, *, status: TaskStatus, created: datetime, updated: datetime, workflow_id: str = "wf"
) -> WorkflowState:
    """A workflow stored verbatim, with the timestamps given."""
    state = WorkflowState(
        unique("wfx"), workflow_id, status=status, version=1, created_at=created, updated_at=updated
    )
    provider.workflows.import_states([state])
    return state


def imported_tasks(provider: Provider, wf: WorkflowState, count: int, **fields: Any) -> list[TaskState]:
    """``count`` tasks of ``wf`` stored verbatim: the i-th created at minute i and updated at hour i, with the
    statuses in turn (unless ``fields`` says otherwise)."""
    states = [
        TaskState(
            unique("tx"),
            f"t{i}",
            wf.workflow_exec_id,
            wf.workflow_id,
            status=STATUSES[i % len(STATUSES)],
            version=1,
            created_at=at(i),
            updated_at=T0 + timedelta(hours=i),
        ).evolve(**fields)
        for i in range(count)
    ]
    provider.tasks.import_states(states)
    return states


def every_page(list_page: Any, cursor: str | None = None, **kwargs: Any) -> list[Any]:
    """Every item of a listing (from ``cursor`` on), following its cursors."""
    items: list[Any] = []
    while True:
        page = list_page(cursor=cursor, **kwargs)
        items.extend(page.items)
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


def ids(states: list[TaskState]) -> list[str]:
    return [s.task_exec_id for s in states]


def newest_first(states: list[TaskState]) -> list[str]:
    return ids(sorted(states, key=lambda s: (s.created_at, s.task_exec_id), reverse=True))


class TestRetention:
    """Listing order and bounds, usage totals and purge."""

    suite = "retention"

    # Listings ---------------------------------------------------------------------------------------------

    def test_list_states_newest_first_pages_through_every_task_once(self, provider: Provider) -> None:
        wf = workflow(provider)
        states = imported_tasks(provider, wf, 23)
        # Two tasks created at the same moment: the id breaks the tie, in the listing's direction.
        states += imported_tasks(provider, wf, 2, created_at=at(5))
        desc = every_page(provider.tasks.list_states, limit=4, order="desc")
        assert ids(desc) == newest_first(states)
        asc = every_page(provider.tasks.list_states, limit=4, order="asc")
        assert ids(asc) == list(reversed(newest_first(states)))
        assert ids(every_page(provider.tasks.list_states, limit=4)) == ids(asc)

    def test_statuses_match_any_of_them_in_both_orders(self, provider: Provider) -> None:
        wf = workflow(provider)
        states = imported_tasks(provider, wf, 40)
        wanted = {TaskStatus.FAILED, TaskStatus.SUCCESS, TaskStatus.PAUSED}
        matching = [s for s in states if s.status in wanted]
        for order in ("desc", "asc"):
            got = every_page(
                provider.tasks.list_states, filter=TaskFilter(statuses=wanted), limit=3, order=order
            )
            expected = newest_first(matching)
            assert ids(got) == (expected if order == "desc" else list(reversed(expected)))
        assert provider.tasks.count_states(TaskFilter(statuses=wanted)) == len(matching)
        # Any collection, of members or their values.
        as_list = provider.tasks.list_states(TaskFilter(statuses=["FAILED", "SUCCESS", "PAUSED"]), limit=100)
        assert len(as_list.items) == len(matching)

    def test_status_and_statuses_together_match_both(self, provider: Provider) -> None:
        wf = workflow(provider)
        states = imported_tasks(provider, wf, 16)
        both = TaskFilter(status=TaskStatus.FAILED, statuses={TaskStatus.FAILED, TaskStatus.SUCCESS})
        got = provider.tasks.list_states(both, order="desc").items
        assert ids(got) == newest_first([s for s in states if s.status is TaskStatus.FAILED])
        apart = TaskFilter(status=TaskStatus.PENDING, statuses={TaskStatus.FAILED})
        assert provider.tasks.list_states(apart).items == []
        assert provider.tasks.count_states(apart) == 0

    def test_time_bounds_are_exclusive_and_combine_with_statuses(self, provider: Provider) -> None:
        wf = workflow(provider)
        states = imported_tasks(provider, wf, 30)
        created = TaskFilter(created_after=at(3), created_before=at(12))
        assert ids(provider.tasks.list_states(created, order="desc").items) == newest_first(states[4:12])
        updated = TaskFilter(updated_after=T0 + timedelta(hours=20), updated_before=T0 + timedelta(hours=25))
        assert ids(provider.tasks.list_states(updated).items) == ids(states[21:25])
        both = TaskFilter(statuses={TaskStatus.FAILED, TaskStatus.CANCELED}, created_after=at(10))
        expected = [s for s in states[11:] if s.status in (TaskStatus.FAILED, TaskStatus.CANCELED)]
        assert ids(
            every_page(provider.tasks.list_states, filter=both, limit=2, order="desc")
        ) == newest_first(expected)
        assert provider.tasks.count_states(both) == len(expected)
        # Any time zone: the moment counts.
        tokyo = at(3).astimezone(timezone(timedelta(hours=9)))
        assert len(provider.tasks.list_states(TaskFilter(created_after=tokyo)).items) == 26

    def test_newest_first_paging_does_not_shift_when_rows_are_added(self, provider: Provider) -> None:
        wf = workflow(provider)
        states = imported_tasks(provider, wf, 12)
        first = provider.tasks.list_states(limit=5, order="desc")
        task(provider, wf)  # newer than every listed row: it belongs before the first page
        imported_tasks(provider, wf, 1, created_at=at(100))
        rest = every_page(provider.tasks.list_states, limit=5, order="desc", cursor=first.next_cursor)
        assert ids(first.items) + ids(rest) == newest_first(states)

    def test_a_cursor_continues_only_a_listing_in_its_own_order(self, provider: Provider) -> None:
        wf = workflow(provider)
        imported_tasks(provider, wf, 5)
        desc = provider.tasks.list_states(limit=2, order="desc")
        asc = provider.tasks.list_states(limit=2)
        assert desc.next_cursor is not None and asc.next_cursor is not None
        with pytest.raises(ValidationError, match="order"):
            provider.tasks.list_states(limit=2, order="asc", cursor=desc.next_cursor)
        with pytest.raises(ValidationError, match="order"):
            provider.tasks.list_states(limit=2, order="desc", cursor=asc.next_cursor)

    def test_workflows_list_newest_first_with_statuses_and_bounds(self, provider: Provider) -> None:
        made = [
            imported_workflow(provider, status=STATUSES[i % len(STATUSES)], created=at(i), updated=at(i + 60))
            for i in range(20)
        ]
        wanted = {TaskStatus.SUCCESS, TaskStatus.FAILED}
        flt = WorkflowFilter(statuses=wanted, created_after=at(2), updated_before=at(60 + 18))
        expected = [w.workflow_exec_id for w in reversed(made[3:18]) if w.status in wanted]
        got = every_page(provider.workflows.list_states, filter=flt, limit=2, order="desc")
        assert [w.workflow_exec_id for w in got] == expected
        assert provider.workflows.count_states(flt) == len(expected)
        all_desc = every_page(provider.workflows.list_states, limit=7, order="desc", with_tasks=False)
        assert [w.workflow_exec_id for w in all_desc] == [w.workflow_exec_id for w in reversed(made)]

    def test_iteration_still_lists_oldest_first(self, provider: Provider) -> None:
        wf = workflow(provider)
        states = imported_tasks(provider, wf, 7)
        assert ids(list(provider.tasks.iter_states(batch_size=3))) == ids(states)

    # Bad listing input ------------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "make",
        [
            lambda: {"order": "newest"},
            lambda: {"order": "DESC"},
            lambda: {"order": None},
            lambda: {"filter": TaskFilter(created_after=datetime(2024, 1, 1))},
            lambda: {"filter": TaskFilter(updated_before=datetime(2024, 1, 1))},
            lambda: {"filter": TaskFilter(created_before="2024-01-01")},  # type: ignore[arg-type]
            lambda: {"filter": TaskFilter(statuses={"NOPE"})},  # type: ignore[arg-type]
            lambda: {"filter": TaskFilter(statuses="FAILED")},  # type: ignore[arg-type]
            lambda: {"filter": TaskFilter(statuses=[])},
            lambda: {"filter": TaskFilter(statuses=[TaskStatus.FAILED, 3])},  # type: ignore[list-item]
            lambda: {"filter": TaskFilter(statuses=TaskStatus.FAILED)},  # type: ignore[arg-type]
            lambda: {"filter": WorkflowFilter(statuses={TaskStatus.FAILED})},
        ],
        ids=[
            "order newest",
            "order DESC",
            "order None",
            "naive created_after",
            "naive updated_before",
            "text created_before",
            "unknown status",
            "statuses a string",
            "statuses empty",
            "statuses with an int",
            "statuses one member",
            "workflow filter for tasks",
        ],
    )
    def test_bad_listing_input_is_refused(self, provider: Provider, make: Any) -> None:
        wf = workflow(provider)
        imported_tasks(provider, wf, 3)
        with pytest.raises(ValidationError):
            provider.tasks.list_states(**make())

    @pytest.mark.parametrize(
        "flt",
        [
            WorkflowFilter(created_after=datetime(2024, 1, 1)),
            WorkflowFilter(statuses={"BOGUS"}),  # type: ignore[arg-type]
            WorkflowFilter(updated_after=1234),  # type: ignore[arg-type]
        ],
        ids=["naive", "unknown status", "int bound"],
    )
    def test_bad_workflow_filters_are_refused(self, provider: Provider, flt: WorkflowFilter) -> None:
        with pytest.raises(ValidationError):
            provider.workflows.list_states(flt, order="desc")
        with pytest.raises(ValidationError):
            provider.workflows.count_states(flt)
        with pytest.raises(ValidationError):
            provider.workflows.list_states(order="sideways")  # type: ignore[arg-type]

    # Usage ------------------------------------------------------------------------------------------------

    def test_usage_total_sums_the_workflow_and_all_its_tasks(self, provider: Provider) -> None:
        wf = workflow(provider)
        other = workflow(provider)
        entry = UsageEntry("OpenAI", "gpt", "task", 10, 5, 15, cached_tokens=4, reasoning_tokens=2)
        provider.workflows.merge_usage(
            wf.workflow_exec_id, UsageSummary((UsageEntry("openai", "GPT", "task", 1, 1, 2, 1, 0),))
        )
        parent = task(provider, wf)
        parts = [UsageSummary((entry,))]
        for number in range(12):
            child = task(provider, wf, parent=parent if number % 2 else None)
            part = UsageSummary(
                (
                    UsageEntry("openai", "gpt", "task", number, 1, number + 1, number, 1),
                    UsageEntry("anthropic", "claude", "agent", 2, 3, 5, 0, number),
                )
            )
            provider.tasks.merge_usage(child.task_exec_id, part)
            parts.append(part)
        provider.tasks.merge_usage(parent.task_exec_id, UsageSummary((entry,)))
        task(provider, wf)  # no usage at all
        other_task = task(provider, other)
        provider.tasks.merge_usage(other_task.task_exec_id, UsageSummary((entry,)))
        total = provider.workflows.usage_total(wf.workflow_exec_id)
        expected = UsageSummary((UsageEntry("openai", "GPT", "task", 1, 1, 2, 1, 0),)).merge(
            UsageSummary.of(e for p in parts for e in p.entries)
        )
        by_key = {e.key: e for e in total.entries}
        assert by_key == {e.key: by_key[e.key] for e in expected.entries}
        for e in expected.entries:
            got = by_key[e.key]
            assert (
                got.prompt_tokens,
                got.completion_tokens,
                got.total_tokens,
                got.cached_tokens,
                got.reasoning_tokens,
            ) == (e.prompt_tokens, e.completion_tokens, e.total_tokens, e.cached_tokens, e.reasoning_tokens)
        assert total.total_tokens == 2 + 15 + sum(n + 1 + 5 for n in range(12))
        assert provider.workflows.usage_total(other.workflow_exec_id).total_tokens == 15

    def test_usage_total_of_a_workflow_without_usage_is_empty(self, provider: Provider) -> None:
        wf = workflow(provider)
        task(provider, wf)
        assert provider.workflows.usage_total(wf.workflow_exec_id) == UsageSummary()

    def test_usage_total_of_an_unknown_workflow_raises_not_found(self, provider: Provider) -> None:
        with pytest.raises(NotFoundError, match="ghost"):
            provider.workflows.usage_total("ghost")
        with pytest.raises(ValidationError):
            provider.workflows.usage_total("")

    def test_merging_usage_sums_cached_and_reasoning_tokens(self, provider: Provider) -> None:
        wf = workflow(provider)
        state = task(
            provider, wf, usage=UsageSummary((UsageEntry("p", "m", cached_tokens=3, reasoning_tokens=4),))
        )
        merged = provider.tasks.merge_usage(
            state.task_exec_id, UsageSummary((UsageEntry("P", "M", cached_tokens=10, reasoning_tokens=20),))
        )
        assert [(e.cached_tokens, e.reasoning_tokens) for e in merged.entries] == [(13, 24)]
        stored = provider.tasks.get_state(state.task_exec_id).usage
        assert stored == merged

    @pytest.mark.parametrize("field", ["cached_tokens", "reasoning_tokens"])
    @pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
    def test_bad_cached_or_reasoning_counts_are_refused(
        self, provider: Provider, field: str, value: object
    ) -> None:
        wf = workflow(provider)
        bad = UsageSummary((UsageEntry("p", "m", **{field: value}),))  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match=field):
            provider.workflows.merge_usage(wf.workflow_exec_id, bad)
        assert provider.workflows.get_state(wf.workflow_exec_id).usage is None

    # Purge ------------------------------------------------------------------------------------------------

    def test_purge_deletes_old_finished_workflows_with_their_tasks_and_nothing_else(
        self, provider: Provider
    ) -> None:
        old = datetime(2020, 1, 1, tzinfo=UTC)
        doomed = [
            imported_workflow(provider, status=status, created=old, updated=old + timedelta(minutes=i))
            for i, status in enumerate(sorted(TERMINAL_STATUSES) * 2)
        ]
        running_old = imported_workflow(provider, status=TaskStatus.RUNNING, created=old, updated=old)
        paused_old = imported_workflow(provider, status=TaskStatus.PAUSED, created=old, updated=old)
        recent = workflow(provider)
        recent = provider.workflows.update_status(recent.workflow_exec_id, TaskStatus.SUCCESS)
        kept = [running_old, paused_old, recent]
        for wf in doomed + kept:
            root = task(provider, wf, status=TaskStatus.SUCCESS)
            for _ in range(3):
                child = task(provider, wf, parent=root)
                task(provider, wf, parent=child)
        kept_tasks = {
            s.task_exec_id
            for wf in kept
            for s in provider.tasks.list_states(TaskFilter(workflow_exec_id=wf.workflow_exec_id)).items
        }
        batches: list[int] = []
        purged = provider.workflows.purge(
            finished_before=datetime.now(UTC) - timedelta(hours=1), batch_size=5, progress=batches.append
        )
        assert purged == len(doomed) == sum(batches)
        assert len(batches) > 1
        left = {w.workflow_exec_id for w in every_page(provider.workflows.list_states, with_tasks=False)}
        assert left == {wf.workflow_exec_id for wf in kept}
        assert {s.task_exec_id for s in every_page(provider.tasks.list_states)} == kept_tasks
        assert provider.workflows.purge(finished_before=datetime.now(UTC)) == 1  # the recent SUCCESS

    def test_purge_takes_only_the_statuses_asked_for(self, provider: Provider) -> None:
        old = datetime(2021, 6, 1, tzinfo=UTC)
        failed = imported_workflow(provider, status=TaskStatus.FAILED, created=old, updated=old)
        success = imported_workflow(provider, status=TaskStatus.SUCCESS, created=old, updated=old)
        task(provider, failed)
        cutoff = datetime(2022, 1, 1, tzinfo=UTC)
        assert provider.workflows.purge(finished_before=cutoff, statuses={TaskStatus.FAILED}) == 1
        assert [w.workflow_exec_id for w in provider.workflows.list_states().items] == [
            success.workflow_exec_id
        ]
        assert provider.workflows.purge(finished_before=old) == 0  # exclusive: written at the cutoff stays
        assert provider.workflows.purge(finished_before=cutoff, statuses=["SUCCESS"]) == 1

    def test_purge_deletes_a_workflow_larger_than_a_batch(self, provider: Provider) -> None:
        old = datetime(2020, 1, 1, tzinfo=UTC)
        big = imported_workflow(provider, status=TaskStatus.SUCCESS, created=old, updated=old)
        imported_tasks(provider, big, 23, status=TaskStatus.SUCCESS)
        small = imported_workflow(provider, status=TaskStatus.FAILED, created=old, updated=old)
        imported_tasks(provider, small, 2)
        calls: list[int] = []
        assert (
            provider.workflows.purge(
                finished_before=datetime(2021, 1, 1, tzinfo=UTC), batch_size=4, progress=calls.append
            )
            == 2
        )
        assert provider.tasks.count_states() == 0 and provider.workflows.count_states() == 0
        assert len(calls) >= 23 // 4

    def test_purge_stops_touching_a_workflow_reopened_between_its_batches(self, provider: Provider) -> None:
        old = datetime(2020, 1, 1, tzinfo=UTC)
        big = imported_workflow(provider, status=TaskStatus.SUCCESS, created=old, updated=old)
        imported_tasks(provider, big, 40, status=TaskStatus.SUCCESS)
        batches: list[int] = []
        # Someone else resumes the workflow between the purge's batches (another provider on the same store where
        # the callback cannot call this one back: the asynchronous API calls it on its event loop).
        reentrant = getattr(provider, "reentrant_callbacks", True) or provider.config.is_memory
        other = provider if reentrant else open_provider(provider.config)

        def reopen_after_the_first_batch(deleted: int) -> None:
            batches.append(deleted)
            if len(batches) == 1:
                other.workflows.update_status(big.workflow_exec_id, TaskStatus.RUNNING)

        try:
            purged = provider.workflows.purge(
                finished_before=datetime(2021, 1, 1, tzinfo=UTC),
                batch_size=10,
                progress=reopen_after_the_first_batch,
            )
        finally:
            if other is not provider:
                other.close()
        assert purged == 0
        assert provider.workflows.get_state(big.workflow_exec_id).status is TaskStatus.RUNNING
        # Only the first batch went; every task after it stays.
        assert provider.tasks.count_states(TaskFilter(workflow_exec_id=big.workflow_exec_id)) == 30

    def test_purge_waits_for_a_reopening_in_flight_and_leaves_the_workflow_whole_after_it(
        self, provider: Provider
    ) -> None:
        old = datetime(2020, 1, 1, tzinfo=UTC)
        big = imported_workflow(provider, status=TaskStatus.SUCCESS, created=old, updated=old)
        imported_tasks(provider, big, 40, status=TaskStatus.SUCCESS)
        reentrant = getattr(provider, "reentrant_callbacks", True) or provider.config.is_memory
        other = provider if reentrant else open_provider(provider.config)
        updated, release = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def reopen() -> None:
            # Resumes the workflow in a transaction that stays open a moment after its UPDATE.
            try:
                with other.transaction() as tx:
                    tx.workflows.update_status(big.workflow_exec_id, TaskStatus.RUNNING)
                    updated.set()
                    release.wait(30)
            except BaseException as exc:
                errors.append(exc)
                updated.set()

        reopener = threading.Thread(target=reopen, daemon=True)
        batches: list[int] = []

        def after_a_batch(deleted: int) -> None:
            batches.append(deleted)
            if len(batches) == 1:
                reopener.start()
                updated.wait(30)
                threading.Timer(0.3, release.set).start()

        try:
            purged = provider.workflows.purge(
                finished_before=datetime(2021, 1, 1, tzinfo=UTC), batch_size=10, progress=after_a_batch
            )
            reopener.join(30)
        finally:
            release.set()
            if other is not provider:
                other.close()
        assert errors == []
        assert purged == 0
        assert provider.workflows.get_state(big.workflow_exec_id).status is TaskStatus.RUNNING
        # The batch after the reopening waited for it, saw the workflow running and deleted nothing more.
        assert provider.tasks.count_states(TaskFilter(workflow_exec_id=big.workflow_exec_id)) == 30

    def test_purge_of_nothing_returns_zero(self, provider: Provider) -> None:
        workflow(provider)
        assert provider.workflows.purge(finished_before=datetime.now(UTC)) == 0
        assert provider.workflows.count_states() == 1

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"finished_before": datetime(2020, 1, 1)},
            {"finished_before": datetime.now(UTC) + timedelta(days=1)},
            {"finished_before": "2020-01-01T00:00:00+00:00"},
            {"finished_before": None},
            {"batch_size": 0},
            {"batch_size": -5},
            {"batch_size": 2**31},
            {"batch_size": 1.5},
            {"batch_size": True},
            {"statuses": {"DONE"}},
            {"statuses": []},
            {"statuses": "SUCCESS"},
            {"statuses": None},
            {"progress": "print"},
        ],
        ids=[
            "naive",
            "future",
            "text",
            "None",
            "batch 0",
            "batch negative",
            "batch 2**31",
            "batch float",
            "batch bool",
            "unknown status",
            "no status",
            "statuses a string",
            "statuses None",
            "progress not callable",
        ],
    )
    def test_bad_purge_input_is_refused_and_nothing_is_deleted(
        self, provider: Provider, kwargs: dict[str, Any]
    ) -> None:
        old = datetime(2020, 1, 1, tzinfo=UTC)
        wf = imported_workflow(provider, status=TaskStatus.SUCCESS, created=old, updated=old)
        task(provider, wf)
        arguments: dict[str, Any] = {"finished_before": datetime(2021, 1, 1, tzinfo=UTC), **kwargs}
        with pytest.raises(ValidationError):
            provider.workflows.purge(**arguments)
        assert provider.workflows.count_states() == 1 and provider.tasks.count_states() == 1
