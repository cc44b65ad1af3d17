"""The store's metadata on TinyDB: table ``planflow_metadata`` of the same database as the add-on's records.

Each entry is a document ``{"key", "value", "updated_at"}`` (``updated_at`` in ISO 8601, UTC), written through
TinyDB's public Table API. Every operation runs under the execution repository's batch lock, so a metadata
write never interleaves with a batch of another thread (whose single write would otherwise put back the table
as the batch read it). Do not call it inside an ``executions.batch()`` block of the same thread. Like the other
cores, it is written as coroutines that never suspend; the adapters check its arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import cast

from tinydb import TinyDB, where
from tinydb.table import Table

METADATA = "planflow_metadata"


class TinyDbMetadata:
    """The MetadataRepository's core on a TinyDB database (see ``planflow.protocols.MetadataRepository``)."""

    def __init__(self, db: TinyDB, guard: Callable[[], AbstractContextManager[object]]) -> None:
        """Serve the metadata table of ``db``.

        Args:
            db: The database the add-on's records live in.
            guard: Opens the block every operation runs in: a unit of the execution tables' storage engine,
                whose lock keeps other threads' batches out.
        """
        # TinyDB's own annotations leave parts of these signatures unknown to a strict checker.
        self._table: Table = db.table(METADATA)  # pyright: ignore[reportUnknownMemberType]
        self._guard = guard

    async def get(self, key: str) -> str | None:
        """The value stored under ``key``, or ``None``."""
        with self._guard():
            found = cast("Mapping[str, object] | None", self._table.get(where("key") == key))  # pyright: ignore[reportUnknownMemberType]
        return None if found is None else str(found["value"])

    async def set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any value there (one write of the store)."""
        doc = {"key": key, "value": value, "updated_at": datetime.now(UTC).isoformat()}
        with self._guard():
            self._table.upsert(doc, where("key") == doc["key"])  # pyright: ignore[reportUnknownMemberType]

    async def delete(self, key: str) -> None:
        """Remove ``key``; a key that is not stored is no error and writes nothing."""
        with self._guard():
            if self._table.contains(where("key") == key):
                self._table.remove(where("key") == key)

    async def items(self) -> dict[str, str]:
        """Every key and value, by key in code point order."""
        with self._guard():
            docs = cast("list[Mapping[str, object]]", self._table.all())
        return dict(sorted((str(doc["key"]), str(doc["value"])) for doc in docs))


__all__ = ["METADATA", "TinyDbMetadata"]
