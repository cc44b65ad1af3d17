"""The ``planflow`` command line: ``config``, ``demo``, ``migrate``, ``status``, ``workflows``, ``tasks``, ``tree``,
``show``, ``purge``, ``copy``.

It needs the ``cli`` extra (``pip install 'planflow[cli]'``: typer and rich); ``import planflow`` never imports
this package, so planflow vendored without them (as the screen-reader add-on does) still works. Without them,
:func:`main` prints one line naming the extra to install and exits 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typer import Typer


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``planflow`` command (the console script and ``python -m planflow``).

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Raises:
        SystemExit: always; 0 on success, 1 after a planflow error or without the ``cli`` extra (one line on
            stderr, no traceback), 2 on bad usage, 130 after Ctrl-C.
    """
    try:
        from planflow.cli.app import main as run
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing or missing == "planflow":
            raise  # a bug of planflow's own, not a missing extra
        print(
            f"planflow: error: the planflow command needs the {missing!r} module, which is missing; "
            "install it with: pip install 'planflow[cli]'",
            file=sys.stderr,
        )
        sys.exit(1)
    run(argv)


def __getattr__(name: str) -> Typer:
    # ``planflow.cli.app`` (the typer application) is imported only when asked for, so that ``main`` can
    # report a missing extra instead of failing at import.
    if name == "app":
        from planflow.cli.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["main"]
