"""The SQL workloads of issue 6 (1-7, and the sizes workload 8 scales 1, 4 and 5 to).

A workload object belongs to one implementation: the harness makes one per implementation, seeds its fresh
database once, then alternates untimed :meth:`Workload.before` and timed :meth:`Workload.run` calls.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from benchmarks import data
from benchmarks.databases import BenchDatabase
from benchmarks.stores.base import TaskStore
from planflow import ConflictError, Provider, TaskState


@dataclass(slots=True)
class Outcome:
    """What one timed run did: operations performed and workload-specific counts (e.g. conflicts)."""

    operations: int
    counts: dict[str, int] = field(default_factory=dict[str, int])


class Workload(ABC):
    """One workload at one size, for one implementation."""

    def __init__(self, size: int) -> None:
        self.size = size

    @abstractmethod
    def seed(self, provider: Provider) -> None:
        """Fill the fresh database (untimed, once), through planflow for every implementation alike."""

    def before(self, database: BenchDatabase) -> None:  # noqa: B027 - optional hook
        """Reset what the previous run changed (untimed, before every run)."""

    @abstractmethod
    def run(self, store: TaskStore) -> Outcome:
        """The timed part."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the workload holds (threads)."""


def _seed(provider: Provider, workflow_exec_ids: list[str], states: list[TaskState]) -> None:
    for workflow_exec_id in workflow_exec_ids:
        provider.workflows.upsert_state(data.workflow(workflow_exec_id))
    provider.tasks.bulk_upsert(states)


class BulkUpsert(Workload):
    """1: bulk upsert of ``size`` task states, half new (inserted) and half updates of stored ones."""

    OLD, NEW = "wf-bulk", "wf-bulk-new"

    def __init__(self, size: int) -> None:
        super().__init__(size)
        half = size // 2
        updates = [data.task("old", i, self.OLD, round_=1) for i in range(half)]
        inserts = data.flat("new", size - half, self.NEW)
        # Interleaved, so every batch mixes inserts and updates.
        self.states = [s for pair in zip(updates, inserts, strict=False) for s in pair]
        self.states += inserts[len(updates) :]

    def seed(self, provider: Provider) -> None:
        _seed(provider, [self.OLD, self.NEW], data.flat("old", self.size // 2, self.OLD))

    def before(self, database: BenchDatabase) -> None:
        database.execute("DELETE FROM task_states WHERE workflow_exec_id = ?", [self.NEW])
        database.maintain()

    def run(self, store: TaskStore) -> Outcome:
        return Outcome(store.bulk_upsert(self.states))


class GetState(Workload):
    """2: ``size`` single ``get_state`` calls, in random order."""

    WORKFLOW = "wf-get"

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.ids = data.shuffled([data.task_id_for("get", i) for i in range(size)], seed=2)

    def seed(self, provider: Provider) -> None:
        _seed(provider, [self.WORKFLOW], data.flat("get", self.size, self.WORKFLOW))

    def run(self, store: TaskStore) -> Outcome:
        get = store.get_state
        for task_exec_id in self.ids:
            get(task_exec_id)
        return Outcome(len(self.ids))


class ListByIds(Workload):
    """3: one ``list_by_ids`` call with ``size`` ids, picked at random from twice as many stored states."""

    WORKFLOW = "wf-ids"

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.ids = data.shuffled([data.task_id_for("ids", i) for i in range(2 * size)], seed=3)[:size]

    def seed(self, provider: Provider) -> None:
        _seed(provider, [self.WORKFLOW], data.flat("ids", 2 * self.size, self.WORKFLOW))

    def run(self, store: TaskStore) -> Outcome:
        found = store.list_by_ids(self.ids)
        assert len(found) == self.size, f"{store.name} found {len(found)} of {self.size} states"
        return Outcome(len(found))


class TaskTree(Workload):
    """4: ``get_task_tree`` of a tree of ``size`` tasks with fan-out 10."""

    WORKFLOW = "wf-tree"

    def seed(self, provider: Provider) -> None:
        _seed(provider, [self.WORKFLOW], data.tree("tree", self.size, self.WORKFLOW))

    def run(self, store: TaskStore) -> Outcome:
        nodes = store.get_task_tree(data.task_id_for("tree", 0))
        assert len(nodes) == self.size, f"{store.name} read {len(nodes)} of {self.size} nodes"
        return Outcome(len(nodes))


class Paging(Workload):
    """5: ``list_states`` filtered on a workflow execution, paging through ``size`` states ``page`` at a time.

    A tenth as many states of another workflow execution share the table, so the filter filters.
    """

    WORKFLOW, NOISE = "wf-page", "wf-noise"

    def __init__(self, size: int, page: int = 500) -> None:
        super().__init__(size)
        self.page = page

    def seed(self, provider: Provider) -> None:
        states = data.flat("page", self.size, self.WORKFLOW)
        noise = data.flat("noise", max(1, self.size // 10), self.NOISE)
        mixed: list[TaskState] = []
        for i, state in enumerate(states):
            mixed.append(state)
            if i % 10 == 0 and i // 10 < len(noise):
                mixed.append(noise[i // 10])
        _seed(provider, [self.WORKFLOW, self.NOISE], mixed)

    def run(self, store: TaskStore) -> Outcome:
        seen, cursor = 0, None
        while True:
            items, cursor = store.list_page(self.WORKFLOW, self.page, cursor)
            seen += len(items)
            if cursor is None:
                break
        assert seen == self.size, f"{store.name} paged through {seen} of {self.size} states"
        return Outcome(seen)


class OptimisticUpdate(Workload):
    """6: ``size`` ``update_state`` calls with the expected version, each state once per run, random order."""

    WORKFLOW = "wf-upd"

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.order = data.shuffled(list(range(size)), seed=6)
        self.versions = [1] * size
        self.round = 0
        self.next: list[TaskState] = []

    def seed(self, provider: Provider) -> None:
        _seed(provider, [self.WORKFLOW], data.flat("upd", self.size, self.WORKFLOW))

    def before(self, database: BenchDatabase) -> None:
        self.round += 1
        self.next = [data.task("upd", i, self.WORKFLOW, round_=self.round) for i in range(self.size)]
        database.maintain()

    def run(self, store: TaskStore) -> Outcome:
        update, versions, states = store.update_state, self.versions, self.next
        for i in self.order:
            versions[i] = update(states[i], versions[i]).version
        return Outcome(self.size)


class ConcurrentUpdates(Workload):
    """7: ``threads`` threads each doing ``per_thread`` read-then-optimistic-update cycles on ``size`` shared tasks.

    A cycle reads a state and writes it back with the version it read; a ``ConflictError`` (another thread
    wrote in between) is counted, not retried.
    """

    WORKFLOW = "wf-hot"

    def __init__(self, size: int, threads: int = 8, per_thread: int = 1000) -> None:
        super().__init__(size)
        self.threads = threads
        self.per_thread = per_thread
        ids = [data.task_id_for("hot", i) for i in range(size)]
        self.plans = [
            [ids[j % size] for j in data.shuffled(range(per_thread), seed=70 + t)] for t in range(threads)
        ]
        # Threads that outlive runs, so per-thread connections are made once, not inside the timing.
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="bench-w7")

    def seed(self, provider: Provider) -> None:
        _seed(provider, [self.WORKFLOW], data.flat("hot", self.size, self.WORKFLOW))

    def before(self, database: BenchDatabase) -> None:
        database.maintain()

    def run(self, store: TaskStore) -> Outcome:
        start = threading.Barrier(self.threads)

        def worker(thread: int) -> int:
            conflicts = 0
            start.wait()
            for n, task_exec_id in enumerate(self.plans[thread]):
                state = store.get_state(task_exec_id)
                try:
                    store.update_state(state.evolve(output={"writer": thread, "n": n}), state.version)
                except ConflictError:
                    conflicts += 1
            return conflicts

        futures = [self._pool.submit(worker, t) for t in range(self.threads)]
        conflicts = sum(f.result() for f in futures)
        return Outcome(self.threads * self.per_thread, {"conflicts": conflicts})

    def close(self) -> None:
        self._pool.shutdown()


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """A workload at a size: how the harness names it and makes one per implementation."""

    number: int
    key: str
    title: str
    size: int
    make: Callable[[], Workload]
    group: str = "main"


def main_workloads(
    size: int, paging_size: int, threads: int, per_thread: int, page: int = 500
) -> list[WorkloadSpec]:
    """Workloads 1-7; ``size`` is the 10 000 of the issue, ``paging_size`` its 50 000."""
    return [
        WorkloadSpec(1, "bulk_upsert", f"bulk upsert {size:,} (half new)", size, lambda: BulkUpsert(size)),
        WorkloadSpec(2, "get_state", f"{size:,} x get_state", size, lambda: GetState(size)),
        WorkloadSpec(3, "list_by_ids", f"list_by_ids, {size:,} ids", size, lambda: ListByIds(size)),
        WorkloadSpec(4, "task_tree", f"get_task_tree, {size:,} tasks", size, lambda: TaskTree(size)),
        WorkloadSpec(
            5,
            "paging",
            f"list_states {paging_size:,} / {page} per page",
            paging_size,
            lambda: Paging(paging_size, page),
        ),
        WorkloadSpec(
            6, "update_state", f"{size:,} x update_state(expected)", size, lambda: OptimisticUpdate(size)
        ),
        WorkloadSpec(
            7,
            "concurrent_updates",
            f"{threads} threads x {per_thread:,} updates, 100 tasks",
            threads * per_thread,
            lambda: ConcurrentUpdates(100, threads, per_thread),
        ),
    ]


def scaling_workloads(sizes: list[int], page: int = 500) -> list[WorkloadSpec]:
    """Workload 8: workloads 1, 4 and 5 at each of ``sizes``."""

    def paging(size: int) -> Workload:
        return Paging(size, page)

    makers: tuple[tuple[int, str, Callable[[int], Workload]], ...] = (
        (1, "bulk_upsert", BulkUpsert),
        (4, "task_tree", TaskTree),
        (5, "paging", paging),
    )
    specs: list[WorkloadSpec] = []
    for number, key, make in makers:
        for size in sizes:
            specs.append(
                WorkloadSpec(
                    8,
                    f"scale_{key}",
                    f"{key} at {size:,}",
                    size,
                    lambda m=make, s=size: m(s),
                    group=f"scale:{number}",
                )
            )
    return specs
