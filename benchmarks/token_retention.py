"""The commit-token table under writes from short-lived processes (issue 24.6): it stays bounded.

    .venv/bin/python -m benchmarks.token_retention [--processes 1000] [--writes 100] [--old 200000]

The table first gets ``--old`` tokens two hours old (what earlier days left, had nobody deleted them); then
``--processes`` processes, two at a time, each open a provider, make ``--writes`` single-statement writes and
exit. Every process deletes up to 1 000 tokens older than an hour with its first write and every 128th after,
through the ``created_at`` index. The report gives the tokens older and younger than an hour before and after,
and how long the run took. Tokens younger than an hour stay (a COMMIT whose reply was lost may still need its
token); the table holds at most what one hour of writes adds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg

from benchmarks.compare import postgres_schema
from planflow import WorkflowState, open_provider
from tests.postgres.test_commit_tokens import tokens

WORKER = textwrap.dedent(
    """
    import sys
    from planflow import open_provider
    with open_provider(sys.argv[1]) as provider:
        for _ in range(int(sys.argv[2])):
            provider.workflows.update_status("wf", "RUNNING")
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--old", type=int, default=200_000)
    args = parser.parse_args()
    with postgres_schema() as url:
        with open_provider(url) as provider:
            provider.workflows.upsert_state(WorkflowState("wf", "w"))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO planflow_commits (created_at) "
                "SELECT now() - interval '2 hours' FROM generate_series(1, %s)",
                [args.old],
            )
        print(f"before: {tokens(url)[0]:,} tokens older than an hour, {tokens(url)[1]:,} younger", flush=True)
        started = time.monotonic()

        def one(_: int) -> None:
            subprocess.run([sys.executable, "-c", WORKER, url, str(args.writes)], check=True)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(one, range(args.processes)))
        old, young = tokens(url)
        print(
            f"after {args.processes:,} processes x {args.writes} writes ({args.processes * args.writes:,} writes, "
            f"{time.monotonic() - started:.0f} s): {old:,} tokens older than an hour, {young:,} younger"
        )


if __name__ == "__main__":
    main()
