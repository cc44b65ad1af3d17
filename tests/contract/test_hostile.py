"""Hostile input, case by case: what DESIGN.md's input rules refuse, refused the same way on every SQL driver.

Each case was a raw Python exception, a driver error or an unreadable row before the input rules: now it is a
``ValidationError`` naming what was wrong, and nothing is stored. (``tests/test_hostile_properties.py`` covers
the same ground with generated values.)
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from planflow import (
    NotFoundError,
    Provider,
    TaskFilter,
    TaskState,
    UsageEntry,
    UsageSummary,
    ValidationError,
    WorkflowFilter,
    WorkflowState,
    WrongTypeError,
)
from planflow.infra.sql.codec import encode_cursor
from tests.contract.helpers import task, unique, workflow

LONE_SURROGATE = "half \udc80 a pair"


def nested(levels: int) -> dict[str, Any]:
    """A JSON object nested ``levels`` deep (the outermost object is level 1)."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"d": value}
    return value


@dataclasses.dataclass(frozen=True)
class LookAlikeFilter:
    """Any dataclass with field names that would reach SQL if filters were taken on trust."""

    status: str | None = None
    task_id: str | None = None


class TestHostileInput:
    """Cases that must raise ValidationError, leave the store as it was, and never a raw exception."""

    suite = "hostile"

    @pytest.mark.parametrize(
        "field",
        ["task_exec_id", "task_id", "agent_id", "input", "input key", "output", "error"],
    )
    def test_a_lone_surrogate_anywhere_in_a_task_is_refused(self, provider: Provider, field: str) -> None:
        wf = workflow(provider)
        state = TaskState(unique("tx"), "t", wf.workflow_exec_id, wf.workflow_id)
        changes: dict[str, object] = {
            "task_exec_id": {"task_exec_id": LONE_SURROGATE},
            "task_id": {"task_id": LONE_SURROGATE},
            "agent_id": {"agent_id": LONE_SURROGATE},
            "input": {"input": {"text": LONE_SURROGATE}},
            "input key": {"input": {LONE_SURROGATE: 1}},
            "output": {"output": {"list": ["ok", LONE_SURROGATE]}},
            "error": {"error": {"nested": {"deep": LONE_SURROGATE}}},
        }[field]
        with pytest.raises(ValidationError, match="Unicode"):
            provider.tasks.upsert_state(state.evolve(**changes))  # pyright: ignore[reportArgumentType]
        assert provider.tasks.count_states(TaskFilter(workflow_exec_id=wf.workflow_exec_id)) == 0

    def test_lone_surrogates_in_workflow_usage_and_email_are_refused(self, provider: Provider) -> None:
        with pytest.raises(ValidationError, match="Unicode"):
            provider.workflows.upsert_state(WorkflowState(unique("wf"), LONE_SURROGATE))
        with pytest.raises(ValidationError, match="Unicode"):
            provider.auth.create_user(f"{LONE_SURROGATE}@example.org")
        wf = workflow(provider)
        with pytest.raises(ValidationError, match="Unicode"):
            provider.workflows.merge_usage(
                wf.workflow_exec_id, UsageSummary((UsageEntry(LONE_SURROGATE, "m", "task", 1, 1, 2),))
            )
        assert provider.workflows.get_state(wf.workflow_exec_id).usage is None

    @pytest.mark.parametrize("where", ["task_exec_id", "workflow_exec_id", "a filter", "a lookup"])
    def test_a_nul_in_an_id_is_refused_everywhere(self, provider: Provider, where: str) -> None:
        wf = workflow(provider)
        bad = "nul\x00inside"
        with pytest.raises(ValidationError, match="NUL"):
            if where == "task_exec_id":
                provider.tasks.upsert_state(TaskState(bad, "t", wf.workflow_exec_id, wf.workflow_id))
            elif where == "workflow_exec_id":
                provider.workflows.upsert_state(WorkflowState(bad, "w"))
            elif where == "a filter":
                provider.tasks.list_states(TaskFilter(task_id=bad))
            else:
                provider.tasks.get_state(bad)
        assert provider.workflows.count_states() >= 1

    def test_ids_longer_than_512_characters_are_refused_and_512_accepted(self, provider: Provider) -> None:
        wf = workflow(provider)
        with pytest.raises(ValidationError, match="512"):
            provider.tasks.upsert_state(TaskState("x" * 1_000_000, "t", wf.workflow_exec_id, wf.workflow_id))
        with pytest.raises(ValidationError, match="512"):
            provider.tasks.get_state("y" * 513)
        longest = "z" * 512
        assert (
            provider.tasks.upsert_state(TaskState(longest, "t", wf.workflow_exec_id, wf.workflow_id)).version
            == 1
        )
        assert provider.tasks.get_state(longest).task_exec_id == longest

    def test_json_deeper_than_256_levels_is_refused_and_256_reads_back(self, provider: Provider) -> None:
        wf = workflow(provider)
        for levels in (257, 990, 100_000):
            with pytest.raises(ValidationError, match="256"):
                task(provider, wf, input=nested(levels))
        deepest = task(provider, wf, input=nested(256))
        assert provider.tasks.get_state(deepest.task_exec_id).input == nested(256)
        # The workflow with that task still reads (it could not, once a 989-level value was stored).
        assert deepest.task_id in provider.workflows.get_state(wf.workflow_exec_id).tasks

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
    def test_non_finite_floats_in_json_are_refused(self, provider: Provider, value: float) -> None:
        wf = workflow(provider)
        with pytest.raises(ValidationError, match="JSON"):
            task(provider, wf, output={"score": value})

    @pytest.mark.parametrize("value", [(1, 2), {1, 2}, b"bytes", object()])
    def test_values_json_would_not_read_back_equal_are_refused(
        self, provider: Provider, value: object
    ) -> None:
        wf = workflow(provider)
        with pytest.raises(WrongTypeError):
            task(provider, wf, input={"v": value})

    @pytest.mark.parametrize("tokens", ["5", 2.5, -1, True, None, 2**63])
    def test_token_counts_that_are_not_non_negative_ints_are_refused(
        self, provider: Provider, tokens: object
    ) -> None:
        wf = workflow(provider)
        stored = task(provider, wf, usage=UsageSummary((UsageEntry("p", "m", "task", 1, 1, 2),)))
        bad = UsageSummary((UsageEntry("p", "m", "task", tokens, 0, 0),))  # pyright: ignore[reportArgumentType]
        with pytest.raises(ValidationError, match="prompt_tokens"):
            provider.tasks.merge_usage(stored.task_exec_id, bad)
        with pytest.raises(ValidationError, match="prompt_tokens"):
            provider.tasks.upsert_state(stored.evolve(usage=bad))
        # The stored usage still merges (a stored string count once broke every later merge of the row).
        merged = provider.tasks.merge_usage(
            stored.task_exec_id, UsageSummary((UsageEntry("p", "m", "task", 1, 0, 1),))
        )
        assert merged.entries[0].prompt_tokens == 2

    def test_merge_usage_of_none_is_a_wrong_type_error(self, provider: Provider) -> None:
        wf = workflow(provider)
        stored = task(provider, wf)
        with pytest.raises(WrongTypeError, match="UsageSummary"):
            provider.tasks.merge_usage(stored.task_exec_id, None)  # pyright: ignore[reportArgumentType]
        with pytest.raises(WrongTypeError, match="UsageSummary"):
            provider.workflows.merge_usage(wf.workflow_exec_id, None)  # pyright: ignore[reportArgumentType]

    @pytest.mark.parametrize("number", [0, -1, 2**31, 2**63, 2**64 + 5])
    def test_limits_depths_and_versions_out_of_range_are_refused(
        self, provider: Provider, number: int
    ) -> None:
        wf = workflow(provider)
        stored = task(provider, wf)
        with pytest.raises(ValidationError, match="limit"):
            provider.tasks.list_states(limit=number)
        with pytest.raises(ValidationError, match="max_depth"):
            provider.tasks.get_task_tree(stored.task_exec_id, max_depth=number)
        if number < 0 or number > 2**31 - 1:
            with pytest.raises(ValidationError, match="expected_version"):
                provider.tasks.update_state(stored, number)
        assert provider.tasks.get_state(stored.task_exec_id).version == 1

    @pytest.mark.parametrize(
        "cursor",
        [
            123,
            b"bytes",
            "not-a-cursor",
            "W10=",
            "x" * 5000,
            # Well formed, but its moment has no UTC form (year 1 at +14:00): no engine can compare with it.
            encode_cursor(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))), "t"),
            encode_cursor(datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14))), "t", "desc"),
        ],
    )
    def test_a_cursor_not_made_by_planflow_is_refused(self, provider: Provider, cursor: object) -> None:
        with pytest.raises(ValidationError, match="cursor"):
            provider.tasks.list_states(cursor=cursor)  # pyright: ignore[reportArgumentType]
        with pytest.raises(ValidationError, match="cursor"):
            provider.workflows.list_states(cursor=cursor)  # pyright: ignore[reportArgumentType]
        with pytest.raises(ValidationError, match="cursor"):
            provider.tasks.list_states(cursor=cursor, order="desc")  # pyright: ignore[reportArgumentType]

    @pytest.mark.parametrize(
        "bad", [object(), WorkflowFilter(), LookAlikeFilter(task_id="x"), {"task_id": "x"}]
    )
    def test_a_filter_must_be_the_repository_s_own_filter_type(self, provider: Provider, bad: object) -> None:
        with pytest.raises(WrongTypeError, match="TaskFilter"):
            provider.tasks.count_states(bad)  # pyright: ignore[reportArgumentType]
        with pytest.raises(WrongTypeError, match="TaskFilter"):
            provider.tasks.list_states(bad)  # pyright: ignore[reportArgumentType]

    def test_a_filter_with_a_value_of_the_wrong_kind_is_refused(self, provider: Provider) -> None:
        with pytest.raises(ValidationError, match="status"):
            provider.tasks.list_states(TaskFilter(status="DONE"))  # pyright: ignore[reportArgumentType]
        with pytest.raises(WrongTypeError, match="task_id"):
            provider.tasks.count_states(TaskFilter(task_id=7))  # pyright: ignore[reportArgumentType]

    @pytest.mark.parametrize("at", ["x", 12, "2026-01-01"])
    def test_touch_api_key_with_a_moment_that_is_no_datetime_is_refused(
        self, provider: Provider, at: object
    ) -> None:
        user = provider.auth.create_user(f"{unique('u')}@example.org")
        key = provider.auth.create_api_key(user.id).key
        with pytest.raises(WrongTypeError, match="datetime"):
            provider.auth.touch_api_key(key.id, at)  # pyright: ignore[reportArgumentType]
        assert provider.auth.get_api_key(key.id).last_used is None

    def test_a_missing_id_that_breaks_no_rule_is_still_a_plain_not_found(self, provider: Provider) -> None:
        with pytest.raises(NotFoundError):
            provider.tasks.get_state("well-formed-but-absent")
