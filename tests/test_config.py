"""Config from objects, mappings, URLs and the environment; passwords never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from planflow import ConfigError, PlanflowConfig, open_provider, redact_url, resolve_config
from planflow.config import config_from_env, config_from_url


def test_sqlite_urls() -> None:
    assert resolve_config("sqlite:///rel/path.db").path == "rel/path.db"
    assert resolve_config("sqlite:////abs/path.db").path == "/abs/path.db"
    assert resolve_config("sqlite://:memory:").is_memory
    assert resolve_config("sqlite:///x.db?busy_timeout=2.5").busy_timeout == 2.5


def test_tinydb_and_postgres_urls() -> None:
    assert resolve_config("tinydb://memory").is_memory
    assert resolve_config("tinydb:///store.json").path == "store.json"
    config = resolve_config("postgresql://u:pw@db.example:5433/app?sslmode=require&pool_max_size=4")
    assert (config.driver, config.pool_max_size) == ("postgres", 4)
    assert config.url == "postgresql://u:pw@db.example:5433/app?sslmode=require"
    assert resolve_config("postgres://u@h/db").driver == "postgres"


def test_mapping_and_object() -> None:
    config = resolve_config(
        {"driver": "sqlite", "path": "m.db", "retry": {"max_attempts": 3}, "auto_migrate": "no"}
    )
    assert (config.path, config.retry.max_attempts, config.auto_migrate) == ("m.db", 3, False)
    same = PlanflowConfig(driver="sqlite", path="m.db")
    assert resolve_config(same) is same
    assert resolve_config({"url": "sqlite:///u.db", "busy_timeout": 1}).busy_timeout == 1.0


def test_environment_url_and_discrete_settings() -> None:
    config = config_from_env({"PLANFLOW_DATABASE_URL": "sqlite:///env.db", "PLANFLOW_DB_BUSY_TIMEOUT": "3"})
    assert config is not None and (config.path, config.busy_timeout) == ("env.db", 3.0)
    discrete = config_from_env(
        {
            "PLANFLOW_DB_HOST": "h",
            "PLANFLOW_DB_USER": "u",
            "PLANFLOW_DB_PASSWORD": "p@ss word",
            "PLANFLOW_DB_NAME": "d",
        }
    )
    assert discrete is not None and discrete.driver == "postgres"
    assert discrete.url == "postgresql://u:p%40ss%20word@h:5432/d"
    assert config_from_env({}) is None


def test_no_config_at_all_means_a_sqlite_file_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in __import__("os").environ if n.startswith("PLANFLOW_D")]:
        monkeypatch.delenv(name)
    with open_provider() as provider:
        assert provider.driver == "sqlite"
    assert (tmp_path / "planflow.db").exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("mysql://u@h/db", "unknown driver 'mysql'.*valid drivers: sqlite, postgres, tinydb"),
        ({"driver": "oracle"}, "unknown driver 'oracle'; valid drivers: sqlite, postgres, tinydb"),
        ("not a url", "malformed URL.*accepted: sqlite:///"),
        ("sqlite://relative-without-slash.db", "malformed URL"),
        ({"driver": "sqlite", "bogus": 1}, "unknown setting 'bogus'"),
        ({"driver": "sqlite", "busy_timeout": "soon"}, "busy_timeout"),
        ({"driver": "sqlite", "busy_timeout": -1}, "busy_timeout must be a finite number of seconds > 0"),
        ({"driver": "sqlite", "pool_min_size": 5, "pool_max_size": 2}, "pool sizes"),
        ({"driver": "postgres"}, "needs a url"),
        (42, "a config must be"),
    ],
)
def test_bad_config_is_a_config_error_saying_what_is_accepted(source: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(source)  # type: ignore[arg-type]


def test_password_never_appears_in_repr_or_errors() -> None:
    config = resolve_config("postgresql://user:s3cr3t@host:5432/db")
    assert "s3cr3t" not in repr(config) and "s3cr3t" not in str(config) and "s3cr3t" not in config.location
    with pytest.raises(ConfigError) as info:
        resolve_config("mysql://user:s3cr3t@host/db")
    assert "s3cr3t" not in str(info.value)
    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert redact_url("host=h password='a b' user=u") == "host=h password=*** user=u"
    assert redact_url("postgresql://h/db?password=pw&x=1") == "postgresql://h/db?password=***&x=1"


def test_postgres_options_with_spaces_reach_the_driver_intact() -> None:
    config = resolve_config("postgresql://u@h/db?options=-csearch_path%3Dx%20-cstatement_timeout%3D5")
    assert config.url == "postgresql://u@h/db?options=-csearch_path%3Dx%20-cstatement_timeout%3D5"


@pytest.mark.parametrize("name", ["busy_timeout", "connect_timeout", "pool_timeout"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan", "inf", "-inf"])
def test_non_finite_timeouts_are_config_errors(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        resolve_config({"driver": "sqlite", "path": "x.db", name: value})
    with pytest.raises(ConfigError, match=name):
        resolve_config(f"sqlite:///x.db?{name}={value}")


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://u:pw-7731@[::1:5432/db", "pw-7731"),
        ("postgresql://u:s3cret@host:notaport/db", "s3cret"),
    ],
)
def test_an_unparseable_postgres_url_is_a_config_error_that_does_not_echo_it(url: str, secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config(url)
    assert secret not in str(caught.value)
    assert "postgresql://user:pw@host:5432/db" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://alice:my secret words@db.example/x", "my secret words"),
        ("postgresql://alice:p@ss@word@db.example/x", "p@ss@word"),
        ("postgresql://alice:a/b?c@db.example/x", "a/b?c"),
        ("postgresql://alice@db.example/x?password=hunter2", "hunter2"),
    ],
)
def test_passwords_with_unencoded_characters_never_show(url: str, secret: str) -> None:
    try:
        config = resolve_config(url)
    except ConfigError as exc:  # unparseable as written: refused, and not echoed either
        shown = str(exc) + redact_url(url)
    else:
        shown = repr(config) + redact_url(url) + config.location
    for part in {secret, *secret.split("@"), *secret.split(" ")}:
        if len(part) > 2:
            assert part not in shown, shown


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg", "postgres+psycopg"])
def test_postgres_urls_in_every_common_spelling_choose_the_postgres_driver(scheme: str) -> None:
    config = resolve_config(f"{scheme}://u:pw@localhost:5433/db?sslmode=disable")
    assert config.driver == "postgres"
    assert config.url is not None and config.url.startswith("postgresql://u:pw@localhost:5433/db")


def test_a_file_url_without_a_path_explains_the_slash_rule() -> None:
    with pytest.raises(ConfigError, match="three slashes") as caught:
        resolve_config("tinydb://")
    assert "sqlite:///path/to.db" in str(caught.value)


def test_sqlite_without_a_path_is_sqlalchemys_in_memory_database() -> None:
    config = resolve_config("sqlite://")
    assert config.driver == "sqlite" and config.is_memory
    with open_provider("sqlite://") as provider:
        assert provider.workflows.list_states().items == []


@pytest.mark.parametrize(
    ("given", "suggested"),
    [
        ("nosuch.db", "sqlite:///nosuch.db"),
        ("data/state.sqlite3", "sqlite:///data/state.sqlite3"),
        ("/var/lib/planflow.db", "sqlite:////var/lib/planflow.db"),
        ("addon.json", "tinydb:///addon.json"),
    ],
)
def test_a_plain_file_path_is_refused_with_the_url_that_names_it(given: str, suggested: str) -> None:
    with pytest.raises(ConfigError, match="is a file path, not a URL") as caught:
        resolve_config(given)
    assert f"did you mean {suggested}?" in str(caught.value)


def test_a_multi_host_url_for_failover_is_accepted_and_its_password_masked() -> None:
    url = "postgresql://app:s3cret@db-a:5432,db-b:5433/state?target_session_attrs=read-write"
    config = config_from_url(url)
    assert config.driver == "postgres"
    assert config.url == url
    assert "s3cret" not in repr(config)


def test_a_multi_host_url_with_a_bad_port_is_a_config_error_that_does_not_echo_it() -> None:
    with pytest.raises(ConfigError, match="port 'x'") as raised:
        config_from_url("postgresql://app:s3cret@db-a:5432,db-b:x/state")
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:///test",
        "postgresql:///test?sslmode=disable",
        "postgresql://%2Fvar%2Frun%2Fpostgresql/test",
        "postgresql://u@/test?host=/var/run/postgresql",
    ],
)
def test_every_libpq_url_form_is_accepted_as_written(url: str) -> None:
    config = resolve_config(url)
    assert (config.driver, config.url, config.location) == ("postgres", url, url)


def test_a_local_socket_url_keeps_its_three_slashes_when_settings_leave_its_query() -> None:
    config = resolve_config("postgres:///test?pool_max_size=3&sslmode=disable")
    assert (config.url, config.pool_max_size) == ("postgresql:///test?sslmode=disable", 3)
    assert resolve_config("postgresql:///test?pool_max_size=3").url == "postgresql:///test"


def test_a_local_socket_url_with_a_password_is_accepted_and_redacted() -> None:
    config = resolve_config("postgresql://app:s3cret@/test?host=/var/run/postgresql")
    assert config.url == "postgresql://app:s3cret@/test?host=/var/run/postgresql"
    assert config.location == "postgresql://app:***@/test?host=/var/run/postgresql"
    assert "s3cret" not in repr(config)


def test_libpq_key_value_strings_are_accepted_where_a_url_is() -> None:
    config = resolve_config("host=/tmp dbname=x")
    assert (config.driver, config.url) == ("postgres", "host=/tmp dbname=x")
    assert config_from_url("host=/tmp dbname=x", pool_max_size=3).pool_max_size == 3
    mapped = resolve_config({"url": "host=db.example port=5433 dbname=app user=u", "pool_max_size": 2})
    assert (mapped.driver, mapped.pool_max_size) == ("postgres", 2)
    from_env = config_from_env({"PLANFLOW_DATABASE_URL": "host=/tmp dbname=x"})
    assert from_env is not None and from_env.url == "host=/tmp dbname=x"


@pytest.mark.parametrize(
    ("conninfo", "secret"),
    [
        ("host=/tmp dbname=x password=s3cr3t-kv", "s3cr3t-kv"),
        ("host=/tmp dbname=x password='s3cr3t kv'", "s3cr3t kv"),
        ("postgresql://u:s3cr3t-url@h/db", "s3cr3t-url"),
        ("postgresql://u@h/db?password=s3cr3t-query", "s3cr3t-query"),
    ],
)
def test_a_password_in_any_form_is_redacted_in_repr_and_location(conninfo: str, secret: str) -> None:
    config = resolve_config(conninfo)
    assert config.driver == "postgres"
    assert secret not in repr(config) and secret not in config.location and "***" in config.location


@pytest.mark.parametrize(
    ("conninfo", "secret"),
    [
        ("host=/tmp dbname=x password=s3cr3t-kv bogus=1", "s3cr3t-kv"),
        ("host=/tmp password='s3cr3t kv' dbname=x bogus=1", "s3cr3t kv"),
        ("postgresql://u:s3cr3t-url@h/db?bogus=1", "s3cr3t-url"),
        ("postgresql://u@h/db?password=s3cr3t-query&bogus=1", "s3cr3t-query"),
        ("postgresql://u:s3cr3t url@h/db", "s3cr3t url"),
        ("postgresql://u:s3cr3t%20url@[::1/db", "s3cr3t url"),
        ("postgresql://u@h:5432,h2:x/db?password=s3cr3t-query", "s3cr3t-query"),
    ],
)
def test_a_connection_string_libpq_refuses_is_a_config_error_without_its_password(
    conninfo: str, secret: str
) -> None:
    with pytest.raises(ConfigError, match="malformed PostgreSQL URL") as caught:
        resolve_config(conninfo)
    shown = str(caught.value)
    for spelling in (secret, secret.replace(" ", "%20")):
        assert spelling not in shown, shown


# Reads on standbys (read_url, max_staleness, standby_wait) -----------------------------------------------------


def test_read_url_and_its_bounds_come_from_objects_mappings_urls_and_the_environment() -> None:
    standby = "postgresql://app@standby-a,standby-b/app"
    assert (
        PlanflowConfig(driver="postgres", url="postgresql://app@db/app", read_url=standby).read_url == standby
    )
    mapped = resolve_config(
        {"url": "postgresql://app@db/app", "read_url": standby, "max_staleness": "2.5", "standby_wait": 0}
    )
    assert (mapped.read_url, mapped.max_staleness, mapped.standby_wait) == (standby, 2.5, 0.0)
    from_url = resolve_config(
        "postgresql://app@db/app?read_url=postgresql%3A%2F%2Fapp%40standby%2Fapp&max_staleness=1&standby_wait=0.05"
    )
    assert (from_url.read_url, from_url.max_staleness, from_url.standby_wait) == (
        "postgresql://app@standby/app",
        1.0,
        0.05,
    )
    assert from_url.url == "postgresql://app@db/app"  # the settings left the URL given to libpq
    env = config_from_env(
        {
            "PLANFLOW_DATABASE_URL": "postgresql://app@db/app",
            "PLANFLOW_DB_READ_URL": "host=standby dbname=app",
            "PLANFLOW_DB_MAX_STALENESS": "10",
            "PLANFLOW_DB_STANDBY_WAIT": "0.2",
        }
    )
    assert env is not None
    assert (env.read_url, env.max_staleness, env.standby_wait) == ("host=standby dbname=app", 10.0, 0.2)
    default = resolve_config("postgresql://app@db/app")
    assert (default.read_url, default.max_staleness, default.standby_wait) == (None, 5.0, 0.1)


@pytest.mark.parametrize(
    "read_url",
    [
        "postgresql://app:s3cr3t@standby/app",
        "postgres+psycopg://app:s3cr3t@standby-a,standby-b/app",
        "host=standby dbname=app password=s3cr3t",
    ],
)
def test_the_password_of_read_url_never_appears_in_repr(read_url: str) -> None:
    config = resolve_config({"url": "postgresql://app:other@db/app", "read_url": read_url})
    assert "s3cr3t" not in repr(config) and "other" not in repr(config)
    assert "read_url=" in repr(config)


@pytest.mark.parametrize(
    ("read_url", "message"),
    [
        ("mysql://app:s3cr3t@standby/app", "read_url 'mysql://app:***@standby/app' is not a PostgreSQL URL"),
        ("standby", "read_url: malformed URL 'standby'"),
        ("postgresql://app:s3cr3t@standby:99999/app", "read_url: malformed PostgreSQL URL (port '99999'"),
        ("", "read_url must be a PostgreSQL URL of the standbys or None"),
    ],
)
def test_a_bad_read_url_is_a_config_error_naming_it_without_its_password(read_url: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config({"url": "postgresql://app@db/app", "read_url": read_url})
    assert message in str(info.value)
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("max_staleness", -1), ("max_staleness", "inf"), ("standby_wait", -0.1), ("standby_wait", "x")],
)
def test_standby_bounds_must_be_finite_seconds_of_zero_or_more(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        resolve_config({"url": "postgresql://app@db/app", name: value})


@pytest.mark.parametrize(
    "url", ["sqlite:///planflow.db", "sqlite://:memory:", "tinydb:///planflow.json", "tinydb://memory"]
)
def test_sqlite_and_tinydb_ignore_read_url_with_a_log_line(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO", logger="planflow")
    with open_provider({"url": url, "read_url": "postgresql://app:s3cr3t@standby/app"}) as provider:
        assert provider.metadata.get("absent") is None
    ignored = [r for r in caplog.records if "read_url is ignored" in r.getMessage()]
    assert len(ignored) == 1
    assert "s3cr3t" not in caplog.text


def test_sqlite_ignores_read_url_on_the_async_api_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    from planflow import open_async_provider

    caplog.set_level("INFO", logger="planflow")

    async def run() -> None:
        provider = await open_async_provider(
            {"url": f"sqlite:///{tmp_path / 'x.db'}", "read_url": "postgresql://app@standby/app"}
        )
        await provider.aclose()

    asyncio.run(run())
    assert sum("read_url is ignored" in r.getMessage() for r in caplog.records) == 1
