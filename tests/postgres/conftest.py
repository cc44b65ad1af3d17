"""PostgreSQL fixtures for this folder (see ``tests/pg.py``)."""

from __future__ import annotations

from tests.pg import new_postgres_url, postgres_provider, postgres_server_url, postgres_url

__all__ = ["new_postgres_url", "postgres_provider", "postgres_server_url", "postgres_url"]
