"""The Provider factory: lazy driver imports, Protocol-typed repositories, clear errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from planflow import Provider, open_provider


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )


def test_importing_planflow_imports_no_database_driver_or_cli_library() -> None:
    result = _run(
        """
        import sys, planflow
        loaded = [m for m in ("sqlite3", "psycopg", "psycopg_pool", "tinydb", "typer", "rich", "click") if m in sys.modules]
        print(loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_missing_driver_dependency_fails_only_when_chosen_naming_the_extra(tmp_path: Path) -> None:
    result = _run(
        f"""
        import sys
        sys.modules["psycopg"] = None  # as if the postgres extra were not installed
        from planflow import open_provider, ConfigError
        with open_provider("sqlite:///{tmp_path / "ok.db"}") as p:
            print("sqlite ok")
        try:
            open_provider("postgresql://u:secret@127.0.0.1:1/db")
        except ConfigError as exc:
            print("ConfigError:", exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "sqlite ok" in result.stdout
    assert "pip install 'planflow[postgres]'" in result.stdout
    assert "secret" not in result.stdout


def test_repositories_are_typed_as_protocols_and_hide_the_driver(tmp_path: Path) -> None:
    import typing

    hints = typing.get_type_hints(Provider.tasks.fget)  # type: ignore[union-attr]
    assert hints["return"].__name__ == "TaskRepository"
    with open_provider(f"sqlite:///{tmp_path / 'p.db'}") as provider:
        assert provider.driver == "sqlite"
        assert "sqlite" in repr(provider)
