"""The Postgres test fixture (tests/pg.py) skips, fails or connects exactly as the README says.

Each case runs a one-test pytest session in a subprocess with its own environment: no server URL, no local
server (the conventional local URLs replaced by one on a closed port) and no Docker engine (DOCKER_HOST points
at a socket that does not exist), the same with PLANFLOW_REQUIRE_POSTGRES=1, a URL whose server does not
answer, and no URL on a machine where the conventional local server answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.pg import (
    HOW_TO_ENABLE,
    LOCAL_TIMEOUT,
    LOCAL_URLS,
    LOCAL_VARIABLE,
    REQUIRE_VARIABLE,
    URL_VARIABLE,
    find_local_server,
)

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = (
    "from tests.pg import postgres_provider, postgres_server_url, postgres_url, new_postgres_url, "
    "pytest_terminal_summary\n"
)
TEST = """
def test_needs_postgres(postgres_provider):
    assert postgres_provider.driver == "postgres"
"""


def run_session(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the one-test session in ``tmp_path`` with ``env`` over a cleaned environment."""
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_one.py").write_text(TEST)
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in (URL_VARIABLE, REQUIRE_VARIABLE, LOCAL_VARIABLE, "DOCKER_HOST")
    }
    base["PYTHONPATH"] = str(ROOT)
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


def local_server() -> str:
    """The first conventional local URL whose server lets us in; skips the test when none does."""
    for url in LOCAL_URLS:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return url
        except psycopg.Error:
            continue
    pytest.skip("no PostgreSQL server trusts the user postgres on 127.0.0.1:5432 here")


def test_without_a_url_the_tests_use_the_local_server_and_the_summary_names_it(tmp_path: Path) -> None:
    url = local_server()
    result = run_session(tmp_path, **{REQUIRE_VARIABLE: "1"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 passed" in output and "skipped" not in output
    assert f"PostgreSQL tests used {url} (found on the local port; {URL_VARIABLE} unset)" in output


def test_a_local_port_that_refuses_is_passed_over_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    url = local_server()
    monkeypatch.setenv(LOCAL_VARIABLE, f"postgresql://postgres@127.0.0.1:{closed_port()}/test {url}")
    started = time.perf_counter()
    found = find_local_server()
    assert found == url
    assert time.perf_counter() - started < LOCAL_TIMEOUT


def test_no_local_url_to_try_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCAL_VARIABLE, "")
    assert find_local_server() is None


def test_a_given_url_is_named_in_the_summary_without_its_password(tmp_path: Path) -> None:
    parts = local_server().split("@", 1)
    url = f"{parts[0]}:pw-hunter2@{parts[1]}"  # the local server trusts the user: the password is not checked
    result = run_session(tmp_path, **{URL_VARIABLE: url})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"PostgreSQL tests used {parts[0]}:***@{parts[1]} ({URL_VARIABLE})" in output
    assert "hunter2" not in output
