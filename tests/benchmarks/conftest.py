"""PostgreSQL fixtures for the benchmark smoke tests (see ``tests/pg.py``)."""

from __future__ import annotations

from tests.pg import postgres_server_url

__all__ = ["postgres_server_url"]
