"""Idempotency keys: a write given a key applies once; a repeat returns the first outcome and applies nothing."""

from __future__ import annotations

import pytest

from planflow import (
    ConflictError,
    NotFoundError,
    Provider,
    Repositories,
    TaskStatus,
    UsageEntry,
    UsageSummary,
    ValidationError,
)
from tests.contract.helpers import task, unique, workflow

TEN = UsageSummary((UsageEntry("openai", "gpt-4o", "task", 10, 5, 15),))


class TestIdempotency:
    """Keys on ``merge_usage`` and ``run_in_transaction``, on every SQL driver and both APIs."""

    suite = "idempotency"

    def test_task_merge_with_a_key_applies_once_and_repeats_its_outcome(self, provider: Provider) -> None:
        state = task(provider, workflow(provider))
        key = unique("merge")
        first = provider.tasks.merge_usage(state.task_exec_id, TEN, idempotency_key=key)
        again = provider.tasks.merge_usage(state.task_exec_id, TEN, idempotency_key=key)
        assert again == first
        stored = provider.tasks.get_state(state.task_exec_id)
        assert stored.usage == first and stored.usage.entries[0].prompt_tokens == 10
        assert stored.version == state.version + 1
        provider.tasks.merge_usage(state.task_exec_id, TEN, idempotency_key=unique("merge"))
        usage = provider.tasks.get_state(state.task_exec_id).usage
        assert usage is not None and usage.entries[0].prompt_tokens == 20

    def test_workflow_merge_with_a_key_applies_once(self, provider: Provider) -> None:
        wf = workflow(provider)
        key = unique("merge")
        first = provider.workflows.merge_usage(wf.workflow_exec_id, TEN, idempotency_key=key)
        assert provider.workflows.merge_usage(wf.workflow_exec_id, TEN, idempotency_key=key) == first
        usage = provider.workflows.get_state(wf.workflow_exec_id).usage
        assert usage is not None and usage.entries[0].total_tokens == 15

    def test_a_repeat_returns_the_first_outcome_even_after_later_merges(self, provider: Provider) -> None:
        state = task(provider, workflow(provider))
        key = unique("merge")
        first = provider.tasks.merge_usage(state.task_exec_id, TEN, idempotency_key=key)
        provider.tasks.merge_usage(state.task_exec_id, TEN)
        assert provider.tasks.merge_usage(state.task_exec_id, TEN, idempotency_key=key) == first
        usage = provider.tasks.get_state(state.task_exec_id).usage
        assert usage is not None and usage.entries[0].prompt_tokens == 20

    def test_a_key_given_to_another_request_is_a_conflict(self, provider: Provider) -> None:
        wf = workflow(provider)
        one, two = task(provider, wf), task(provider, wf)
        key = unique("merge")
        provider.tasks.merge_usage(one.task_exec_id, TEN, idempotency_key=key)
        with pytest.raises(ConflictError, match="already used for another request"):
            provider.tasks.merge_usage(two.task_exec_id, TEN, idempotency_key=key)
        with pytest.raises(ConflictError, match="already used"):
            provider.workflows.merge_usage(wf.workflow_exec_id, TEN, idempotency_key=key)
        assert provider.tasks.get_state(two.task_exec_id).usage is None

    def test_a_failed_merge_does_not_use_up_its_key(self, provider: Provider) -> None:
        key = unique("merge")
        with pytest.raises(NotFoundError):
            provider.tasks.merge_usage("ghost", TEN, idempotency_key=key)
        state = task(provider, workflow(provider), task_exec_id="ghost-" + key)
        # The key is free again: nothing of the failed call committed.
        provider.tasks.merge_usage(state.task_exec_id, TEN, idempotency_key=key)
        assert provider.tasks.get_state(state.task_exec_id).usage == TEN

    @pytest.mark.parametrize("bad", ["", "x" * 513, "nul\x00"])
    def test_an_invalid_key_is_refused_before_anything_is_written(self, provider: Provider, bad: str) -> None:
        state = task(provider, workflow(provider))
        with pytest.raises(ValidationError, match="idempotency_key"):
            provider.tasks.merge_usage(state.task_exec_id, TEN, idempotency_key=bad)
        with pytest.raises(ValidationError, match="idempotency_key"):
            provider.run_in_transaction(lambda tx: None, idempotency_key=bad)
        assert provider.tasks.get_state(state.task_exec_id).usage is None

    def test_unit_of_work_with_a_key_runs_once_and_repeats_its_result(self, provider: Provider) -> None:
        wf = workflow(provider)
        key = unique("unit")
        runs: list[int] = []

        def work(tx: Repositories) -> dict[str, object]:
            runs.append(1)
            tx.workflows.update_status(wf.workflow_exec_id, TaskStatus.RUNNING)
            return {"version": tx.workflows.get_state(wf.workflow_exec_id).version, "ok": True}

        first = provider.run_in_transaction(work, idempotency_key=key)
        again = provider.run_in_transaction(work, idempotency_key=key)
        assert first == again == {"version": 2, "ok": True}
        assert len(runs) == 1
        assert provider.workflows.get_state(wf.workflow_exec_id).version == 2

    def test_unit_of_work_with_a_key_must_return_json_and_commits_nothing_else(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        key = unique("unit")

        def work(tx: Repositories) -> object:
            tx.workflows.update_status(wf.workflow_exec_id, TaskStatus.RUNNING)
            return {1, 2}

        with pytest.raises(ValidationError, match="the result of the unit of work"):
            provider.run_in_transaction(work, idempotency_key=key)
        assert provider.workflows.get_state(wf.workflow_exec_id).status is TaskStatus.PENDING
        assert provider.run_in_transaction(lambda tx: [1, "two"], idempotency_key=key) == [1, "two"]

    def test_unit_of_work_that_raises_does_not_use_up_its_key(self, provider: Provider) -> None:
        key = unique("unit")

        def fails(tx: Repositories) -> None:
            raise RuntimeError("no")

        with pytest.raises(RuntimeError, match="no"):
            provider.run_in_transaction(fails, idempotency_key=key)
        assert provider.run_in_transaction(lambda tx: "second", idempotency_key=key) == "second"
        assert provider.run_in_transaction(lambda tx: "third", idempotency_key=key) == "second"
