"""Benchmarks: planflow against hand-written driver code and against SQLAlchemy 2.0 ORM on the same tables.

Run ``python -m benchmarks`` (or ``./scripts/bench``); ``--quick`` for a short run, ``--driver`` to pick
``sqlite``, ``postgres`` or ``all``, ``--out`` for where the JSON results and the scaling chart go. Each
workload is measured three ways in the same run, the implementations taking turns repetition by repetition,
and the table reports medians and their ratios against the targets of issue 6.
"""
