"""One writer per TinyDB store: a lock per resolved path in this process, and an OS lock across processes.

A second writer would keep its own copy of the data in memory and its own place in the journal, so writes of
one would silently undo writes of the other. The first writer to open a store holds it until it closes; any
other open (another provider or ``TinyDB`` in this process, another process) is refused with
:class:`~planflow.errors.StoreLockedError`.

Across processes the lock is an OS lock on ``NAME.lock`` beside the store: ``fcntl.flock`` on POSIX,
``msvcrt.locking`` on Windows, both non-blocking, both released by the OS when the process dies (so a crash
never leaves a store locked). The lock file stays empty. Its holder may remove it as it lets go (a store that
was never written leaves nothing behind): on POSIX it unlinks the file while it still holds the lock, and
whoever takes a lock checks, once it holds it, that the file it locked is still the one at ``NAME.lock``
(else it locked a removed file, and tries the new one); Windows refuses to delete a file another process has
open, so there the holder unlinks it after letting go, and leaves it when refused.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

from planflow.errors import StoreLockedError, StoreWriteError

if sys.platform != "win32":  # pragma: no branch - the Windows import is below, inside its own branch
    import fcntl

LOCK_SUFFIX = ".lock"

_held: dict[str, StoreLock] = {}
_held_guard = threading.Lock()


class StoreLock:
    """The write lock of one store, held from :meth:`acquire` until :meth:`release`."""

    def __init__(self, key: str, path: Path, fd: int) -> None:
        self._key = key
        self._fd: int | None = fd
        self._pid = os.getpid()
        self.path = path

    @classmethod
    def acquire(cls, store: Path) -> StoreLock:
        """Take the write lock of ``store``, or refuse.

        Raises:
            StoreLockedError: The store is open for writing in this process or in another one.
            StoreWriteError: The lock file cannot be created (read-only folder, permissions).
        """
        # One store reached through two spellings (a symlink, a relative path, another case on Windows) is
        # still one store.
        key = os.path.normcase(os.path.realpath(store))
        lock_path = store.with_name(store.name + LOCK_SUFFIX)
        with _held_guard:
            if key in _held:
                raise StoreLockedError(
                    f"the TinyDB store {store} is already open in this process; close the first TinyDB (or "
                    f"provider) on it, or share it, instead of opening the file twice"
                )
            while True:
                try:
                    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
                except OSError as exc:
                    raise StoreWriteError(
                        f"cannot create the lock file {lock_path} of the TinyDB store: {exc}"
                    ) from exc
                try:
                    _lock(fd)
                except OSError as exc:
                    os.close(fd)
                    raise StoreLockedError(
                        f"the TinyDB store {store} is open in another process (it holds {lock_path}); "
                        f"close that program first"
                    ) from exc
                if _still_there(fd, lock_path):
                    break
                # Its last holder removed the file between our open and our lock: lock the one there now.
                _unlock(fd)
                os.close(fd)
            lock = _held[key] = cls(key, lock_path, fd)
        return lock

    def release(self, *, remove: bool = False) -> None:
        """Give the lock back; releasing twice is harmless.

        Args:
            remove: Delete the lock file too (the store was never written: nothing of it is left behind).
        """
        with _held_guard:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            if _held.get(self._key) is self:  # pragma: no branch - only a forked child could find another
                del _held[self._key]
            # A forked child shares the parent's lock (one open file description): unlocking it there would
            # free the parent's store, so the child only closes its copy.
            owner = os.getpid() == self._pid
            try:
                if owner:  # pragma: no branch - the other side runs in forked children
                    if remove and sys.platform != "win32":
                        _discard(self.path)  # while still held: see the module docstring
                    _unlock(fd)
            finally:
                os.close(fd)
            if (
                remove and owner and sys.platform == "win32"
            ):  # pragma: no cover - Windows only; CI runs on POSIX
                with contextlib.suppress(OSError):  # another process has it open: it stays
                    os.unlink(self.path)


def _still_there(fd: int, path: Path) -> bool:
    """Whether ``path`` is still the file open as ``fd`` (its holder may have removed it meanwhile)."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (found.st_dev, found.st_ino)


def _discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _lock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover - Windows only; CI runs on POSIX
        import msvcrt

        # One byte at offset 0, non-blocking: OSError when another process holds it.
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover - Windows only; CI runs on POSIX
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


__all__ = ["LOCK_SUFFIX", "StoreLock"]
