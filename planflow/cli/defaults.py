"""The defaults that the commands' options show in ``--help``.

Here, apart from the commands' code (the demos, copy), so that ``planflow --help`` loads none of it.
"""

from __future__ import annotations

#: ``planflow demo``: tasks, workers, seed, the share of steps that fail, the smallest plan (nine named steps
#: and at least two children in each of the four groups), seconds a claim holds a task (``--lease``).
DEFAULT_TASKS = 500
DEFAULT_WORKERS = 8
DEFAULT_SEED = 42
DEFAULT_FAILURE_RATE = 0.05
MIN_TASKS = 17
DEFAULT_LEASE = 0.5
#: ``planflow demo --addon``: task definitions.
DEFAULT_ADDON_TASKS = 20
#: ``planflow copy``: records per batch.
DEFAULT_BATCH = 1000
