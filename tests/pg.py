"""PostgreSQL for the tests: one server per run, a fresh schema per test.

The server is the one in ``PLANFLOW_TEST_POSTGRES_URL`` when that is set; otherwise a throwaway
``postgres:16-alpine`` container started through testcontainers when a Docker engine answers; otherwise the
tests that need it are skipped with a message saying how to enable them, or fail when
``PLANFLOW_REQUIRE_POSTGRES=1`` (CI sets it, so CI never skips them silently).

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
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from planflow import Provider, open_provider

URL_VARIABLE = "PLANFLOW_TEST_POSTGRES_URL"
REQUIRE_VARIABLE = "PLANFLOW_REQUIRE_POSTGRES"
IMAGE = "postgres:16-alpine"
HOW_TO_ENABLE = (
    f"set {URL_VARIABLE}=postgresql://user:password@host:5432/database to use a server, or make a Docker engine "
    f"available so that testcontainers can start {IMAGE} (pip install 'planflow[test]')"
)

_resolved: dict[str, str] = {}


def _required() -> bool:
    return os.environ.get(REQUIRE_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def _unavailable(reason: str) -> None:
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


def server_url() -> str:
    """The URL of the test server, resolved once per process (one container even if several conftests ask)."""
    if "url" not in _resolved:
        _resolved["url"] = os.environ.get(URL_VARIABLE, "").strip() or _start_container()
    url = _resolved["url"]
    try:
        with psycopg.connect(url, connect_timeout=5):
            pass
    except psycopg.Error as exc:
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
