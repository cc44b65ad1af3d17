"""Configuration: an object, a mapping, a URL or the environment, resolved to one :class:`PlanflowConfig`.

Accepted URLs::

    sqlite:///relative/path.db      sqlite:////absolute/path.db     sqlite://:memory:
    postgresql://user:pw@host:5432/db   (also postgres://)
    tinydb:///relative/path.json    tinydb:////absolute/path.json   tinydb://memory

Settings may ride along as query parameters (``sqlite:///x.db?busy_timeout=2``); for Postgres, parameters
that are not planflow settings (``sslmode`` ...) stay in the URL handed to psycopg. The environment variable
``PLANFLOW_DATABASE_URL`` gives a URL; ``PLANFLOW_DB_<SETTING>`` (``PLANFLOW_DB_DRIVER``, ``PLANFLOW_DB_PATH``,
``PLANFLOW_DB_HOST``, ``PLANFLOW_DB_PORT``, ``PLANFLOW_DB_USER``, ``PLANFLOW_DB_PASSWORD``, ``PLANFLOW_DB_NAME``,
``PLANFLOW_DB_POOL_MAX_SIZE`` ...) give discrete settings. No configuration at all means a SQLite file
``planflow.db`` in the current directory.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from planflow.errors import ConfigError

DRIVERS = ("sqlite", "postgres", "tinydb")
MEMORY = ":memory:"
DEFAULT_SQLITE_PATH = "planflow.db"
ACCEPTED_URLS = (
    "sqlite:///path/to.db, sqlite://:memory:, postgresql://user:pw@host:5432/db, "
    "tinydb:///path/to.json, tinydb://memory"
)

OnCorrupt = Literal["raise", "move_aside"]


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Bounded exponential backoff with jitter for transient failures (lock contention, lost connections).

    Attempt ``n`` (from 1) sleeps a random time up to ``min(max_delay, base_delay * 2**(n-1))`` before the next.
    """

    max_attempts: int = 10
    base_delay: float = 0.005
    max_delay: float = 0.5


@dataclass(frozen=True, slots=True)
class PlanflowConfig:
    """Everything a driver needs. Build it directly or through :func:`resolve_config`.

    Attributes:
        driver: ``sqlite``, ``postgres`` or ``tinydb``.
        path: File of the sqlite or tinydb store, or ``":memory:"``.
        url: Postgres connection URL (its password never appears in ``repr``).
        auto_migrate: Apply pending migrations when the provider opens.
        busy_timeout: SQLite: seconds a statement waits for a lock before SQLITE_BUSY.
        connect_timeout: Seconds to wait for a first connection when opening.
        pool_min_size: Postgres: connections kept open.
        pool_max_size: Postgres (and SQLite idle connections kept): upper bound of the pool.
        pool_timeout: Postgres: seconds to wait for a free connection.
        pool_max_lifetime: Postgres: seconds after which a connection is replaced.
        pool_max_idle: Postgres: seconds an idle connection above ``pool_min_size`` is kept.
        retry: Backoff for transient failures.
        tinydb_on_corrupt: ``raise`` (default) or ``move_aside`` a corrupt TinyDB file and start afresh.
    """

    driver: str = "sqlite"
    path: str | None = None
    url: str | None = field(default=None, repr=False)
    auto_migrate: bool = True
    busy_timeout: float = 5.0
    connect_timeout: float = 10.0
    pool_min_size: int = 1
    pool_max_size: int = 10
    pool_timeout: float = 30.0
    pool_max_lifetime: float = 3600.0
    pool_max_idle: float = 600.0
    retry: RetrySettings = field(default_factory=RetrySettings)
    tinydb_on_corrupt: OnCorrupt = "raise"

    def __post_init__(self) -> None:
        if self.driver not in DRIVERS:
            raise ConfigError(f"unknown driver {self.driver!r}; valid drivers: {', '.join(DRIVERS)}")
        if self.driver == "postgres" and not self.url:
            raise ConfigError("the postgres driver needs a url (postgresql://user:pw@host:5432/db)")
        if self.tinydb_on_corrupt not in ("raise", "move_aside"):
            raise ConfigError(
                f"tinydb_on_corrupt must be 'raise' or 'move_aside', not {self.tinydb_on_corrupt!r}"
            )
        for name in ("busy_timeout", "connect_timeout", "pool_timeout", "pool_max_lifetime", "pool_max_idle"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0 <= self.pool_min_size <= self.pool_max_size or self.pool_max_size < 1:
            raise ConfigError(
                f"pool sizes must satisfy 0 <= pool_min_size <= pool_max_size >= 1, "
                f"got {self.pool_min_size} and {self.pool_max_size}"
            )
        if self.retry.max_attempts < 1 or self.retry.base_delay < 0 or self.retry.max_delay < 0:
            raise ConfigError(f"invalid retry settings: {self.retry!r}")

    @property
    def is_memory(self) -> bool:
        """True for an in-memory SQLite or TinyDB store."""
        return self.path == MEMORY

    @property
    def location(self) -> str:
        """Where the data lives, safe to print: the file, ``:memory:`` or the URL without its password."""
        if self.driver == "postgres":
            return redact_url(self.url or "")
        return self.path or DEFAULT_SQLITE_PATH

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.name != "url"
        )
        return f"PlanflowConfig({shown}, url={redact_url(self.url) if self.url else None!r})"


ConfigSource = PlanflowConfig | Mapping[str, object] | str | None

_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?P<tail>@)", re.IGNORECASE)
_PASSWORD_IN_CONNINFO = re.compile(r"(?P<head>password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(text: str) -> str:
    """Return ``text`` with any password in a URL or conninfo replaced by ``***``."""
    if "://" in text:
        text = _PASSWORD_IN_URL.sub(r"\g<head>***\g<tail>", text)
        return _PASSWORD_QUERY.sub(r"\g<head>***", text)
    return _PASSWORD_IN_CONNINFO.sub(r"\g<head>***", text)


_PASSWORD_QUERY = re.compile(r"(?P<head>[?&]password=)[^&\s]*", re.IGNORECASE)

_SETTING_TYPES: dict[str, type] = {
    "auto_migrate": bool,
    "busy_timeout": float,
    "connect_timeout": float,
    "pool_min_size": int,
    "pool_max_size": int,
    "pool_timeout": float,
    "pool_max_lifetime": float,
    "pool_max_idle": float,
    "tinydb_on_corrupt": str,
}
_RETRY_TYPES: dict[str, type] = {"max_attempts": int, "base_delay": float, "max_delay": float}


def _coerce(name: str, value: object, kind: type) -> object:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
        else:
            try:
                return kind(text)
            except ValueError:
                pass
    raise ConfigError(f"setting {name!r} must be {kind.__name__}, got {value!r}")


def _settings(values: Mapping[str, object], origin: str) -> dict[str, object]:
    """Typed keyword arguments for PlanflowConfig from loosely typed ``values`` (strings allowed)."""
    out: dict[str, object] = {}
    retry: dict[str, object] = {}
    for key, value in values.items():
        if key in _SETTING_TYPES:
            out[key] = _coerce(key, value, _SETTING_TYPES[key])
        elif key.startswith("retry_") and key[6:] in _RETRY_TYPES:
            retry[key[6:]] = _coerce(key, value, _RETRY_TYPES[key[6:]])
        elif key == "retry" and isinstance(value, RetrySettings):
            out["retry"] = value
        elif key == "retry" and isinstance(value, Mapping):
            given = cast(Mapping[str, object], value)
            for name, item in given.items():
                if name not in _RETRY_TYPES:
                    raise ConfigError(
                        f"unknown retry setting {name!r} in {origin}; known: {', '.join(_RETRY_TYPES)}"
                    )
                retry[name] = _coerce(f"retry.{name}", item, _RETRY_TYPES[name])
        else:
            known = ", ".join(["driver", "path", "url", *_SETTING_TYPES, "retry"])
            raise ConfigError(f"unknown setting {key!r} in {origin}; known settings: {known}")
    if retry:
        out["retry"] = RetrySettings(**retry)  # pyright: ignore[reportArgumentType]
    return out


def _file_path(rest: str, url_for_errors: str) -> str:
    """Path part of ``sqlite:///x`` / ``tinydb:///x`` (``rest`` is what follows ``scheme://``)."""
    if rest in (MEMORY, "memory", "/" + MEMORY, "/memory"):
        return MEMORY
    if not rest.startswith("/") or rest == "/":
        raise ConfigError(f"malformed URL {redact_url(url_for_errors)!r}; accepted: {ACCEPTED_URLS}")
    return rest[1:]


def config_from_url(url: str, **overrides: object) -> PlanflowConfig:
    """Parse a planflow URL (see the module docstring); ``overrides`` are further settings.

    Raises:
        ConfigError: unknown scheme, malformed URL or bad setting; the message never shows a password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"malformed URL {redact_url(url)!r}; accepted: {ACCEPTED_URLS}")
    scheme = scheme.lower()
    rest, _, query = rest.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    if scheme in ("postgresql", "postgres"):
        split = urlsplit(url)
        if not split.hostname and not split.path.strip("/") and "host" not in params:
            raise ConfigError(f"malformed URL {redact_url(url)!r}; accepted: {ACCEPTED_URLS}")
        ours = {k: v for k, v in params.items() if k in _SETTING_TYPES or k.startswith("retry_")}
        theirs = {k: v for k, v in params.items() if k not in ours}
        clean = urlunsplit(("postgresql", split.netloc, split.path, urlencode(theirs, quote_via=quote), ""))
        return PlanflowConfig(driver="postgres", url=clean, **_settings({**ours, **overrides}, "the URL"))  # pyright: ignore[reportArgumentType]
    if scheme in ("sqlite", "tinydb"):
        path = _file_path(rest, url)
        return PlanflowConfig(driver=scheme, path=path, **_settings({**params, **overrides}, "the URL"))  # pyright: ignore[reportArgumentType]
    raise ConfigError(
        f"unknown driver {scheme!r} in URL {redact_url(url)!r}; valid drivers: {', '.join(DRIVERS)}; "
        f"accepted: {ACCEPTED_URLS}"
    )


def config_from_mapping(values: Mapping[str, object]) -> PlanflowConfig:
    """Build a config from a mapping of settings; a ``url`` key is parsed first, other keys override it."""
    rest = dict(values)
    url = rest.pop("url", None)
    driver = rest.pop("driver", None)
    path = rest.pop("path", None)
    if url is not None:
        if not isinstance(url, str):
            raise ConfigError(f"setting 'url' must be a string, got {type(url).__name__}")
        config = config_from_url(url, **rest)
        if driver is not None and driver != config.driver:
            raise ConfigError(f"driver {driver!r} contradicts the URL's driver {config.driver!r}")
        return dataclasses.replace(config, path=str(path)) if path is not None else config
    settings = _settings(rest, "the mapping")
    return PlanflowConfig(
        driver=str(driver or "sqlite"),
        path=None if path is None else str(path),
        **settings,  # pyright: ignore[reportArgumentType]
    )


def config_from_env(environ: Mapping[str, str] | None = None) -> PlanflowConfig | None:
    """Config from ``PLANFLOW_DATABASE_URL`` and ``PLANFLOW_DB_*``, or ``None`` when none is set."""
    env = os.environ if environ is None else environ
    discrete = {k[len("PLANFLOW_DB_") :].lower(): v for k, v in env.items() if k.startswith("PLANFLOW_DB_")}
    url = env.get("PLANFLOW_DATABASE_URL")
    if not url and not discrete:
        return None
    server = {k: discrete.pop(k) for k in ("host", "port", "user", "password", "name") if k in discrete}
    if server and not url:
        url = _postgres_url(server)
        discrete.setdefault("driver", "postgres")
    values: dict[str, object] = dict(discrete)
    if url:
        values["url"] = url
    return config_from_mapping(values)


def _postgres_url(server: Mapping[str, str]) -> str:
    auth = quote(server.get("user", "postgres"), safe="")
    if "password" in server:
        auth += ":" + quote(server["password"], safe="")
    host = server.get("host", "localhost")
    port = server.get("port", "5432")
    return f"postgresql://{auth}@{host}:{port}/{quote(server.get('name', 'postgres'), safe='')}"


def resolve_config(source: ConfigSource = None) -> PlanflowConfig:
    """Turn any accepted config source into a :class:`PlanflowConfig`.

    ``None`` reads the environment and falls back to the embedded default, a SQLite file ``planflow.db`` in
    the current directory.

    Raises:
        ConfigError: the source is of an unsupported type or invalid.
    """
    if isinstance(source, PlanflowConfig):
        return source
    if isinstance(source, str):
        return config_from_url(source)
    if isinstance(source, Mapping):
        return config_from_mapping(source)
    if source is None:
        return config_from_env() or PlanflowConfig(driver="sqlite", path=DEFAULT_SQLITE_PATH)
    raise ConfigError(  # pyright: ignore[reportUnreachable]
        f"a config must be a PlanflowConfig, a mapping, a URL string or None, not {type(source).__name__}"
    )
