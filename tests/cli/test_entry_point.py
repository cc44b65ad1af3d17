"""The entry point as a new user meets it: without the ``cli`` extra, ``--version``, and help that reads right."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import planflow
from tests.cli.helpers import SCRIPT, assert_fits
from tests.cli.helpers import planflow as run_planflow

#: Makes the CLI libraries missing from an interpreter, as in an install without the ``cli`` extra.
WITHOUT_CLI_EXTRA = """
import sys
from importlib.abc import MetaPathFinder

class Blocker(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"typer", "rich", "click"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
"""

COMMANDS = ["demo", "migrate", "status", "workflows", "tree", "show", "copy"]


@pytest.mark.parametrize("how", ["console script", "python -m planflow"])
def test_without_the_cli_extra_the_command_prints_the_pip_hint_in_one_line_and_exits_1(
    tmp_path: Path, how: str
) -> None:
    (tmp_path / "sitecustomize.py").write_text(WITHOUT_CLI_EXTRA)
    command = [str(SCRIPT)] if how == "console script" else [sys.executable, "-m", "planflow"]
    done = subprocess.run(
        [*command, "status"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr == (
        "planflow: error: the planflow command needs the 'typer' module, which is missing; "
        "install it with: pip install 'planflow[cli]'\n"
    )


def test_the_library_still_imports_without_the_cli_extra(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(WITHOUT_CLI_EXTRA)
    code = "import planflow, planflow.cli; print(planflow.open_provider('sqlite://:memory:').driver)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == "sqlite\n"


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    run = run_planflow("--version", cwd=tmp_path, script=True)

    assert run.code == 0, run.err
    assert run.out == f"planflow {planflow.__version__}\n"
    assert planflow.__version__ == version("planflow")


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_boolean_flags_without_a_value_and_fits_80_columns(
    tmp_path: Path, command: str | None
) -> None:
    run = run_planflow(*([command] if command else []), "--help", cwd=tmp_path, env={"COLUMNS": "80"})

    assert run.code == 0, run.err
    assert "<bool>" not in run.out and "BOOLEAN" not in run.out
    assert_fits(run.out)
    if command == "demo":
        # Help texts are rich markup: a "[default: ...]" written in one would vanish.
        words = " ".join(re.sub("│", " ", run.out).split())
        assert "(default 500); on a store of the add-on's records only (tinydb)" in words
        assert "number of task definitions (default 20)." in words
    flags = {None: ["--version", "--help"], "copy": ["--merge", "--json"], "tree": ["--all", "--json"]}
    for flag in flags.get(command, ["--help"]):
        # A flag's row goes straight from its name to its help text: no value placeholder between them.
        assert re.search(rf"│ +{flag} +[A-Z][a-z]", run.out), (flag, run.out)
