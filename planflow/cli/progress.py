"""Progress bars of the long commands (demo, copy, and purge once it exists): counts, rate, elapsed and ETA.

Every command draws its bars with :func:`progress_columns`, so they read the same everywhere and fit an
80-column terminal: ``copy tasks ━━━━━━━━━━ 2,000/20,000 1,850/s 0:00:01 eta 0:00:09``.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class CountColumn(ProgressColumn):
    """``done/total`` with thousands separators (``2,000/20,000``)."""

    def render(self, task: Task) -> Text:
        """The counts of ``task``."""
        total = "?" if task.total is None else f"{int(task.total):,}"
        return Text(f"{int(task.completed):,}/{total}", style="progress.download")


class RateColumn(ProgressColumn):
    """Records per second: rich's running estimate while the phase runs, the phase's average once done."""

    def render(self, task: Task) -> Text:
        """The rate of ``task``; ``-/s`` until there is an estimate."""
        speed = task.finished_speed or task.speed
        if speed is None and task.finished and task.elapsed:
            speed = task.completed / task.elapsed
        return Text("-/s" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")


def progress_columns() -> tuple[ProgressColumn, ...]:
    """The columns of every planflow progress bar: phase, bar, counts, rate, elapsed time and ETA."""
    return (
        TextColumn("{task.description}"),
        BarColumn(bar_width=None),
        CountColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta", style="progress.remaining"),
        TimeRemainingColumn(),
    )


class RichProgress:
    """A rich progress display with one line per phase; a :class:`~planflow.cli.copy.CopyProgress`.

    Use it as a context manager. The display starts with the first line, so a command that fails before any
    work prints nothing; phases of no records get no line; with ``enabled=False`` nothing is shown at all.
    """

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self._progress = Progress(*progress_columns(), console=console, disable=not enabled)
        self._lines: dict[str, TaskID] = {}
        self._started = False

    def start(self, phase: str, total: int) -> None:
        """Add the line of ``phase``, out of ``total`` (none when ``total`` is 0)."""
        if total and phase not in self._lines:
            if not self._started:
                self._started = True
                self._progress.start()
            self._lines[phase] = self._progress.add_task(phase, total=total)

    def advance(self, phase: str, count: int) -> None:
        """Move the line of ``phase`` forward by ``count``."""
        if phase in self._lines:
            self._progress.advance(self._lines[phase], count)

    def update(self, phase: str, completed: int, total: int) -> None:
        """Set the line of ``phase`` to ``completed`` out of ``total`` (thread-safe once the line exists)."""
        self.start(phase, total)
        if phase in self._lines:
            self._progress.update(self._lines[phase], completed=completed, total=total)

    def stop(self) -> None:
        """Stop the display, leaving the lines as they are (stopping twice is harmless)."""
        if self._started:
            self._started = False
            self._progress.stop()

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["CountColumn", "RateColumn", "RichProgress", "progress_columns"]
