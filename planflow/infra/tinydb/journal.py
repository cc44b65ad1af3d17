"""A TinyDB storage that keeps the data in memory and makes each write one fsynced append to a journal.

The files of a store ``NAME``:

- ``NAME``: the data as a plain TinyDB JSON document (what ``TinyDB(NAME)`` and any JSON tool read), as of the
  last compaction.
- ``NAME.journal``: the writes since, one record a line: the CRC-32 of the JSON text as 8 hex digits, a space,
  the JSON text, a newline. The JSON is a list of operations, each absolute: ``["p", table, doc_id, document]``
  puts a whole document, ``["d", table, doc_id]`` deletes one, ``["t", table]`` creates an empty table,
  ``["T", table]`` drops one. Empty after a clean close.
- ``NAME.lock``: empty; held by the process that has the store open (see :mod:`planflow.infra.tinydb.lock`).

Opening a store that does not exist creates its journal and lock file (so that a second writer is refused, and
an unwritable folder reported, at open), and closing it unwritten removes them again: a store opened and closed
without a write leaves the folder as it was. The first write goes to the journal; ``NAME`` appears, a plain
TinyDB document, at the first compaction (at close at the latest).

Opening reads ``NAME`` once (validating it is a TinyDB database), replays the journal onto it and keeps the
result in memory; every read is served from memory. A write appends one record (a whole ``batch()`` is one
record), flushed and fsynced before the call returns, and only then changes the data in memory.

A crash can tear only the last record, the one whose write never returned (records are appended one at a
time, each fsynced before the next begins): an incomplete last record, without its terminating newline, is
discarded at open (logged). A complete record, newline included, was written whole: if it fails its checksum
or holds no valid operations, that is damage, not a crash, wherever it is (the last record included, since
its write was acknowledged). Damage raises :class:`~planflow.errors.CorruptStoreError` naming the file and the
record, and the files are left untouched; with ``on_corrupt="move_aside"`` only what is damaged is set aside
and everything intact is kept: a damaged journal keeps ``NAME`` and the records before the damaged one, and the
damaged record with everything after it goes to ``NAME.journal.corrupt-<UTC timestamp>``; a ``NAME`` that
cannot be decoded (whatever the reason, nesting too deep for the parser included) is renamed to
``NAME.corrupt-<UTC timestamp>`` and the intact journal records are kept.

Compaction folds the journal into ``NAME``: the whole data to a temporary file in the same folder, fsync,
``os.replace`` onto ``NAME`` (retried while Windows refuses it), fsync of the folder on POSIX, then the journal
truncated. It runs at open and at close when the journal is not empty, and after a write that takes the
journal past a threshold (``compact_after`` bytes, or the size of ``NAME`` when that is larger, so that its
cost per write stays constant). Replaying a journal onto a ``NAME`` that already holds its records (a crash
between the replace and the truncation) is harmless: every operation is absolute, so the last one of each
document wins, as it did before the crash. Temporary files of a crashed compaction are removed at open.

``read_only=True`` opens a store for reading only: it creates no file, takes no lock, never compacts, and every
write raises :class:`~planflow.errors.ReadOnlyError`. It reads ``NAME`` and then the journal, as the next open
would, and sees the data as of that moment even beside a live writer: a record the writer is appending is
not complete yet and is left out, and if the writer replaced ``NAME`` (a compaction) between the two reads,
which could cut records out of the journal read, both are read again (a few times, then
:class:`~planflow.errors.TransientError`). Damage is reported (``CorruptStoreError``), never moved aside; a JSON
file that is not a TinyDB document raises :class:`~planflow.errors.ForeignStoreError`, and a store with
neither file a :class:`~planflow.errors.ConfigError`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import weakref
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import cast

from tinydb.storages import Storage

from planflow.config import OnCorrupt
from planflow.errors import (
    ConfigError,
    CorruptStoreError,
    ForeignStoreError,
    ReadOnlyError,
    StoreWriteError,
    TransientError,
    ValidationError,
)
from planflow.infra.tinydb.documents import (
    CREATE_TABLE,
    DELETE,
    DROP_TABLE,
    PUT,
    Op,
    apply_ops,
    collector_paused,
    diff,
    in_document_order,
)
from planflow.infra.tinydb.files import (
    NotTinyDBError,
    StoreData,
    aside_name,
    decode_store,
    discard,
    fsync_folder,
    remove_stale_temps,
    replace_retrying,
    store_path,
    write_atomically,
)
from planflow.infra.tinydb.lock import StoreLock

logger = logging.getLogger("planflow.tinydb")

JOURNAL_SUFFIX = ".journal"
#: Journals smaller than this are never compacted except at open and close.
DEFAULT_COMPACT_AFTER = 4 * 1024 * 1024
#: A compaction fsyncs the new file every this many bytes (see ``write_atomically``).
SYNC_EVERY = 1024 * 1024
#: Documents dumped per call: the dump of a large store yields the interpreter between chunks.
DUMP_CHUNK = 1000
#: How many times a read-only open reads a store whose writer compacts it meanwhile.
READ_ATTEMPTS = 5

_RECORD_START = re.compile(rb"[0-9a-f]{8} ")
_EMPTY: Mapping[str, object] = MappingProxyType({})


class JournaledStorage(Storage):
    """A TinyDB storage: the data in memory, each write one checksummed, fsynced append to ``NAME.journal``.

    Use it as ``TinyDB(path, storage=JournaledStorage)``; keyword options pass through TinyDB. The store is
    locked while open: a second ``JournaledStorage`` on the same file, in this process or another, raises
    :class:`~planflow.errors.StoreLockedError`. Close the ``TinyDB`` (or use it in a ``with`` block) to fold
    the journal into the file and release the lock; a storage dropped unclosed releases the lock when
    collected, and its journal is replayed at the next open. With ``read_only=True`` nothing is locked or
    written (see the module docstring).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_corrupt: OnCorrupt = "raise",
        compact_after: int = DEFAULT_COMPACT_AFTER,
        replace_attempts: int = 10,
        replace_delay: float = 0.05,
        read_only: bool = False,
    ) -> None:
        """Open the store: lock it, read ``NAME``, replay the journal, compact it if it is not empty.

        Args:
            path: The JSON file. Its folder must exist; the file need not.
            on_corrupt: ``"raise"`` a :class:`~planflow.errors.CorruptStoreError` on a store that cannot be
                decoded, or ``"move_aside"`` to set aside only what is damaged (``NAME`` renamed to
                ``NAME.corrupt-<UTC timestamp>``; the damaged end of the journal copied to
                ``NAME.journal.corrupt-<UTC timestamp>``) and open with everything intact.
            compact_after: Journal size in bytes past which a write compacts the store (the size of ``NAME``
                when that is larger).
            replace_attempts: How many times a ``PermissionError`` from ``os.replace`` is tried in all.
            replace_delay: Seconds to sleep between those attempts.
            read_only: Only read the store as it is now: no lock, no file created or changed, every write a
                :class:`~planflow.errors.ReadOnlyError`.

        Raises:
            ConfigError: The folder does not exist, or an option is out of range, or (``read_only``) there is
                no store at ``path``.
            ForeignStoreError: (``read_only``) ``NAME`` is JSON but not a TinyDB document; nothing was changed.
            StoreLockedError: The store is open in this process or another one.
            CorruptStoreError: ``NAME`` or the journal cannot be read or decoded; nothing was changed.
            StoreWriteError: The journal or the lock file cannot be created or written.
            TransientError: Moving a corrupt store aside was refused past the retry budget, or (``read_only``)
                the store's writer compacted it during every attempt to read it.
        """
        super().__init__()
        self._path = store_path(path, on_corrupt, replace_attempts, replace_delay)
        if compact_after < 0:
            raise ConfigError(f"compact_after must be >= 0, got {compact_after!r}")
        self._journal_path = self._path.with_name(self._path.name + JOURNAL_SUFFIX)
        self._on_corrupt: OnCorrupt = on_corrupt
        self._compact_after = compact_after
        self._replace_attempts = replace_attempts
        self._replace_delay = replace_delay
        #: Held by every change and by the repository for a whole operation: readers see whole writes.
        self.guard = threading.RLock()
        self._changes = 0
        self._main_size = 0
        self._journal_size = 0
        self._broken: str | None = None
        #: Held by a compaction from start to end (before the guard, never after it).
        self._compaction = threading.Lock()
        self._background: threading.Thread | None = None
        self._retry_at = 0
        #: While a compaction runs: the journal records written since it copied the data.
        self._written_since_copy: list[bytes] | None = None
        self._read_only = read_only
        self._handles = _Handles(None if read_only else StoreLock.acquire(self._path), self._journal_path)
        # A storage dropped unclosed still closes its journal and releases the lock when collected.
        self._finalizer = weakref.finalize(self, self._handles.close)
        self._data: StoreData = {}
        try:
            if read_only:
                self._open_read_only()
            else:
                self._open()
        except BaseException:
            self._finalizer()
            raise

    @property
    def path(self) -> Path:
        """The absolute path of the store file ``NAME``."""
        return self._path

    @property
    def journal_path(self) -> Path:
        """The absolute path of the journal, ``NAME.journal``."""
        return self._journal_path

    @property
    def changes(self) -> int:
        """How many writes changed the data since the store was opened (by any path)."""
        return self._changes

    @property
    def read_only(self) -> bool:
        """True when the store was opened for reading only."""
        return self._read_only

    def table_names(self) -> list[str]:
        """The names of the tables, without copying their documents (as ``TinyDB.tables()`` would)."""
        with self.guard:
            return list(self._data)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return not self._finalizer.alive

    def documents(self, table: str) -> Mapping[str, object]:
        """A read-only view of the documents of ``table`` (empty when it does not exist), in document id order.

        What a storage engine reads instead of a copy of the whole database (see
        :mod:`planflow.infra.tinydb.engine`): the view follows the data, which changes only through
        :meth:`apply` and :meth:`write`. Its documents must not be changed.
        """
        docs = self._data.get(table)
        return _EMPTY if docs is None else MappingProxyType(docs)

    def read(self) -> StoreData | None:
        """Return a copy of the whole database (TinyDB edits what it reads), or ``None`` when it is empty.

        Raises:
            CorruptStoreError: A document nests too deeply to be copied (it was put there by hand).
        """
        with self.guard:
            if not self._data:
                return None
            # The data holds JSON values only, so a JSON round trip is an exact deep copy, made in C without
            # the Python recursion a hand-written copy would need for every level.
            try:
                return cast("StoreData", json.loads(json.dumps(self._data, ensure_ascii=False)))
            except RecursionError as exc:
                raise CorruptStoreError(
                    f"a document of the TinyDB store {self._path} nests too deeply to be read through TinyDB"
                ) from exc

    def write(self, data: StoreData) -> None:
        """Store ``data`` as the whole database: one journal record with the documents that changed.

        The data in memory becomes what the journal holds, read back from JSON (a tuple becomes a list), so
        it is what the next open will find.

        Raises:
            ValidationError: ``data`` holds something JSON cannot represent; nothing was written.
            StoreWriteError: The journal could not be written; nothing was changed.
            ReadOnlyError: The store was opened read-only; nothing was changed.
        """
        with self.guard:
            self._refuse_if_read_only("a write")
            ops = diff(self._data, data)
            self._commit(ops, as_stored=True)
            for name in {op[1] for op in ops if op[0] in (PUT, CREATE_TABLE)}:
                # TinyDB numbers new documents past the largest id, but a caller may choose an id of its own.
                self._data[name] = in_document_order(self._data[name])

    def apply(self, ops: Sequence[Op]) -> None:
        """Append ``ops`` as one journal record, fsync it, then apply them to the data in memory.

        The documents of the operations become the store's own and must not be changed afterwards; they must be
        plain JSON values (dicts, lists, str, int, float, bool, None). A put of a new document must use an id
        past every stored one (as TinyDB numbers them), so that the tables stay in document id order.

        Raises:
            ValidationError: An operation holds something JSON cannot represent; nothing was written.
            StoreWriteError: The store is closed or the journal could not be written; nothing was written.
            ReadOnlyError: The store was opened read-only; nothing was written.
        """
        with self.guard:
            self._refuse_if_read_only("a write")
            self._commit(ops, as_stored=False)

    def _refuse_if_read_only(self, what: str) -> None:
        if self._read_only:
            raise ReadOnlyError(f"{what} was refused: the TinyDB store {self._path} is open read-only")

    def _commit(self, ops: Sequence[Op], *, as_stored: bool) -> None:
        if not ops:
            return
        self._require_open()
        text = _encode(ops, self._journal_path)
        self._append(b"%08x %s\n" % (zlib.crc32(text), text))
        apply_ops(self._data, cast("list[Op]", json.loads(text)) if as_stored else ops)
        self._changes += 1
        if self._journal_size >= max(self._compact_after, self._main_size):
            self._start_background("its journal passed its size threshold")

    def compact(self, *, background: bool = False) -> None:
        """Fold the journal into ``NAME``: the data to a temporary file, fsync, replace, then the journal cut.

        Writes may go on meanwhile (another thread's, or the caller's with ``background=True``): the data is
        copied under the lock, written out without it, and the journal then keeps just the records written
        since the copy.

        Args:
            background: Return at once and compact in a daemon thread, logging a failure instead of raising
                it (what a write past the threshold does, so that no write waits for a compaction).

        Raises:
            StoreWriteError: ``NAME`` or the journal could not be written; the store is intact (the journal
                still holds every write).
            TransientError: ``os.replace`` was refused past the retry budget; the store is intact.
            ReadOnlyError: The store was opened read-only.
        """
        self._refuse_if_read_only("a compaction")
        if background:
            self._start_background("asked to")
            return
        with self._compaction:
            self._fold()

    def close(self) -> None:
        """Compact the store if its journal is not empty, then close the journal and release the lock.

        Waits for a compaction running in the background. A compaction that fails is logged, not raised: the
        journal keeps every write and is replayed at the next open. A store that was never written (there is
        no ``NAME`` and the journal is empty) has its journal and lock file removed. Closing twice is harmless. Do not close
        the store inside a ``batch()`` of its repository (a background compaction would wait for the batch).
        """
        with self._compaction, self.guard:
            if self.closed:
                return
            try:
                if self._journal_size and self._broken is None:
                    self._fold_quietly("it was closing")
            finally:
                # A store that was never written (no NAME, an empty journal) leaves nothing behind.
                self._handles.vacant = (
                    not self._read_only
                    and self._broken is None
                    and self._journal_size == 0
                    and not os.path.lexists(self._path)
                )
                self._finalizer()

    def _fold(self) -> None:
        # The caller holds self._compaction: one compaction at a time, and close() waits for it.
        with self.guard:
            self._require_open()
            # Documents are never changed in place (a write replaces them), so copying the tables suffices.
            snapshot = {name: dict(docs) for name, docs in self._data.items()}
            self._written_since_copy = []
        try:
            payload = _dump(snapshot)
            write_atomically(
                self._path,
                payload,
                attempts=self._replace_attempts,
                delay=self._replace_delay,
                sync_every=SYNC_EVERY,
            )
            with self.guard:
                # NAME now holds every record written before the copy; until the journal loses them, they
                # only replay what NAME holds.
                self._main_size = len(payload)
                self._cut_journal(b"".join(self._written_since_copy))
        finally:
            with self.guard:
                self._written_since_copy = None

    def _cut_journal(self, tail: bytes) -> None:
        if not tail:
            fd = self._fd()
            try:
                os.ftruncate(fd, 0)
                os.fsync(fd)
            except OSError as exc:
                raise StoreWriteError(f"cannot truncate the journal {self._journal_path}: {exc}") from exc
            self._journal_size = 0
            return
        # Records written during the compaction stay: the journal is replaced by them, atomically.
        os.close(self._fd())  # Windows replaces no file that is open
        self._handles.fd = None
        try:
            write_atomically(
                self._journal_path, tail, attempts=self._replace_attempts, delay=self._replace_delay
            )
            self._journal_size = len(tail)
        finally:
            self._open_journal(self._journal_size)

    def _start_background(self, why: str) -> None:
        with self.guard:
            running = self._background
            if (running is not None and running.is_alive()) or self._journal_size < self._retry_at:
                return
            self._background = threading.Thread(
                target=self._fold_in_background, args=(why,), name="planflow-tinydb-compaction", daemon=True
            )
            self._background.start()

    def _fold_in_background(self, why: str) -> None:
        with self._compaction:
            if not self.closed:
                self._fold_quietly(why)

    def _fold_quietly(self, why: str) -> None:
        # The caller holds self._compaction. A failed compaction loses nothing: the journal holds every write.
        try:
            self._fold()
        except Exception as exc:
            # Not again before the journal has grown by another threshold: a full disk stays full a while.
            self._retry_at = self._journal_size + max(self._compact_after, self._main_size)
            logger.warning("could not compact the TinyDB store %s while %s: %s", self._path, why, exc)
        else:
            self._retry_at = 0

    # --- opening -------------------------------------------------------------------------------------------

    def _open(self) -> None:
        # Everything is read and checked before anything is changed: a corrupt store is left as it was.
        main_raw = _read_bytes(self._path)
        journal_raw = _read_bytes(self._journal_path)
        main_error: ValueError | None = None
        with collector_paused():
            try:
                data = decode_store(main_raw) or {}
            except ValueError as exc:
                data, main_error = {}, exc
            scan = _scan(journal_raw)
        if main_error is not None:
            self._corrupt_main(main_error)
        if scan.damage is not None:
            self._corrupt_journal(journal_raw, scan.good, scan.damage)
        for ops in scan.records:
            apply_ops(data, ops)
        for name, docs in data.items():
            data[name] = in_document_order(docs)
        if scan.torn:
            logger.warning(
                "discarded the torn last record of the journal %s (%d bytes without their newline: a write cut "
                "short by a crash, never acknowledged)",
                self._journal_path,
                scan.torn,
            )
        self._data = data
        self._main_size = 0 if main_error is not None else len(main_raw)
        self._finish_open(scan.good)

    def _open_read_only(self) -> None:
        # NAME, then the journal; then NAME must still be the file read first (see the module docstring).
        for _ in range(READ_ATTEMPTS):
            before = _identity(self._path)
            main_raw = _read_bytes(self._path)
            journal_raw = _read_bytes(self._journal_path)
            if _identity(self._path) == before:
                break
        else:
            raise TransientError(
                f"the TinyDB store {self._path} was compacted by its writer during each of {READ_ATTEMPTS} "
                f"attempts to read it; try again"
            )
        if before is None and not journal_raw:
            raise ConfigError(
                f"there is no TinyDB store at {self._path}: a store opened read-only must exist (a writer's "
                f"first write creates it)"
            )
        try:
            with collector_paused():
                data = decode_store(main_raw) or {}
        except NotTinyDBError as exc:
            raise ForeignStoreError(
                f"{self._path} is not a planflow store: it holds JSON that is not a TinyDB document ({exc}); "
                f"it was left untouched (planflow migrate --force adopts it)"
            ) from exc
        except ValueError as exc:
            raise CorruptStoreError(f"the TinyDB store {self._path} is corrupt: {exc}") from exc
        scan = _scan(journal_raw)
        if scan.damage is not None:
            raise CorruptStoreError(
                f"the journal {self._journal_path} of the TinyDB store is corrupt: {scan.damage}"
            )
        for ops in scan.records:
            apply_ops(data, ops)
        for name, docs in data.items():
            data[name] = in_document_order(docs)
        if scan.torn:
            logger.debug("left out the last record of %s, still being written", self._journal_path)
        self._data = data

    def _corrupt_main(self, cause: ValueError) -> None:
        message = f"the TinyDB store {self._path} is corrupt"
        if self._on_corrupt == "raise":
            raise CorruptStoreError(f"{message} and was left untouched: {cause}") from cause
        aside = aside_name(self._path)
        replace_retrying(
            self._path, aside, store=self._path, attempts=self._replace_attempts, delay=self._replace_delay
        )
        logger.warning(
            "%s (%s); moved it to %s and kept the intact records of its journal", message, cause, aside.name
        )

    def _corrupt_journal(self, raw: bytes, good: int, damage: str) -> None:
        message = f"the journal {self._journal_path} of the TinyDB store is corrupt"
        if self._on_corrupt == "raise":
            raise CorruptStoreError(f"{message} and was left untouched: {damage}")
        # The damaged end is copied aside before the journal is cut to its good part (at _open_journal): a crash
        # in between leaves the journal as it was, to be set aside again at the next open.
        aside = aside_name(self._journal_path)
        write_atomically(aside, raw[good:], attempts=self._replace_attempts, delay=self._replace_delay)
        logger.warning(
            "%s: %s; kept the records before it and moved the damaged rest (%d bytes) to %s",
            message,
            damage,
            len(raw) - good,
            aside.name,
        )

    def _finish_open(self, good: int) -> None:
        remove_stale_temps(self._path)
        self._open_journal(good)
        if self._journal_size:
            with self._compaction:
                self._fold_quietly("it was opening")

    def _open_journal(self, good: int) -> None:
        created = not self._journal_path.exists()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(self._journal_path, flags, 0o600)
            self._handles.fd = fd
            if os.fstat(fd).st_size > good:
                os.ftruncate(fd, good)
                os.fsync(fd)
            if created and os.name == "posix":  # pragma: no branch - NTFS logs the new entry
                fsync_folder(self._path.parent)
        except OSError as exc:
            raise StoreWriteError(f"cannot open the journal {self._journal_path}: {exc}") from exc
        self._journal_size = good

    # --- writing -------------------------------------------------------------------------------------------

    def _fd(self) -> int:
        fd = self._handles.fd
        if fd is None:
            raise StoreWriteError(f"the TinyDB store {self._path} is closed")
        return fd

    def _require_open(self) -> None:
        self._fd()
        if self._broken is not None:
            raise StoreWriteError(self._broken)

    def _append(self, line: bytes) -> None:
        self._require_open()
        fd = self._fd()
        try:
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except OSError as exc:
            self._undo_append(fd, exc)
            raise StoreWriteError(f"cannot write the journal {self._journal_path}: {exc}") from exc
        self._journal_size += len(line)
        if self._written_since_copy is not None:
            self._written_since_copy.append(line)

    def _undo_append(self, fd: int, cause: OSError) -> None:
        # A partial record left in place would sit before the next good one and read as corruption.
        try:
            os.ftruncate(fd, self._journal_size)
        except OSError:
            self._broken = (
                f"the journal {self._journal_path} could not be repaired after a failed write ({cause}); "
                f"close and reopen the store (the unfinished record is discarded then)"
            )


class _Handles:
    """What an open store holds: the journal's file descriptor and the store lock (none when read-only)."""

    def __init__(self, lock: StoreLock | None, journal: Path) -> None:
        self.lock = lock
        self.journal = journal
        self.fd: int | None = None
        #: Set by close(): the store holds nothing, so its journal and lock file go too.
        self.vacant = False

    def close(self) -> None:
        fd, self.fd = self.fd, None
        try:
            if fd is not None:
                os.close(fd)
            if self.vacant and self.lock is not None:
                # Still locked: no writer can have opened the journal meanwhile.
                discard(self.journal)
        finally:
            if self.lock is not None:
                self.lock.release(remove=self.vacant)


def read_store(path: str | os.PathLike[str]) -> StoreData:
    """What a journaled store holds right now, read without opening it (no lock, nothing written).

    The main file with its journal replayed, as the next open would see it (a torn last record left out): for
    inspecting a store that another process holds open.

    Raises:
        CorruptStoreError: The main file or the journal cannot be decoded.
    """
    main = Path(path)
    journal = main.with_name(main.name + JOURNAL_SUFFIX)
    try:
        data = decode_store(_read_bytes(main)) or {}
    except ValueError as exc:
        raise CorruptStoreError(f"the TinyDB store {main} cannot be read: {exc}") from exc
    scan = _scan(_read_bytes(journal))
    if scan.damage is not None:
        raise CorruptStoreError(f"the TinyDB store {main} cannot be read: its journal's {scan.damage}")
    for ops in scan.records:
        apply_ops(data, ops)
    return data


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """What tells one version of a file from the next (a replace makes a new file), or None when missing."""
    try:
        found = os.stat(path)
    except OSError:  # missing, or unreadable: then reading it says so
        return None
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise CorruptStoreError(f"cannot read the TinyDB store file {path}: {exc}") from exc


def _encode(ops: Sequence[Op], journal: Path) -> bytes:
    # JSON text never holds a raw newline (json.dumps escapes it), so a newline always ends a record.
    try:
        return json.dumps(ops, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # a lone surrogate is a UnicodeEncodeError
        raise ValidationError(f"cannot write to the TinyDB store of {journal}: {exc}") from exc


def _parse(line: bytes) -> list[Op] | str:
    """The operations of one complete record (without its newline), or why it is damaged."""
    if len(line) < 10 or not _RECORD_START.match(line):
        return "does not start with a checksum"
    text = line[9:]
    if int(line[:8], 16) != zlib.crc32(text):
        return "fails its checksum"
    try:
        ops: object = json.loads(text)
    except (ValueError, RecursionError):
        return "passes its checksum but is not JSON that can be read"
    if not isinstance(ops, list) or not all(map(_valid_op, cast("list[object]", ops))):
        return "passes its checksum but holds no valid list of operations"
    return cast("list[Op]", ops)


def _valid_op(op: object) -> bool:
    if not isinstance(op, list):
        return False
    parts = cast("list[object]", op)
    if len(parts) < 2 or not isinstance(parts[1], str):
        return False
    kind = parts[0]
    if kind in (CREATE_TABLE, DROP_TABLE):
        return len(parts) == 2
    if kind == DELETE:
        return len(parts) == 3 and isinstance(parts[2], str)
    return kind == PUT and len(parts) == 4 and isinstance(parts[2], str) and isinstance(parts[3], dict)


@dataclass(frozen=True, slots=True)
class _Scan:
    """What a journal holds: its intact records, where they end, and what follows them."""

    records: list[list[Op]]
    #: The length of the intact part: every record in it is complete and passes its checks.
    good: int
    #: Why the complete record at ``good`` is damaged (``None``: no damage).
    damage: str | None = None
    #: Bytes of an incomplete last record (no newline): a write a crash cut short, never acknowledged.
    torn: int = 0


def _scan(raw: bytes) -> _Scan:
    """Read a journal record by record, up to its end, its torn last record or its first damaged record."""
    records: list[list[Op]] = []
    start = 0
    while start < len(raw):
        end = raw.find(b"\n", start)
        if end < 0:
            return _Scan(records, start, torn=len(raw) - start)
        ops = _parse(raw[start:end])
        if isinstance(ops, str):
            return _Scan(records, start, f"record {len(records) + 1} (at byte {start}) {ops}")
        records.append(ops)
        start = end + 1
    return _Scan(records, start)


def _dump(data: StoreData) -> bytes:
    """``data`` as the JSON text of a TinyDB file, dumped a chunk of documents at a time.

    The text is what one ``json.dumps`` would give; dumping in chunks lets other threads (the add-on's timer
    threads, writing) run between them instead of waiting for a whole large store.
    """
    tables: list[bytes] = []
    for name, docs in data.items():
        items = list(docs.items())
        chunks = [
            json.dumps(dict(items[start : start + DUMP_CHUNK]), ensure_ascii=False, separators=(",", ":"))[
                1:-1
            ]
            for start in range(0, len(items), DUMP_CHUNK)
        ]
        text = json.dumps(name, ensure_ascii=False) + ":{" + ",".join(chunks) + "}"
        tables.append(text.encode("utf-8"))
    return b"{" + b",".join(tables) + b"}"


__all__ = ["DEFAULT_COMPACT_AFTER", "JOURNAL_SUFFIX", "JournaledStorage", "read_store"]
