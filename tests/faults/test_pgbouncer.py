"""PgBouncer in transaction-pooling mode (``pgbouncer=true``): what breaks behind it without that setting.

In that mode PgBouncer lends a server connection for one transaction at a time, so nothing may outlive a
transaction on it: no prepared statement, no session setting, no session advisory lock. The contract suites run
through it too: the ``pgbouncer`` row of tests/contract/drivers.py (fixtures in tests/faults/bouncer.py).
"""

from __future__ import annotations

import threading
import uuid

from planflow import PlanflowError, Provider, TaskState, WorkflowState, open_provider
from tests.faults.cluster import Bouncer, Cluster


def interleave(bouncer: Bouncer, name: str, *, pgbouncer: bool) -> list[BaseException]:
    """Two providers, four threads, the same statement repeated: the bouncer hands each transaction
    whichever server connection is free, so a statement prepared on one is missing on the next."""
    url = bouncer.url(name).replace("pgbouncer=true", f"pgbouncer={str(pgbouncer).lower()}")
    errors: list[BaseException] = []
    with open_provider(url) as first, open_provider({"url": url, "auto_migrate": False}) as second:
        wf = first.workflows.upsert_state(WorkflowState("wf", "w"))
        first.tasks.upsert_state(TaskState("t", "t", wf.workflow_exec_id, wf.workflow_id))

        def reads(provider: Provider) -> None:
            for _ in range(40):
                try:
                    provider.tasks.get_state("t")
                except PlanflowError as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=reads, args=(p,)) for p in (first, second, first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    return errors


def test_pgbouncer_mode_never_prepares_so_shared_server_connections_serve_every_client(
    bouncer_cluster: Cluster, bouncer: Bouncer
) -> None:
    name = f"pf_{uuid.uuid4().hex[:12]}"
    bouncer_cluster.sql(f"CREATE DATABASE {name}")
    assert interleave(bouncer, name, pgbouncer=True) == []
    # The control: with server-side prepared statements, the same workload breaks behind the bouncer.
    failures = interleave(bouncer, name, pgbouncer=False)
    assert failures, "without pgbouncer=true nothing broke: the test would prove nothing"
    assert any("prepared statement" in str(exc) for exc in failures), failures[0]
