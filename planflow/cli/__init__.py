"""The ``planflow`` command line: ``demo``, ``migrate``, ``status``, ``workflows``, ``tree``, ``show``, ``copy``.

It needs the ``cli`` extra (``pip install 'planflow[cli]'``: typer and rich); ``import planflow`` never imports
this package, so planflow vendored without them (as the screen-reader add-on does) still works.
"""

from planflow.cli.app import app, main

__all__ = ["app", "main"]
