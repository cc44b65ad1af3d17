"""History through lost COMMIT replies: exactly one record per change that was applied.

The history is appended by the statement that makes the change, so it commits with it or not at all. A unit whose
COMMIT reply was lost and that is resolved as committed is not run again (one record); one whose COMMIT never
reached the server is run again (one record, from the run that committed).
"""

from __future__ import annotations

from planflow import ConflictError, Provider, Repositories, TaskStatus
from tests.driven import resolved_commits
from tests.faults.proxy import CommitProxy
from tests.faults.test_lost_replies import CALLS, THREADS, counter, proxied, run_threads
from tests.support import reporter

__all__ = ["proxied"]  # the fixture, used here by name

report = reporter("faults")

FLIP = {TaskStatus.PENDING: TaskStatus.RUNNING, TaskStatus.RUNNING: TaskStatus.PENDING}


def test_each_applied_change_has_exactly_one_record_through_lost_commits(
    proxied: tuple[Provider, CommitProxy],
) -> None:
    provider, proxy = proxied
    unit_task, single_task = counter(provider), counter(provider)
    proxy.faults.lose_replies = 0.2
    proxy.faults.lose_commits = 0.2

    def flip(tx: Repositories) -> None:
        state = tx.tasks.get_state_for_update(unit_task.task_exec_id)
        tx.tasks.update_state(state.evolve(status=FLIP[state.status]), state.version)

    with resolved_commits() as outcomes:
        run_threads(CALLS // 2, lambda: provider.run_in_transaction(flip))
    latest = {"state": provider.tasks.get_state(single_task.task_exec_id)}

    def flip_alone() -> None:
        # Single tokened statements (no unit of work); a thread that lost the race to another reads again.
        while True:
            state = provider.tasks.get_state(single_task.task_exec_id)
            try:
                latest["state"] = provider.tasks.update_state(
                    state.evolve(status=FLIP[state.status]), state.version
                )
                return
            except ConflictError:
                continue

    run_threads(CALLS // 2, flip_alone)
    proxy.faults.lose_replies = proxy.faults.lose_commits = 0.0
    for task, changes in ((unit_task, THREADS * (CALLS // 2)), (single_task, THREADS * (CALLS // 2))):
        stored = provider.tasks.get_state(task.task_exec_id)
        assert stored.version == 1 + changes, "a change was applied twice, or lost"
        history = provider.tasks.history(task.task_exec_id, limit=10_000)
        assert len(history) == 1 + changes, "a change was recorded twice, or not at all"
        assert [r.version for r in history] == list(range(1, stored.version + 1))
        assert all(r.from_status is FLIP[r.to_status] for r in history[1:])
        assert history[-1].to_status is stored.status
    report(
        f"history through the proxy: {proxy.faults.replies_lost} replies of committed COMMITs lost, "
        f"{proxy.faults.commits_lost} COMMITs lost; resolved {outcomes}; one record per applied change"
    )
    assert proxy.faults.replies_lost > 0 and outcomes["committed"] > 0
