"""The models as a type checker and a newcomer see them: ``evolve`` takes each field by name and type, and
enum fields given as their values come back as members."""

from __future__ import annotations

import dataclasses
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from planflow import ComponentType, ExecutionType, TaskState, TaskStatus, WorkflowState

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model", [TaskState, WorkflowState])
def test_evolve_takes_every_field_by_name_and_nothing_else(model: type[object]) -> None:
    parameters = inspect.signature(model.evolve).parameters  # type: ignore[attr-defined]
    named = [name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert named == [f.name for f in dataclasses.fields(model)]  # type: ignore[arg-type]


def test_evolve_changes_only_what_it_is_given() -> None:
    state = TaskState("t-1", "charge", "run-1", "checkout", agent_id="a")

    changed = state.evolve(status=TaskStatus.SUCCESS, output={"ok": True}, agent_id=None)

    assert changed == dataclasses.replace(
        state, status=TaskStatus.SUCCESS, output={"ok": True}, agent_id=None
    )
    assert state.status is TaskStatus.PENDING


def test_evolve_with_an_unknown_field_raises_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="stauts"):
        TaskState("t-1", "charge", "run-1", "checkout").evolve(stauts=TaskStatus.SUCCESS)  # type: ignore[call-arg]


def test_evolve_turns_enum_values_into_members() -> None:
    state = TaskState("t-1", "charge", "run-1", "checkout")

    changed = state.evolve(status="SUCCESS", component="agent", execution_type="parallel")  # type: ignore[arg-type]

    assert changed.status is TaskStatus.SUCCESS
    assert changed.component is ComponentType.AGENT
    assert changed.execution_type is ExecutionType.PARALLEL
    assert WorkflowState("run-1", "checkout").evolve(status="FAILED").status is TaskStatus.FAILED  # type: ignore[arg-type]


@pytest.mark.skipif(
    shutil.which("pyright", path=str(Path(sys.executable).parent)) is None, reason="no pyright"
)
def test_pyright_strict_catches_a_misspelt_field_and_wrongly_typed_values(tmp_path: Path) -> None:
    program = tmp_path / "newcomer.py"
    program.write_text(
        "from planflow import TaskState, TaskStatus\n"
        "state = TaskState('t-1', 'charge', 'run-1', 'checkout')\n"
        "state.evolve(stauts=TaskStatus.SUCCESS)\n"
        "state.evolve(status='done')\n"
        "state.evolve(version='1')\n"
        "ok: TaskState = state.evolve(status=TaskStatus.SUCCESS, output={'ok': True}, version=2)\n"
    )
    (tmp_path / "pyrightconfig.json").write_text('{"typeCheckingMode": "strict"}')
    done = subprocess.run(
        [str(Path(sys.executable).parent / "pyright"), "--pythonpath", sys.executable, str(program)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    errors = [line for line in done.stdout.splitlines() if " - error: " in line]
    assert [line.split(":")[1] for line in errors] == ["3", "4", "5"], done.stdout
    assert '"stauts"' in errors[0]
    assert "Literal['done']" in errors[1] and "TaskStatus" in errors[1]
    assert "Literal['1']" in errors[2] and "int" in errors[2]
