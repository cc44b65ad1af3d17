"""The wheel ships the migrations, the type marker and the license; the metadata says what an index page and a
resolver need (one version, URLs, classifiers, an SPDX license, extras that let the application choose how psycopg
finds libpq)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
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


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def test_the_version_is_written_once_in_the_package_and_read_from_there_by_the_build() -> None:
    project = _project()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())

    assert "version" not in project and project["dynamic"] == ["version"]
    assert config["tool"]["hatch"]["version"]["path"] == "planflow/version.py"
    assert re.search(r'^__version__ = "\d+\.\d+\.\d+"$', (ROOT / "planflow/version.py").read_text(), re.M)


def test_the_metadata_has_urls_classifiers_and_an_spdx_license() -> None:
    project = _project()
    classifiers = project["classifiers"]

    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert isinstance(classifiers, list)
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert "Framework :: AsyncIO" in classifiers
    # PEP 639: the expression replaces the license classifiers, which tools and indexes may refuse beside it.
    assert not any(c.startswith("License :: ") for c in classifiers)
    urls = project["urls"]
    assert isinstance(urls, dict) and {"Homepage", "Repository", "Changelog", "Issues"} <= set(urls)
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")


def test_the_postgres_extra_leaves_the_choice_of_libpq_to_the_application() -> None:
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)

    assert "psycopg>=3.2" in extras["postgres"] and not any("binary" in d for d in extras["postgres"])
    assert "psycopg[binary]>=3.2" in extras["postgres-binary"]
    # The tests (and ./scripts/test, .ci/run: '.[dev]') run on the self-contained wheels.
    assert any("postgres-binary" in d for d in extras["test"])


def test_the_readme_links_only_to_absolute_urls_so_they_work_on_a_package_index() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)

    assert targets, "the README has links"
    assert all(t.startswith(("https://", "http://", "#")) for t in targets), targets


def test_the_sdist_carries_the_changelog_and_the_license(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    import tarfile

    (sdist,) = tmp_path.glob("planflow-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"CHANGELOG.md", "LICENSE", "README.md", "pyproject.toml"} <= names
