"""``python -m planflow``: the ``planflow`` command."""

from planflow.cli import main

main()
