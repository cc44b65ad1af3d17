"""Every form of connection string libpq accepts opens a provider, and none shows its password when the
server refuses it: a local socket URL (``postgresql:///db``), key/value pairs, a password in the URL's user
part, in its query or among key/value pairs."""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from planflow import ConfigError, PlanflowError, WorkflowState, open_provider

pytestmark = pytest.mark.postgres

SOCKET_DIRECTORIES = ("/var/run/postgresql", "/tmp")


def socket_directory(params: dict[str, object]) -> str:
    """The directory of the test server's Unix socket; where it has none here (a container), its TCP host, so
    that the connection string keeps its form (no host before the path, the host as a parameter)."""
    port = str(params.get("port") or 5432)
    for directory in SOCKET_DIRECTORIES:
        if os.path.exists(os.path.join(directory, f".s.PGSQL.{port}")):
            return directory
    return str(params["host"])


def assert_password_absent(error: BaseException, password: str) -> None:
    """Neither the error nor anything chained to it (printed with its traceback) shows the password."""
    seen: BaseException | None = error
    while seen is not None:
        assert password not in str(seen) and password not in repr(seen), type(seen).__name__
        seen = seen.__cause__ or seen.__context__


def use(conninfo: str) -> None:
    with open_provider(conninfo) as provider:
        provider.workflows.upsert_state(WorkflowState("run-1", "checkout"))
        assert provider.workflows.get_state("run-1").workflow_id == "checkout"
        assert "***" in provider.config.location or "password" not in provider.config.location


def test_a_local_socket_url_with_three_slashes_opens_a_provider(postgres_url: str) -> None:
    params = conninfo_to_dict(postgres_url)
    directory = socket_directory(params)
    query = {key: str(value) for key, value in params.items() if key not in ("host", "hostaddr", "dbname")}
    query["host"] = directory
    url = f"postgresql:///{params['dbname']}?" + "&".join(
        f"{k}={quote(v, safe='/')}" for k, v in query.items()
    )
    use(url)


def test_key_value_pairs_open_a_provider(postgres_url: str) -> None:
    use(make_conninfo("", **conninfo_to_dict(postgres_url)))


def test_key_value_pairs_through_a_local_socket_open_a_provider(postgres_url: str) -> None:
    params = conninfo_to_dict(postgres_url)
    directory = socket_directory(params)
    use(make_conninfo("", **{**params, "host": directory}))


def refused_login(postgres_server_url: str) -> tuple[dict[str, str], str, str]:
    """The server's parameters with a role that does not exist; the role and a password."""
    params = {key: str(value) for key, value in conninfo_to_dict(postgres_server_url).items()}
    role = f"planflow_nobody_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    params["user"] = role
    params.pop("password", None)
    return params, role, password


def test_a_password_among_key_value_pairs_never_shows_when_the_login_is_refused(
    postgres_server_url: str,
) -> None:
    params, role, password = refused_login(postgres_server_url)
    with pytest.raises(PlanflowError) as caught:
        open_provider({"url": make_conninfo("", **params, password=password), "connect_timeout": 3})
    assert isinstance(caught.value, ConfigError), repr(caught.value)
    assert role in str(caught.value)
    assert_password_absent(caught.value, password)


def test_a_password_in_the_query_never_shows_when_the_login_is_refused(postgres_server_url: str) -> None:
    params, role, password = refused_login(postgres_server_url)
    host, port, dbname = params.pop("host"), params.pop("port", "5432"), params.pop("dbname")
    query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in {**params, "password": password}.items())
    with pytest.raises(PlanflowError) as caught:
        open_provider({"url": f"postgresql://{host}:{port}/{dbname}?{query}", "connect_timeout": 3})
    assert isinstance(caught.value, ConfigError), repr(caught.value)
    assert role in str(caught.value) and "***" in str(caught.value)
    assert_password_absent(caught.value, password)


def test_a_password_in_the_url_never_shows_when_the_login_is_refused(postgres_server_url: str) -> None:
    params, role, password = refused_login(postgres_server_url)
    url = f"postgresql://{role}:{password}@{params['host']}:{params.get('port', '5432')}/{params['dbname']}"
    with pytest.raises(PlanflowError) as caught:
        open_provider({"url": url, "connect_timeout": 3})
    assert isinstance(caught.value, ConfigError), repr(caught.value)
    assert role in str(caught.value) and "***" in str(caught.value)
    assert_password_absent(caught.value, password)
