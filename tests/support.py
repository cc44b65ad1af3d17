"""Helpers that several test modules share (they were copied from module to module)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path


def reporter(topic: str) -> Callable[[str], None]:
    """A ``report(message)`` that prints ``[topic] message`` on a line of its own: what a test measured, shown
    by ``pytest -s`` (or ``-rP`` for the tests that passed)."""

    def report(message: str) -> None:
        print(f"\n[{topic}] {message}")

    return report


def fingerprint(path: Path) -> tuple[list[str], str, int]:
    """The files of the folder, the file's SHA-256 and its modification time: what must not change."""
    return (
        sorted(os.listdir(path.parent)),
        hashlib.sha256(path.read_bytes()).hexdigest(),
        path.stat().st_mtime_ns,
    )


def journal_of(path: Path) -> Path:
    """The journal of the TinyDB store ``path`` (JournaledStorage): beside it, named after it."""
    return path.with_name(path.name + ".journal")
