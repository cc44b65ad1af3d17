"""The Postgres test fixture (tests/pg.py) skips, fails or connects exactly as the README says.

Each case runs a one-test pytest session in a subprocess with its own environment: no server URL and no
Docker engine (DOCKER_HOST points at a socket that does not exist), the same with PLANFLOW_REQUIRE_POSTGRES=1,
and a URL whose server does not answer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.pg import HOW_TO_ENABLE, REQUIRE_VARIABLE, URL_VARIABLE

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = "from tests.pg import postgres_provider, postgres_server_url, postgres_url, new_postgres_url\n"
TEST = """
def test_needs_postgres(postgres_provider):
    assert postgres_provider.driver == "postgres"
"""


def run_session(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the one-test session in ``tmp_path`` with ``env`` over a cleaned environment."""
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_one.py").write_text(TEST)
    base = {k: v for k, v in os.environ.items() if k not in (URL_VARIABLE, REQUIRE_VARIABLE, "DOCKER_HOST")}
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


def test_without_a_server_or_docker_the_postgres_tests_skip_saying_how_to_enable_them(tmp_path: Path) -> None:
    result = run_session(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 skipped" in output
    assert "no Docker engine answers" in output
    assert HOW_TO_ENABLE.split(",")[0] in output


def test_require_postgres_turns_the_skip_into_a_failure(tmp_path: Path) -> None:
    result = run_session(tmp_path, **{REQUIRE_VARIABLE: "1"})
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
