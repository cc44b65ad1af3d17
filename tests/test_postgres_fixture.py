"""The Postgres test fixture (tests/pg.py) skips, fails or connects exactly as the README says.

Each case runs a one-test pytest session in a subprocess with its own environment: no server URL, no local
server (the conventional local URLs replaced by one on a closed port) and no Docker engine (DOCKER_HOST points
at a socket that does not exist), the same with PLANFLOW_REQUIRE_POSTGRES=1, a URL whose server does not
answer, a URL of the server in use listed as the local one, and, where a Docker engine answers and has an image
built by scripts/postgres-image, no URL and no local server: a container serves the tests and is removed after.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from planflow import redact_url
from tests.pg import (
    BUILT_IMAGES,
    HOW_TO_ENABLE,
    IMAGE_VARIABLE,
    LOCAL_TIMEOUT,
    LOCAL_VARIABLE,
    REQUIRE_VARIABLE,
    RUN_LABEL,
    RUN_VARIABLE,
    URL_VARIABLE,
    find_local_server,
    url_with_password,
)

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = 'pytest_plugins = ("tests.pg",)\n'
TEST = """
def test_needs_postgres(postgres_provider):
    assert postgres_provider.driver == "postgres"
"""


def run_session(tmp_path: Path, *, docker: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the one-test session in ``tmp_path`` with ``env`` over a cleaned environment.

    Docker is out of reach (DOCKER_HOST names a socket that does not exist) unless ``docker`` is true.
    """
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_one.py").write_text(TEST)
    cleared = (URL_VARIABLE, IMAGE_VARIABLE, REQUIRE_VARIABLE, LOCAL_VARIABLE, RUN_VARIABLE)
    base = {k: v for k, v in os.environ.items() if k not in cleared}
    base["PYTHONPATH"] = str(ROOT)
    if not docker:
        base["DOCKER_HOST"] = f"unix://{tmp_path / 'no-docker.sock'}"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q", "test_one.py"],
        check=False,
        cwd=tmp_path,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def closed_port() -> int:
    """A local TCP port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def no_local_server() -> dict[str, str]:
    """The environment of a machine where nothing answers on the conventional local port."""
    return {LOCAL_VARIABLE: f"postgresql://postgres@127.0.0.1:{closed_port()}/test"}


def test_without_a_server_or_docker_the_postgres_tests_skip_saying_how_to_enable_them(tmp_path: Path) -> None:
    result = run_session(tmp_path, **no_local_server())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 skipped" in output
    assert "no Docker engine answers" in output
    assert HOW_TO_ENABLE.split(",")[0] in output
    assert "PostgreSQL tests had no server:" in output


def test_require_postgres_turns_the_skip_into_a_failure(tmp_path: Path) -> None:
    result = run_session(tmp_path, **no_local_server(), **{REQUIRE_VARIABLE: "1"})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "skipped" not in output
    assert f"{REQUIRE_VARIABLE}=1 forbids skipping them" in output


def test_a_server_url_that_does_not_answer_fails_instead_of_skipping(tmp_path: Path) -> None:
    url = f"postgresql://planflow:s3cret-pw@127.0.0.1:{closed_port()}/test"
    result = run_session(tmp_path, **{URL_VARIABLE: url})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "the PostgreSQL test server does not answer" in output
    assert "skipped" not in output
    assert "s3cret-pw" not in output
    assert "PostgreSQL tests could not reach postgresql://planflow:***@127.0.0.1:" in output


def server_listed_as_local(postgres_server_url: str) -> dict[str, str]:
    """The environment of a machine whose conventional local server is the server in use."""
    return {LOCAL_VARIABLE: postgres_server_url}


def test_without_a_url_the_tests_use_the_local_server_and_the_summary_names_it(
    tmp_path: Path, postgres_server_url: str
) -> None:
    result = run_session(tmp_path, **server_listed_as_local(postgres_server_url), **{REQUIRE_VARIABLE: "1"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 passed" in output and "skipped" not in output
    assert re.search(
        rf"PostgreSQL tests used PostgreSQL \d+\.\d+ at {re.escape(redact_url(postgres_server_url))} "
        rf"\(found on the local port; {URL_VARIABLE} unset\)",
        output,
    ), output


def test_a_local_port_that_refuses_is_passed_over_at_once(
    monkeypatch: pytest.MonkeyPatch, postgres_server_url: str
) -> None:
    monkeypatch.setenv(
        LOCAL_VARIABLE, f"postgresql://postgres@127.0.0.1:{closed_port()}/test {postgres_server_url}"
    )
    started = time.perf_counter()
    found = find_local_server()
    assert found == postgres_server_url
    assert time.perf_counter() - started < LOCAL_TIMEOUT


def test_no_local_url_to_try_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCAL_VARIABLE, "")
    assert find_local_server() is None


def test_a_given_url_is_named_in_the_summary_without_its_password(
    tmp_path: Path, postgres_server_url: str
) -> None:
    url, password = url_with_password(postgres_server_url)
    result = run_session(tmp_path, **{URL_VARIABLE: url})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f" at {redact_url(url)} ({URL_VARIABLE})" in output
    assert "***@" in redact_url(url)
    assert password not in output


def docker_with_a_built_image() -> Any:
    """A client of the Docker engine here, which has an image built by scripts/postgres-image; else skip."""
    docker = pytest.importorskip("docker")
    try:
        client: Any = docker.from_env()
        client.ping()
    except Exception as exc:  # no engine here
        pytest.skip(f"no Docker engine answers ({type(exc).__name__})")
    if not any(client.images.list(name=image) for image in BUILT_IMAGES):
        pytest.skip(f"the Docker engine has none of {', '.join(BUILT_IMAGES)} (scripts/postgres-image 17)")
    return client


def test_without_a_url_or_local_server_a_container_serves_the_tests_and_is_removed(tmp_path: Path) -> None:
    client = docker_with_a_built_image()
    run = f"fixture-{uuid.uuid4().hex[:12]}"
    result = run_session(
        tmp_path, docker=True, **no_local_server(), **{REQUIRE_VARIABLE: "1", RUN_VARIABLE: run}
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 passed" in output and "skipped" not in output
    assert re.search(
        r"PostgreSQL tests used PostgreSQL \d+\.\d+ in container [0-9a-f]{12} \(planflow-postgres:\d+\) "
        rf"at postgresql://planflow:\*\*\*@127\.0\.0\.1:\d+/planflow \(no local server; {URL_VARIABLE} and "
        rf"{IMAGE_VARIABLE} unset\)",
        output,
    ), output
    assert client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run}"}) == []
