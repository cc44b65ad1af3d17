"""``planflow tree`` of a large workflow: the whole command, interpreter start included.

    .venv/bin/python -m benchmarks.cli_tree_bench [--tasks 20000] [--runs 5]

One SQLite file holds one finished demo-shaped workflow of ``--tasks`` tasks (5% of the leaves FAILED); the
command prints 20 children per parent and sums up the rest. Reported: the median and the fastest of ``--runs``
runs (README: "20 000 tasks in about 0.5 s"). The tests check what the command prints, never how long it takes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.cli.helpers import big_workflow


def time_tree(tasks: int, runs: int) -> list[float]:
    """Seconds each of ``runs`` runs of ``planflow tree`` took on a workflow of ``tasks`` tasks."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'tree.db'}"
        workflow_exec_id = big_workflow(url, tasks)
        env = {**os.environ, "COLUMNS": "80"}
        timings: list[float] = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "planflow", "tree", workflow_exec_id, "--db", url],
                env=env,
                check=True,
                capture_output=True,
            )
            timings.append(time.perf_counter() - started)
        return timings


def main() -> None:
    """Run the benchmark and print its numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    timings = time_tree(options.tasks, options.runs)
    print(
        f"planflow tree, {options.tasks:,} tasks: median {statistics.median(timings):.3f} s, "
        f"fastest {min(timings):.3f} s ({options.runs} runs)"
    )


if __name__ == "__main__":
    main()
