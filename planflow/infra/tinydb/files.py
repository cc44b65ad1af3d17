"""The file operations both TinyDB storages build on: decoding a store, atomic replacement, temporary files.

A store is replaced atomically by writing a temporary file ``.NAME.<random>.tmp`` in the same folder, flushing
and fsyncing it and moving it onto the store with ``os.replace`` (then fsyncing the folder on POSIX, so the
rename itself is durable). Windows refuses ``os.replace`` while another process (an antivirus scanner, the
search indexer) briefly holds the target; that ``PermissionError`` is retried a bounded number of times.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import tempfile
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from planflow.errors import ConfigError, StoreWriteError, TransientError

logger = logging.getLogger("planflow.tinydb")

#: What TinyDB hands a storage: table name -> document id -> document.
StoreData = dict[str, dict[str, object]]

TEMP_SUFFIX = ".tmp"


def store_path(path: str | os.PathLike[str], on_corrupt: str, attempts: int, delay: float) -> Path:
    """The absolute path of a store, once the options every storage takes are checked.

    Raises:
        ConfigError: The folder does not exist, or an option is out of range.
    """
    store = Path(path).absolute()
    if not store.parent.is_dir():
        raise ConfigError(f"the folder of the TinyDB store {store} does not exist")
    if on_corrupt not in ("raise", "move_aside"):
        raise ConfigError(f"on_corrupt must be 'raise' or 'move_aside', not {on_corrupt!r}")
    if attempts < 1 or delay < 0:
        raise ConfigError(
            f"replace_attempts must be >= 1 and replace_delay >= 0, got {attempts!r} and {delay!r}"
        )
    return store


class NotTinyDBError(ValueError):
    """The file is JSON, but not a TinyDB document (an object of tables, each an object of documents)."""


def decode_store(raw: bytes) -> StoreData | None:
    """The database in ``raw``; ``None`` for an empty file.

    Raises:
        NotTinyDBError: ``raw`` is JSON but not a TinyDB document: not an object of tables, or a table not an
            object.
        ValueError: ``raw`` is not UTF-8 JSON (or nests deeper than the JSON parser can follow), or a document
            of a table is not an object.
    """
    # utf-8-sig: a file saved by a Windows editor may start with a byte order mark.
    text = raw.decode("utf-8-sig")
    if not text.strip():
        return None
    try:
        data: object = json.loads(text)
    except RecursionError as exc:
        raise ValueError(f"the JSON nests too deeply to be read ({exc})") from None
    if not isinstance(data, dict):
        raise NotTinyDBError(f"expected a JSON object of tables, found {type(data).__name__}")
    # JSON object keys are strings; the casts only tell the checker what json.loads already guarantees.
    tables = cast("dict[str, object]", data)
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise NotTinyDBError(
                f"table {name!r} is a {type(table).__name__}, not a JSON object of documents"
            )
        for doc_id, doc in cast("dict[str, object]", table).items():
            if not isinstance(doc, dict):
                raise ValueError(
                    f"document {doc_id!r} of table {name!r} is a {type(doc).__name__}, not an object"
                )
    return cast("StoreData", tables)


def temp_prefix(store: Path) -> str:
    """The name every temporary file of ``store`` starts with (it ends with :data:`TEMP_SUFFIX`)."""
    return f".{store.name}."


def replace_retrying(source: str | Path, target: Path, *, store: Path, attempts: int, delay: float) -> None:
    """``os.replace(source, target)``, retrying a ``PermissionError`` up to ``attempts`` tries in all.

    Raises:
        TransientError: Every attempt was refused; ``target`` is unchanged.
        OSError: Another failure, raised at once.
    """
    last_error: PermissionError | None = None
    for attempt in range(1, attempts + 1):
        try:
            os.replace(source, target)
        except PermissionError as exc:
            last_error = exc
            if attempt < attempts:
                time.sleep(delay)
        else:
            return
    raise TransientError(
        f"another process kept the TinyDB store {store} locked: renaming {source} to {target} was "
        f"refused {attempts} times; the store file is unchanged"
    ) from last_error


def write_atomically(
    store: Path, payload: bytes, *, attempts: int, delay: float, sync_every: int = 0
) -> None:
    """Replace ``store`` with ``payload``: a reader or a crash sees the old file or the new one, never a mix.

    ``sync_every`` (bytes) fsyncs the temporary file as it grows, so that a large write never leaves much
    unwritten data for another file's fsync to wait behind (ext4 flushes it all in order); 0 fsyncs once.

    Raises:
        TransientError: ``os.replace`` was refused past the retry budget; the old file is intact.
        StoreWriteError: Another OS error; the old file is intact and no temporary file remains.
    """
    try:
        fd, temp = tempfile.mkstemp(dir=store.parent, prefix=temp_prefix(store), suffix=TEMP_SUFFIX)
    except OSError as exc:
        raise StoreWriteError(f"cannot write the TinyDB store {store}: {exc}") from exc
    try:
        with open(fd, "wb") as handle:
            view = memoryview(payload)
            step = sync_every or len(view) or 1
            for start in range(0, len(view), step):
                handle.write(view[start : start + step])
                if sync_every:
                    handle.flush()
                    os.fsync(handle.fileno())
            handle.flush()
            os.fsync(handle.fileno())
        replace_retrying(temp, store, store=store, attempts=attempts, delay=delay)
    except OSError as exc:
        discard(temp)
        raise StoreWriteError(f"cannot write the TinyDB store {store}: {exc}") from exc
    except BaseException:
        # KeyboardInterrupt and TransientError too: a failed write must not leave its temp file behind.
        discard(temp)
        raise
    if os.name == "posix":  # pragma: no branch - Windows has no folder handle to fsync; NTFS logs the rename
        fsync_folder(store.parent)


def remove_stale_temps(store: Path) -> list[Path]:
    """Delete the temporary files a crashed write of ``store`` left behind; return those deleted.

    Only the process holding the store's lock may call this: another writer's temporary file in flight would
    look the same. A file that cannot be deleted now (Windows: a scanner holds it) is left for the next open.
    """
    removed: list[Path] = []
    # glob, unlike listdir, skips a folder it cannot read instead of raising: then nothing is removed.
    for stale in store.parent.glob(glob.escape(temp_prefix(store)) + "*" + TEMP_SUFFIX):
        try:
            os.unlink(stale)
        except OSError as exc:
            logger.warning("cannot remove the stale temporary file %s: %s", stale, exc)
        else:
            removed.append(stale)
    if removed:
        logger.info("removed %d stale temporary file(s) of the TinyDB store %s", len(removed), store)
    return removed


def aside_name(path: Path) -> Path:
    """Where a corrupt ``path`` is moved: ``NAME.corrupt-<UTC timestamp>`` beside it."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return path.with_name(f"{path.name}.corrupt-{stamp}")


def discard(temp: str | Path) -> None:
    """Delete ``temp`` if it exists."""
    with suppress(FileNotFoundError):
        os.unlink(temp)


def fsync_folder(folder: Path) -> None:
    """Make the entries of ``folder`` (a rename, a new file) durable (POSIX only)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "TEMP_SUFFIX",
    "NotTinyDBError",
    "StoreData",
    "aside_name",
    "decode_store",
    "discard",
    "fsync_folder",
    "remove_stale_temps",
    "replace_retrying",
    "store_path",
    "temp_prefix",
    "write_atomically",
]
