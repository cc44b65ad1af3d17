"""The wheel ships the migrations, the type marker and the license."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_migrations_of_every_sql_driver_and_py_typed(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("planflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for driver in ("sqlite", "postgres"):
        for sql in (ROOT / "migrations" / driver).glob("*.sql"):
            assert f"planflow/migrations/{driver}/{sql.name}" in names
    assert "planflow/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
