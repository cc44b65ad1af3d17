"""A TinyDB storage that survives a crash at any moment: every write replaces the file atomically.

``write`` puts the whole database into a temporary file in the same folder, flushes and fsyncs it, and moves
it onto the target with ``os.replace`` (then fsyncs the folder on POSIX, so the rename itself is durable). A
reader, or a process killed mid-write, therefore sees either the old file or the new one, never a mix. The
file is opened only inside ``read`` and ``write``: between operations nothing holds it, so a backup tool, a
sync client or the user can copy or replace it.

Windows refuses ``os.replace`` while another process (an antivirus scanner, the search indexer) briefly holds
the target; that ``PermissionError`` is retried a bounded number of times. A file that cannot be decoded is
never overwritten silently: it raises :class:`CorruptStoreError`, or, with ``on_corrupt="move_aside"``, is
renamed to ``NAME.corrupt-<UTC timestamp>`` and the store starts empty.

One process per file, and no lock: two processes writing the same file each replace the whole database, and
the last write wins. Every call re-reads and rewrites the whole file (O(size) per write); the add-on's default
is now :class:`~planflow.infra.tinydb.journal.JournaledStorage`, which keeps the data in memory and appends
each write to a journal. This storage stays for stores that must be replaceable between operations.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from tinydb.storages import Storage

from planflow.config import OnCorrupt
from planflow.errors import CorruptStoreError, ValidationError
from planflow.infra.tinydb.files import (
    StoreData,
    aside_name,
    decode_store,
    replace_retrying,
    store_path,
    write_atomically,
)

logger = logging.getLogger("planflow.tinydb")


class CrashSafeJSONStorage(Storage):
    """A TinyDB storage writing a JSON file atomically (temp file, fsync, ``os.replace``); always UTF-8.

    Use it as ``TinyDB(path, storage=CrashSafeJSONStorage)``; keyword options pass through TinyDB.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_corrupt: OnCorrupt = "raise",
        replace_attempts: int = 10,
        replace_delay: float = 0.05,
    ) -> None:
        """Prepare the storage; the file itself is created by the first write.

        Args:
            path: The JSON file. Its folder must exist.
            on_corrupt: ``"raise"`` a :class:`CorruptStoreError` on a file that cannot be decoded, or
                ``"move_aside"`` to rename it to ``NAME.corrupt-<UTC timestamp>`` and start an empty store.
            replace_attempts: How many times a ``PermissionError`` from ``os.replace`` is tried in all.
            replace_delay: Seconds to sleep between those attempts.

        Raises:
            ConfigError: The folder does not exist, or an option is out of range.
        """
        super().__init__()
        self._path = store_path(path, on_corrupt, replace_attempts, replace_delay)
        self._on_corrupt: OnCorrupt = on_corrupt
        self._replace_attempts = replace_attempts
        self._replace_delay = replace_delay
        # Until the file has been read once, a write first reads it: a corrupt file must not be replaced
        # by a write that never looked at it (TinyDB's drop_tables writes without reading).
        self._checked = False

    @property
    def path(self) -> Path:
        """The absolute path of the store file."""
        return self._path

    def read(self) -> StoreData | None:
        """Return the whole database, or ``None`` when the file is missing or empty.

        Raises:
            CorruptStoreError: The file cannot be read, or is not UTF-8 JSON shaped as a TinyDB database
                (with ``on_corrupt="move_aside"`` a file that does not decode is moved aside instead and
                ``None`` returned).
            TransientError: Moving a corrupt file aside was refused past the retry budget.
        """
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            self._checked = True
            return None
        except OSError as exc:
            raise CorruptStoreError(f"cannot read the TinyDB store {self._path}: {exc}") from exc
        try:
            data = decode_store(raw)
        except ValueError as exc:
            if self._on_corrupt == "raise":
                raise CorruptStoreError(
                    f"the TinyDB store {self._path} is corrupt and was left untouched: {exc}"
                ) from exc
            self._move_aside(exc)
            data = None
        self._checked = True
        return data

    def write(self, data: StoreData) -> None:
        """Replace the file with ``data`` atomically: readers and crashes see the old file or the new one.

        Raises:
            ValidationError: ``data`` holds something JSON cannot represent; nothing was written.
            CorruptStoreError: The existing file, not yet read, is corrupt; it was left untouched.
            TransientError: ``os.replace`` was refused past the retry budget; the old file is intact.
            StoreWriteError: Another OS error; the old file is intact.
        """
        try:
            payload = json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"cannot write to the TinyDB store {self._path}: {exc}") from exc
        if not self._checked:
            self.read()
        write_atomically(self._path, payload, attempts=self._replace_attempts, delay=self._replace_delay)

    def close(self) -> None:
        """Nothing to release: the file is never held open between operations."""

    def _move_aside(self, reason: ValueError) -> None:
        aside = aside_name(self._path)
        replace_retrying(
            self._path, aside, store=self._path, attempts=self._replace_attempts, delay=self._replace_delay
        )
        logger.warning(
            "the TinyDB store %s was corrupt (%s); moved it to %s and started empty",
            self._path,
            reason,
            aside,
        )


__all__ = ["CrashSafeJSONStorage", "StoreData"]
