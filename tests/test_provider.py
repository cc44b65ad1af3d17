"""The Provider factory: lazy driver imports, Protocol-typed repositories, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from planflow import open_provider


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        env=None if env is None else {**os.environ, **env},
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


def test_importing_planflow_loads_the_models_and_errors_only_and_every_exported_name_resolves() -> None:
    result = _run(
        """
        import sys, planflow
        heavy = ("planflow.infra", "planflow.protocols", "planflow.async_protocols", "planflow.config", "json")
        print([m for m in heavy if m in sys.modules])
        missing = [name for name in planflow.__all__ if getattr(planflow, name, None) is None]
        print(missing, sorted(dir(planflow)) == sorted(planflow.__all__))
        from planflow import open_provider
        with open_provider("sqlite://:memory:") as provider:
            print(provider.metadata.get("nothing"))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["[]", "[] True", "None"]


def test_an_unknown_name_of_planflow_is_an_attribute_error() -> None:
    import planflow

    with pytest.raises(AttributeError, match="no attribute 'open_providr'"):
        planflow.open_providr  # type: ignore[attr-defined]  # noqa: B018


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
    assert (
        "pip install 'planflow[postgres-binary]' (or 'planflow[postgres]' beside a psycopg" in result.stdout
    )
    assert "secret" not in result.stdout


def test_psycopg_without_a_libpq_to_run_on_is_a_config_error_naming_both_extras(tmp_path: Path) -> None:
    # PSYCOPG_IMPL=c asks for psycopg's C build, which is not installed: as psycopg without any libpq wrapper.
    result = _run(
        """
        from planflow import open_provider, ConfigError
        try:
            open_provider("postgresql://u:secret@127.0.0.1:1/db")
        except ConfigError as exc:
            print("ConfigError:", exc)
        """,
        env={"PSYCOPG_IMPL": "c"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ConfigError: the postgres driver cannot load psycopg (")
    assert "planflow[postgres-binary]" in result.stdout and "secret" not in result.stdout


def test_repositories_are_typed_as_protocols_and_hide_the_driver(tmp_path: Path) -> None:
    import typing

    from planflow.infra.provider import Repositories
    from planflow.infra.registry import NAMES

    # Provider.tasks and the others are typed as the Protocols, never a driver class.
    served = [typing.get_type_hints(getattr(Repositories, name).fget)["return"] for name in NAMES]
    assert [kind.__name__ for kind in served] == [
        "TaskRepository",
        "WorkflowRepository",
        "AuthRepository",
        "ExecutionRepository",
        "MetadataRepository",
    ]
    with open_provider(f"sqlite:///{tmp_path / 'p.db'}") as provider:
        assert provider.driver == "sqlite"
        assert "sqlite" in repr(provider)


def test_tinydb_provider_serves_executions_and_names_what_it_does_not_serve(tmp_path: Path) -> None:
    import pytest

    from planflow import UnsupportedError

    with open_provider(f"tinydb:///{tmp_path / 'addon.json'}") as provider:
        assert provider.driver == "tinydb"
        assert provider.executions.list_tasks() == []
        for name in ("tasks", "workflows", "auth"):
            with pytest.raises(
                UnsupportedError, match=f"tinydb driver does not serve the {name} repository"
            ) as no:
                getattr(provider, name)
            # What it serves instead, and which driver to open for this repository.
            assert "it serves only executions (the PlanFlow add-on's" in str(no.value)
            assert f"for {name}, open a store of the sqlite driver (sqlite:///" in str(no.value)
            assert "postgres driver (postgresql://" in str(no.value)
        with pytest.raises(UnsupportedError, match="batch"), provider.transaction():
            pass
        assert provider.migrate() == []
        assert provider.migration_status() == []
        with pytest.raises(UnsupportedError, match="no transactions"):
            provider.run_in_transaction(lambda tx: None)


def test_tinydb_memory_provider_keeps_records_for_its_lifetime() -> None:
    from datetime import datetime

    from planflow import TaskOccurrence

    with open_provider("tinydb://memory") as provider:
        occurrence = TaskOccurrence("o1", "t1", datetime(2026, 1, 1, 9), "morning", None)
        provider.executions.add_occurrence(occurrence)
        assert provider.executions.list_occurrences("t1") == [occurrence]


def test_planflow_and_the_tinydb_path_work_without_sqlite3_and_psycopg(tmp_path: Path) -> None:
    result = _run(
        f"""
        import builtins, sys
        real_import = builtins.__import__
        def guarded(name, *args, **kwargs):
            if name.split(".")[0] in ("sqlite3", "_sqlite3", "psycopg", "psycopg_pool"):
                raise ImportError(f"No module named {{name!r}} (blocked by the test)", name=name)
            return real_import(name, *args, **kwargs)
        builtins.__import__ = guarded
        for blocked in ("sqlite3", "_sqlite3", "psycopg", "psycopg_pool"):
            sys.modules.pop(blocked, None)
        from datetime import datetime, timedelta
        from planflow import open_provider, TaskDefinition, RetryPolicy, ConfigError
        task = TaskDefinition("t1", "Water plants", None, None, datetime(2026, 1, 1), timedelta(days=1),
                              "high", ["morning"], RetryPolicy(2))
        with open_provider("tinydb:///{tmp_path / "addon.json"}") as provider:
            provider.executions.add_task(task)
        with open_provider("tinydb:///{tmp_path / "addon.json"}") as provider:
            assert provider.executions.get_task("t1") == task
        try:
            open_provider("sqlite://:memory:")
        except ConfigError as exc:
            print("sqlite refused:", exc)
        assert not any(m in sys.modules for m in ("sqlite3", "_sqlite3", "psycopg", "psycopg_pool"))
        print("tinydb ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "tinydb ok" in result.stdout
    assert "sqlite refused: the sqlite driver needs the 'sqlite3' module" in result.stdout
