"""One ordinary error leaves a pooled PostgreSQL connection as usable as before (issue 24, item 1).

Alternating a good write with one the database refuses (an unknown workflow: a foreign key; a duplicate
email: a unique key) on a pool of one connection broke every good write from the 9th call on, with
``prepared statement "_pg3_4" does not exist`` until the connection's lifetime ended: the write pipelined BEGIN,
its token, the statement and COMMIT, psycopg recorded COMMIT as prepared when it sent it, and the refused
statement aborted the pipeline before the server saw it. Writes are now one statement each, so nothing a
failed call started survives it. Both APIs, 40 rounds (past psycopg's preparation threshold many times).
"""

from __future__ import annotations

import asyncio

import pytest

from planflow import (
    DuplicateError,
    TaskState,
    TaskStatus,
    ValidationError,
    WorkflowState,
    open_async_provider,
    open_provider,
)

pytestmark = pytest.mark.postgres

ROUNDS = 40
ONE_CONNECTION = {"pool_max_size": 1, "pool_min_size": 1}


def test_refused_writes_between_good_ones_never_spoil_the_one_connection(
    postgres_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with open_provider({"url": postgres_url, **ONE_CONNECTION}) as provider:
        provider.workflows.upsert_state(WorkflowState("wf", "flow"))
        provider.auth.create_user("taken@example.com")
        for i in range(ROUNDS):
            provider.tasks.upsert_state(TaskState(f"t{i}", "t", "wf", "flow"))
            with pytest.raises(ValidationError, match="unknown workflow"):
                provider.tasks.upsert_state(TaskState(f"x{i}", "t", "no-such-workflow", "flow"))
            with pytest.raises(DuplicateError):
                provider.auth.create_user("Taken@example.com")
            provider.workflows.update_status("wf", TaskStatus.RUNNING)
        assert provider.tasks.count_states() == ROUNDS
    # psycopg said nothing either (it printed "error ignored terminating <psycopg.Pipeline [INERROR]>").
    assert "error ignored" not in capfd.readouterr().err


def test_refused_writes_between_good_ones_never_spoil_the_one_async_connection(
    postgres_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    async def main() -> int:
        async with open_async_provider({"url": postgres_url, **ONE_CONNECTION}) as provider:
            await provider.workflows.upsert_state(WorkflowState("wf", "flow"))
            await provider.auth.create_user("taken@example.com")
            for i in range(ROUNDS):
                await provider.tasks.upsert_state(TaskState(f"t{i}", "t", "wf", "flow"))
                with pytest.raises(ValidationError, match="unknown workflow"):
                    await provider.tasks.upsert_state(TaskState(f"x{i}", "t", "no-such-workflow", "flow"))
                with pytest.raises(DuplicateError):
                    await provider.auth.create_user("Taken@example.com")
                await provider.workflows.update_status("wf", TaskStatus.RUNNING)
            return await provider.tasks.count_states()

    assert asyncio.run(main()) == ROUNDS
    assert "error ignored" not in capfd.readouterr().err
