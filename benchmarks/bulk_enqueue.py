"""Would an array-based bulk insert pay for enqueue (issue 27)? ``tasks.bulk_upsert`` against one
``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT`` per batch, on PostgreSQL.

    .venv/bin/python -m benchmarks.bulk_enqueue [--states 10000] [--rounds 5]

``bulk_upsert`` runs one transaction per 1 000 states and, in it, one ``INSERT ... ON CONFLICT DO UPDATE`` per
state, pipelined by psycopg's ``executemany``. The alternative sends each batch as one statement whose
parameters are one array per column (every column planflow writes, as text, cast to the column's type), in a
transaction of its own, on a plain psycopg connection: what planflow would send if it built the arrays itself,
without its validation. Both write new tasks of one workflow, so the store's triggers (history, NOTIFY) fire
for every row in both. Rounds alternate the order; the ratio is of median times (above 1: the arrays are
faster). A check reads back a task written by each variant through planflow and compares it with its source.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from benchmarks.compare import postgres_schema
from planflow import Provider, TaskState, TaskStatus, WorkflowState, open_provider
from planflow.infra.postgres.dialect import POSTGRES
from planflow.infra.sql.statements import BATCH_SIZE, batches
from planflow.infra.sql.tables import TASK_STATES
from planflow.infra.sql.tasks import verbatim_params


def states(workflow: str, count: int) -> list[TaskState]:
    prefix = uuid.uuid4().hex[:8]
    return [
        TaskState(f"{prefix}-{i:06d}", "job", workflow, "bench", input={"i": i}, priority=i % 3)
        for i in range(count)
    ]


def as_text(value: object) -> str | None:
    """A parameter as PostgreSQL's text input of its column type."""
    if value is None:
        return None
    if isinstance(value, Jsonb):  # planflow's JSON parameter, its text already serialised or not
        return value.obj if isinstance(value.obj, str) else json.dumps(value.obj)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def unnest_sql(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    """The array insert of every column of ``task_states``, each array cast from text to its column's type."""
    types = dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'task_states'::regclass AND attnum > 0 AND NOT attisdropped"
        ).fetchall()
    )
    names = TASK_STATES.names
    arrays = ", ".join(f"%s::text[]::{types[name]}[]" for name in names)
    updates = ", ".join(f"{name} = excluded.{name}" for name in names[1:] if name != "version")
    return (
        f"INSERT INTO task_states ({', '.join(names)}) SELECT * FROM unnest({arrays})"
        f" ON CONFLICT (task_exec_id) DO UPDATE SET {updates}, version = task_states.version + 1"
    )


def with_arrays(conn: psycopg.Connection[tuple[object, ...]], sql: str, batch: list[TaskState]) -> None:
    stamp = datetime.now().astimezone()
    rows = [verbatim_params(s.evolve(version=1, created_at=stamp, updated_at=stamp), POSTGRES) for s in batch]
    columns = [[as_text(row[i]) for row in rows] for i in range(len(TASK_STATES.names))]
    with conn.transaction():
        conn.execute(sql, columns)


def check(provider: Provider, source: TaskState) -> None:
    stored = provider.tasks.get_state(source.task_exec_id)
    assert (stored.input, stored.priority, stored.status, stored.version) == (
        source.input,
        source.priority,
        TaskStatus.PENDING,
        1,
    ), stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--states", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with postgres_schema() as url, open_provider(url) as provider, psycopg.connect(url) as conn:
        provider.workflows.upsert_state(WorkflowState("wf-enqueue", "bench"))
        sql = unnest_sql(conn)
        conn.commit()
        times: dict[str, list[float]] = {"bulk_upsert": [], "arrays": []}
        for turn in range(args.rounds + 1):  # the first round warms up and is dropped
            for variant in sorted(times, reverse=turn % 2 == 1):
                work = states("wf-enqueue", args.states)
                started = time.perf_counter()
                if variant == "bulk_upsert":
                    provider.tasks.bulk_upsert(work)
                else:
                    for batch in batches(work, BATCH_SIZE):
                        with_arrays(conn, sql, batch)
                elapsed = time.perf_counter() - started
                check(provider, work[-1])
                if turn:
                    times[variant].append(elapsed)
        medians = {variant: statistics.median(t) for variant, t in times.items()}
        print(
            f"{args.states:,} states in batches of {BATCH_SIZE:,}, {args.rounds} rounds: bulk_upsert "
            f"{args.states / medians['bulk_upsert']:,.0f} states/s, arrays "
            f"{args.states / medians['arrays']:,.0f} states/s, arrays/bulk_upsert speed "
            f"{medians['bulk_upsert'] / medians['arrays']:.2f}x"
        )


if __name__ == "__main__":
    main()
