"""PostgreSQL for the tests: one server per pytest process, a fresh schema per test.

Where the server comes from, the first that applies:

1. ``PLANFLOW_TEST_POSTGRES_URL``: that server. It must answer: the tests fail, never skip, when it does not.
2. ``PLANFLOW_TEST_POSTGRES_IMAGE`` (or pytest's ``--postgres-image NAME``): a container of that image, started
   through testcontainers. It must start: the tests fail, never skip, when it does not.
3. A server on the conventional local port, when one answers there within a second and lets us in
   (``postgresql://postgres@127.0.0.1:5432/test``, then the ``postgres`` database;
   ``PLANFLOW_TEST_POSTGRES_LOCAL_URLS`` replaces that list, empty to skip the look).
4. A container, when a Docker engine answers: of the newest image ``scripts/postgres-image`` built here
   (``planflow-postgres:17``, then ``planflow-postgres:15``), else of the official ``postgres:17`` (pulled).
5. None: the tests that need one are skipped with a message saying how to enable them, or fail when
   ``PLANFLOW_REQUIRE_POSTGRES=1`` (CI sets it, so CI never skips them silently).

A container is started at the first test that needs it, once per pytest process (each pytest-xdist worker
starts its own), with a random password (``scram-sha-256``) on a random port (of 127.0.0.1 when the engine is
local). It is removed when the session ends, whether the tests passed or not (and at interpreter exit should the
session not end). It carries the label ``planflow.test-run`` with the value of ``PLANFLOW_TEST_RUN`` (when set) so
that a CI script can find anything a killed worker left. testcontainers' reaper (Ryuk) is off unless
``TESTCONTAINERS_RYUK_DISABLED`` says otherwise, since its image may not be pullable and the session removes its
containers itself; a local engine is reached on 127.0.0.1 through the published port
(``TESTCONTAINERS_CONNECTION_MODE=docker_host``, ``TC_HOST=127.0.0.1``) unless those variables say otherwise.

The end of the test summary names the server each process used: its version, the container (id and image) when
there is one, its URL with the password replaced by ``***`` and how it was found (hooks below, registered by
the conftest through ``pytest_plugins``; pytest-xdist workers hand their line to the controller).

Each test gets its own schema, selected by the URL it is handed (``options=-csearch_path=<schema>``), so tests
run in parallel (pytest-xdist) without seeing each other's rows; the schema is dropped afterwards.

Fixtures:
    ``postgres_server_url``: session; the server's URL (its default schema: do not write there).
    ``new_postgres_url``: a factory; each call creates a fresh empty schema and returns a URL that selects it.
    ``postgres_url``: one fresh schema's URL.
    ``postgres_provider``: an open Provider on ``postgres_url`` (migrated), closed after the test.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from planflow import Provider, open_provider, redact_url

URL_VARIABLE = "PLANFLOW_TEST_POSTGRES_URL"
IMAGE_VARIABLE = "PLANFLOW_TEST_POSTGRES_IMAGE"
IMAGE_OPTION = "--postgres-image"
REQUIRE_VARIABLE = "PLANFLOW_REQUIRE_POSTGRES"
LOCAL_VARIABLE = "PLANFLOW_TEST_POSTGRES_LOCAL_URLS"
RUN_VARIABLE = "PLANFLOW_TEST_RUN"
RUN_LABEL = "planflow.test-run"
#: Where a local server conventionally answers (the project's CI machines run one there, trusting ``postgres``).
LOCAL_URLS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://postgres@127.0.0.1:5432/postgres",
)
#: Seconds to reach a local server's port before moving on to a container.
LOCAL_TIMEOUT = 1.0
#: The images ``scripts/postgres-image`` builds, newest first; the first one present is the default.
BUILT_IMAGES = ("planflow-postgres:17", "planflow-postgres:15")
#: The default image where none of those was built (Docker pulls it from its registry).
OFFICIAL_IMAGE = "postgres:17"
CONTAINER_USER = "planflow"
CONTAINER_DATABASE = "planflow"
HOW_TO_ENABLE = (
    f"set {URL_VARIABLE}=postgresql://user:password@host:5432/database to use a server, run one on "
    f"127.0.0.1:5432 that trusts the user postgres, or make a Docker engine available so that testcontainers "
    f"can start {OFFICIAL_IMAGE} or an image built offline by scripts/postgres-image 17 (pip install "
    f"'planflow[test]')"
)
#: The key under which a pytest-xdist worker hands its summary line to the controller.
_SUMMARY_KEY = "planflow_postgres_summary"


@dataclass
class _Server:
    """The server this process resolved."""

    url: str
    how: str
    container: str = ""
    version: str = ""
    answered: bool = False


#: The server this process resolved, or why there is none; the container it started, if any.
_server: _Server | None = None
_missing: str | None = None
_missing_is_error = False
_container: Any = None
#: Summary lines handed over by pytest-xdist workers (on the controller).
_worker_lines: list[str] = []


def _required() -> bool:
    return os.environ.get(REQUIRE_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def _unavailable(reason: str, *, asked: bool = False) -> NoReturn:
    """Skip (fail when the server was asked for, or under PLANFLOW_REQUIRE_POSTGRES=1) for want of a server."""
    global _missing, _missing_is_error
    _missing, _missing_is_error = reason, asked
    message = f"PostgreSQL tests need a server: {reason}; {HOW_TO_ENABLE}"
    if asked:
        pytest.fail(message, pytrace=False)
    if _required():
        pytest.fail(f"{message} ({REQUIRE_VARIABLE}=1 forbids skipping them)", pytrace=False)
    pytest.skip(message)


def _docker_client(*, asked: bool) -> Any:
    """A client of a Docker engine that answers, with testcontainers importable; else skip or fail."""
    try:
        import docker  # pyright: ignore[reportMissingTypeStubs]
        import testcontainers  # noqa: F401  # pyright: ignore[reportMissingTypeStubs, reportUnusedImport]
    except ImportError:
        _unavailable("testcontainers is not installed", asked=asked)
    try:
        client: Any = docker.from_env()  # pyright: ignore[reportUnknownMemberType]
        client.ping()
    except Exception as exc:  # any failure to reach the engine means "no Docker here"
        _unavailable(f"no Docker engine answers ({type(exc).__name__})", asked=asked)
    return client


def _default_image(client: Any) -> str:
    """The newest image built by scripts/postgres-image that is present, else the official one."""
    from docker.errors import ImageNotFound  # pyright: ignore[reportMissingTypeStubs]

    for image in BUILT_IMAGES:
        try:
            client.images.get(image)
        except ImageNotFound:
            continue
        return image
    return OFFICIAL_IMAGE


def _engine_is_local() -> bool:
    """Whether the Docker engine is reached through a local socket (then its published ports are on loopback)."""
    return urlsplit(os.environ.get("DOCKER_HOST", "unix://")).scheme in ("unix", "npipe")


def _remove_container() -> None:
    """Remove the container this process started, if any (idempotent; run at session end and at exit)."""
    global _container
    container, _container = _container, None
    if container is not None:
        with contextlib.suppress(Exception):
            container.stop()


def _start_container(image: str | None) -> tuple[str, str]:
    """Start a container of ``image`` (``None``: the default image); return its URL and its description.

    Skips or fails as :func:`_unavailable` says when there is no engine or the default image cannot be had;
    fails when the container does not start.
    """
    global _container
    asked = image is not None
    client = _docker_client(asked=asked)
    if image is None:
        image = _default_image(client)
        try:
            client.images.get(image)
        except Exception:
            try:
                client.images.pull(image)
            except Exception as exc:  # no registry reachable: say how to build one offline
                _unavailable(
                    f"the Docker engine has no PostgreSQL image and cannot pull {image} ({type(exc).__name__}); "
                    f"build one offline with scripts/postgres-image 17",
                )
    try:  # testcontainers >= 4.15 moved the module (the old name warns)
        from testcontainers.community.postgres import (  # pyright: ignore[reportMissingTypeStubs]
            PostgresContainer,
        )
    except ImportError:
        from testcontainers.postgres import PostgresContainer  # pyright: ignore[reportMissingTypeStubs]
    from testcontainers.core.config import (  # pyright: ignore[reportMissingTypeStubs]
        ConnectionMode,
        testcontainers_config,
    )

    if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ:
        testcontainers_config.ryuk_disabled = True
    local = _engine_is_local()
    if local and "TESTCONTAINERS_CONNECTION_MODE" not in os.environ:
        testcontainers_config.connection_mode_override = ConnectionMode.docker_host
    if local and not testcontainers_config.tc_host_override:
        testcontainers_config.tc_host_override = "127.0.0.1"
    container: Any = PostgresContainer(
        image,
        username=CONTAINER_USER,
        password=secrets.token_hex(16),
        dbname=CONTAINER_DATABASE,
        driver=None,
    )
    if local:
        container.ports["5432"] = ("127.0.0.1",)  # a random port of loopback only
    run = os.environ.get(RUN_VARIABLE, "")
    container.with_kwargs(labels={RUN_LABEL: run} if run else {})
    _container = container
    atexit.register(_remove_container)
    try:
        container.start()
    except Exception as exc:
        logs = ""
        with contextlib.suppress(Exception):
            tail = container.get_wrapped_container().logs(tail=20).decode(errors="replace")
            logs = f"; its last log lines:\n{tail}"
        _remove_container()
        reason = f"a container of {image} did not start ({type(exc).__name__}: {exc}){logs}"
        _unavailable(reason, asked=True)
    url: str = container.get_connection_url()
    short_id: str = container.get_wrapped_container().short_id
    return url, f"in container {short_id} ({image})"


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
            continue  # another database, user or authentication: try the next, then a container
    return None


def _find_server() -> _Server:
    """The server to test against and how it was found (see the module docstring)."""
    given = os.environ.get(URL_VARIABLE, "").strip()
    if given:
        return _Server(given, URL_VARIABLE)
    image = os.environ.get(IMAGE_VARIABLE, "").strip()
    if image:
        url, container = _start_container(image)
        return _Server(url, f"{IMAGE_VARIABLE}; {URL_VARIABLE} unset", container)
    local = find_local_server()
    if local is not None:
        return _Server(local, f"found on the local port; {URL_VARIABLE} unset")
    url, container = _start_container(None)
    return _Server(url, f"no local server; {URL_VARIABLE} and {IMAGE_VARIABLE} unset", container)


def server_url() -> str:
    """The URL of the test server, resolved once per process (one container even if several conftests ask)."""
    global _server
    if _server is None:
        if _missing is not None:  # resolved already, to nothing: say so again without trying again
            _unavailable(_missing, asked=_missing_is_error)
        _server = _find_server()
    try:
        with psycopg.connect(_server.url, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            _server.version = str(row[0]).split()[0] if row else ""
            _server.answered = True
    except psycopg.Error as exc:
        _server.answered = False
        # The URL was asked for explicitly: a server that does not answer is an error, never a skip.
        pytest.fail(f"the PostgreSQL test server does not answer ({_server.how}): {exc}", pytrace=False)
    return _server.url


def summary_line() -> str | None:
    """What this process's Postgres tests used, for the end of the test summary (``None``: they never asked)."""
    if _server is not None:
        url = redact_url(_server.url)
        if not _server.answered:
            return f"PostgreSQL tests could not reach {url} ({_server.how})"
        where = f" {_server.container}" if _server.container else ""
        return f"PostgreSQL tests used PostgreSQL {_server.version}{where} at {url} ({_server.how})"
    if _missing is not None:
        return f"PostgreSQL tests had no server: {_missing}"
    return None


# Credentials ---------------------------------------------------------------------------------------------------


def with_login(url: str, *, user: str | None = None, password: str | None = None) -> str:
    """``url`` with its user and/or password replaced (host, port, database and query kept as they are)."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    name = user if user is not None else parts.username or ""
    secret = password if password is not None else parts.password
    login = quote(name, safe="") + (f":{quote(secret, safe='')}" if secret is not None else "")
    netloc = f"{login}@{hosts}" if login else hosts
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def with_database(url: str, database: str) -> str:
    """``url`` naming another database on the same server, as the same user."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{quote(database, safe='')}", parts.query, ""))


def url_with_password(url: str) -> tuple[str, str]:
    """``url`` carrying, in the URL itself, a password the server takes for its user; and that password.

    The password is the one the server in use asks for (from the URL, ``PGPASSWORD`` or a password file, as
    libpq found it), or, when the server asks for none (trust), a made-up one that it never checks. Either way
    the returned URL connects, so a test can look for the password in what planflow prints or records.
    """
    with psycopg.connect(url, connect_timeout=5) as conn:
        used = conn.info.password
    password = used or f"pw-{uuid.uuid4().hex}"
    return with_login(url, password=password), password


# Schemas -------------------------------------------------------------------------------------------------------


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


# Hooks ---------------------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--postgres-image NAME``: run the Postgres tests in a container of that image."""
    parser.addoption(
        IMAGE_OPTION,
        default=None,
        metavar="NAME",
        help=f"run the PostgreSQL tests in a container of this image (as {IMAGE_VARIABLE} does)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Hand ``--postgres-image`` on as ``PLANFLOW_TEST_POSTGRES_IMAGE`` (pytest-xdist workers inherit it)."""
    image = config.getoption(IMAGE_OPTION)
    if image:
        os.environ[IMAGE_VARIABLE] = str(image)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``postgres`` every test that uses the server, so that ``-m postgres`` selects each of them."""
    for item in items:
        if "postgres_server_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove this process's container; a pytest-xdist worker hands its summary line to the controller."""
    line = summary_line()
    workeroutput: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and line is not None:
        workeroutput[_SUMMARY_KEY] = line
    _remove_container()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Keep the summary line a pytest-xdist worker handed over (only called where pytest-xdist runs)."""
    del error
    line = getattr(node, "workeroutput", {}).get(_SUMMARY_KEY)
    if line:
        _worker_lines.append(str(line))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """End the test summary with the server(s) the Postgres tests used (passwords replaced by ``***``)."""
    own = summary_line()
    lines = [*([own] if own else []), *_worker_lines]
    for line in dict.fromkeys(lines):
        terminalreporter.write_line(line)


# Fixtures ------------------------------------------------------------------------------------------------------


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
