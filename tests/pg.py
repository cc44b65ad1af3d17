"""PostgreSQL for the tests: one server per run, a fresh schema per test.

The server is the one in ``PLANFLOW_TEST_POSTGRES_URL`` when that is set; otherwise a server on the
conventional local port, when one answers there within a second (``postgresql://postgres@127.0.0.1:5432/test``,
then the ``postgres`` database; ``PLANFLOW_TEST_POSTGRES_LOCAL_URLS`` replaces that list, empty to skip the
look); otherwise a throwaway ``postgres:16-alpine`` container started through testcontainers when a Docker engine
answers; otherwise the tests that need it are skipped with a message saying how to enable them, or fail when
``PLANFLOW_REQUIRE_POSTGRES=1`` (CI sets it, so CI never skips them silently). The end of the test summary says
which server the Postgres tests used (hook ``pytest_terminal_summary``, imported by the conftest).

Each test gets its own schema, selected by the URL it is handed (``options=-csearch_path=<schema>``), so tests
run in parallel (pytest-xdist) without seeing each other's rows; the schema is dropped afterwards.

Fixtures (import them into a conftest):
    ``postgres_server_url``: session; the server's URL (its default schema: do not write there).
    ``new_postgres_url``: a factory; each call creates a fresh empty schema and returns a URL that selects it.
    ``postgres_url``: one fresh schema's URL.
    ``postgres_provider``: an open Provider on ``postgres_url`` (migrated), closed after the test.
"""

from __future__ import annotations

import atexit
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from planflow import Provider, open_provider, redact_url

URL_VARIABLE = "PLANFLOW_TEST_POSTGRES_URL"
REQUIRE_VARIABLE = "PLANFLOW_REQUIRE_POSTGRES"
LOCAL_VARIABLE = "PLANFLOW_TEST_POSTGRES_LOCAL_URLS"
#: Where a local server conventionally answers (the project's CI machines run one there, trusting ``postgres``).
LOCAL_URLS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://postgres@127.0.0.1:5432/postgres",
)
#: Seconds to reach a local server's port before moving on to testcontainers.
LOCAL_TIMEOUT = 1.0
IMAGE = "postgres:16-alpine"
HOW_TO_ENABLE = (
    f"set {URL_VARIABLE}=postgresql://user:password@host:5432/database to use a server, run one on "
    f"127.0.0.1:5432 that trusts the user postgres, or make a Docker engine available so that testcontainers "
    f"can start {IMAGE} (pip install 'planflow[test]')"
)

#: The server this process resolved: ``url`` and ``how`` it was found, or ``missing`` (why there is none).
_resolved: dict[str, str] = {}


def _required() -> bool:
    return os.environ.get(REQUIRE_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def _unavailable(reason: str) -> None:
    _resolved["missing"] = reason
    message = f"PostgreSQL tests need a server: {reason}; {HOW_TO_ENABLE}"
    if _required():
        pytest.fail(f"{message} ({REQUIRE_VARIABLE}=1 forbids skipping them)", pytrace=False)
    pytest.skip(message)


def _start_container() -> str:
    """Start a throwaway server with testcontainers; return its URL. Skips or fails when impossible."""
    try:
        import docker  # pyright: ignore[reportMissingTypeStubs]

        try:  # testcontainers >= 4.15 moved the module (the old name warns)
            from testcontainers.community.postgres import (  # pyright: ignore[reportMissingTypeStubs]
                PostgresContainer,
            )
        except ImportError:
            from testcontainers.postgres import PostgresContainer  # pyright: ignore[reportMissingTypeStubs]
    except ImportError:
        _unavailable(f"{URL_VARIABLE} is not set and testcontainers is not installed")
        raise AssertionError("unreachable") from None
    try:
        docker.from_env().ping()  # pyright: ignore[reportUnknownMemberType]
    except Exception as exc:  # any failure to reach the engine means "no Docker here"
        _unavailable(f"{URL_VARIABLE} is not set and no Docker engine answers ({type(exc).__name__})")
    container = PostgresContainer(IMAGE, driver=None)
    container.start()
    atexit.register(container.stop)
    url: str = container.get_connection_url()
    return url


def find_local_server() -> str | None:
    """The first conventional local URL whose server answers and lets us in, or ``None``."""
    listed = os.environ.get(LOCAL_VARIABLE)
    candidates = LOCAL_URLS if listed is None else tuple(listed.split())
    unreachable: set[tuple[str, int]] = set()
    for url in candidates:
        parts = urlsplit(url)
        address = (parts.hostname or "127.0.0.1", parts.port or 5432)
        if address in unreachable:
            continue
        try:
            with socket.create_connection(address, timeout=LOCAL_TIMEOUT):
                pass
        except OSError:
            unreachable.add(address)
            continue
        try:
            # libpq's shortest connect timeout is 2 s; the port answered, so a Postgres server answers at once.
            with psycopg.connect(url, connect_timeout=2):
                return url
        except psycopg.Error:
            continue  # another database, user or authentication: try the next, then testcontainers
    return None


def _find_server() -> tuple[str, str]:
    """The URL of a server to test against and how it was found (see the module docstring)."""
    given = os.environ.get(URL_VARIABLE, "").strip()
    if given:
        return given, URL_VARIABLE
    local = find_local_server()
    if local is not None:
        return local, f"found on the local port; {URL_VARIABLE} unset"
    return _start_container(), f"a testcontainers {IMAGE} container; {URL_VARIABLE} unset"


def server_url() -> str:
    """The URL of the test server, resolved once per process (one container even if several conftests ask)."""
    if "url" not in _resolved:
        _resolved["url"], _resolved["how"] = _find_server()
        _resolved.pop("missing", None)
    url = _resolved["url"]
    try:
        with psycopg.connect(url, connect_timeout=5):
            _resolved.pop("failed", None)
    except psycopg.Error as exc:
        _resolved["failed"] = "did not answer"
        # The URL was asked for explicitly: a server that does not answer is an error, never a skip.
        pytest.fail(f"the PostgreSQL test server does not answer ({URL_VARIABLE}): {exc}", pytrace=False)
    return url


def with_query(url: str, **params: str) -> str:
    """``url`` with query parameters set (``options`` is appended to any options the URL already has)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in params.items():
        query[key] = f"{query[key]} {value}" if key == "options" and query.get(key) else value
    # quote, not quote_plus: libpq does not read "+" as a space.
    return urlunsplit(
        (parts.scheme, parts.netloc, parts.path, urlencode(query, quote_via=quote), parts.fragment)
    )


def with_search_path(url: str, schema: str) -> str:
    """``url`` with ``options=-csearch_path=<schema>`` (after any options the URL already has)."""
    return with_query(url, options=f"-csearch_path={schema}")


def create_schema(base_url: str) -> str:
    """Create a fresh, uniquely named schema; return its name."""
    schema = f"pf_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return schema


def drop_schema(base_url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it."""
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """End the test summary with the server the Postgres tests used (its password replaced by ``***``)."""
    if "url" in _resolved:
        verb = "could not reach" if "failed" in _resolved else "used"
        terminalreporter.write_line(
            f"PostgreSQL tests {verb} {redact_url(_resolved['url'])} ({_resolved['how']})"
        )
    elif "missing" in _resolved:
        terminalreporter.write_line(f"PostgreSQL tests had no server: {_resolved['missing']}")


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The test server's URL; skips (or fails under PLANFLOW_REQUIRE_POSTGRES=1) when there is none."""
    return server_url()


@pytest.fixture
def new_postgres_url(postgres_server_url: str) -> Iterator[Callable[[], str]]:
    """A factory of URLs, each selecting a fresh empty schema; every schema is dropped after the test."""
    made: list[str] = []

    def make() -> str:
        schema = create_schema(postgres_server_url)
        made.append(schema)
        return with_search_path(postgres_server_url, schema)

    yield make
    for schema in made:
        drop_schema(postgres_server_url, schema)


@pytest.fixture
def postgres_url(new_postgres_url: Callable[[], str]) -> str:
    """A URL selecting a fresh empty schema of the test server."""
    return new_postgres_url()


@pytest.fixture
def postgres_provider(postgres_url: str) -> Iterator[Provider]:
    """A Provider on a fresh schema, migrated; closed after the test."""
    with open_provider(postgres_url) as provider:
        yield provider
