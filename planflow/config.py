"""Configuration: an object, a mapping, a URL or the environment, resolved to one :class:`PlanflowConfig`.

Accepted URLs::

    sqlite:///relative/path.db      sqlite:////absolute/path.db     sqlite://:memory: (or sqlite://)
    postgresql://user:pw@host:5432/db   (also postgres:// and SQLAlchemy's postgresql+psycopg://)
    postgresql:///db (a local socket)   host=/tmp dbname=db user=u (libpq's key/value form)
    tinydb:///relative/path.json    tinydb:////absolute/path.json   tinydb://memory

Settings may ride along as query parameters (``sqlite:///x.db?busy_timeout=2``); for Postgres, parameters
that are not planflow settings (``sslmode`` ...) stay in the URL handed to psycopg, which parses it
(:func:`parse_postgres`): every form libpq accepts is accepted. The environment variable
``PLANFLOW_DATABASE_URL`` gives a URL; ``PLANFLOW_DB_<SETTING>`` (``PLANFLOW_DB_DRIVER``, ``PLANFLOW_DB_PATH``,
``PLANFLOW_DB_HOST``, ``PLANFLOW_DB_PORT``, ``PLANFLOW_DB_USER``, ``PLANFLOW_DB_PASSWORD``, ``PLANFLOW_DB_NAME``,
``PLANFLOW_DB_POOL_MAX_SIZE`` ...) give discrete settings. No configuration at all means a SQLite file
``planflow.db`` in the current directory.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Literal, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode

from planflow.errors import ConfigError

DRIVERS = ("sqlite", "postgres", "tinydb")
MEMORY = ":memory:"
DEFAULT_SQLITE_PATH = "planflow.db"
ACCEPTED_URLS = (
    "sqlite:///path/to.db, sqlite://:memory:, postgresql://user:pw@host:5432/db, "
    "tinydb:///path/to.json, tinydb://memory"
)
#: How the file URLs spell their paths, for the message that refuses a URL without one.
SLASH_RULE = (
    "a file URL has three slashes before a relative path (sqlite:///data/x.db is ./data/x.db) and four before "
    "an absolute one (sqlite:////var/lib/x.db is /var/lib/x.db)"
)
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2", "postgres+psycopg")

OnCorrupt = Literal["raise", "move_aside"]
#: The periods of the run history's time partitions on PostgreSQL (``PlanflowConfig.history_partition``).
HistoryPeriod = Literal["day", "week"]
HISTORY_PERIODS: tuple[HistoryPeriod, ...] = ("day", "week")


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
        pgbouncer: Postgres: the URL points at PgBouncer in transaction-pooling mode (no server-side prepared
            statements, no startup options).
        retry: Backoff for transient failures.
        tinydb_on_corrupt: ``raise`` (default), or ``move_aside`` what is damaged of a TinyDB store and open the rest.
        slow_statement_ms: Log a WARNING (on ``planflow.sqlite`` / ``planflow.postgres``) for every statement
            slower than this many milliseconds; ``None`` (default): no statement is timed for it.
        telemetry: Report every repository call to OpenTelemetry (spans and metrics; needs the ``otel``
            extra). ``open_provider(..., telemetry=...)`` overrides it.
        idempotency_window: Seconds an idempotency key is remembered after the write it was given to (default a
            day): a second call with the key within the window returns the first outcome and applies nothing.
        read_only: Open the store for reading only: never migrate (``auto_migrate`` is ignored), never create
            a file or directory, never change the journal mode or another persistent setting. A write raises
            ``ReadOnlyError``; a store that holds data but no planflow schema raises ``ForeignStoreError``, a
            missing SQLite file ``ConfigError``; an empty one reads as an empty store.
        read_url: PostgreSQL: standbys (hot standbys streaming from the primary of ``url``; several hosts
            allowed, as libpq's ``host=a,b``) that serve reads made outside a transaction. Writes, claims,
            ``get_state_for_update`` and every read inside a transaction stay on ``url``. A read that follows a
            write of the same context (thread, or asyncio task) waits until the standby has replayed that
            write, for at most ``standby_wait``, and otherwise reads from the primary. A standby that is down
            or lagging is skipped (with a log line), never an error. Its password never appears in ``repr``.
            SQLite and TinyDB ignore it (with a log line).
        max_staleness: PostgreSQL with ``read_url``: seconds a standby may lag behind the primary and still
            serve a read that follows no write of the caller (replay lag: ``now()`` against the time of the
            last transaction replayed, zero while the standby has replayed all it received from a connected
            primary).
        standby_wait: PostgreSQL with ``read_url``: seconds a read that follows a write of the caller waits
            for a standby to replay that write before it reads from the primary instead (default 0.1).
        history_partition: PostgreSQL: the period of the time partitions of the run history, ``"week"``
            (default) or ``"day"``: ``migrate`` and ``purge`` create them ahead, and ``purge`` drops whole
            partitions older than its bound instead of deleting their rows. Changing it applies to partitions
            created afterwards. SQLite and TinyDB have no partitions and ignore it.
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
    pgbouncer: bool = False
    retry: RetrySettings = field(default_factory=RetrySettings)
    tinydb_on_corrupt: OnCorrupt = "raise"
    slow_statement_ms: float | None = None
    telemetry: bool = False
    idempotency_window: float = 86400.0
    read_only: bool = False
    read_url: str | None = field(default=None, repr=False)
    max_staleness: float = 5.0
    standby_wait: float = 0.1
    history_partition: HistoryPeriod = "week"

    def __post_init__(self) -> None:
        if self.driver not in DRIVERS:
            raise ConfigError(f"unknown driver {self.driver!r}; valid drivers: {', '.join(DRIVERS)}")
        if self.driver == "postgres" and not self.url:
            raise ConfigError("the postgres driver needs a url (postgresql://user:pw@host:5432/db)")
        if self.tinydb_on_corrupt not in ("raise", "move_aside"):
            raise ConfigError(
                f"tinydb_on_corrupt must be 'raise' or 'move_aside', not {self.tinydb_on_corrupt!r}"
            )
        if self.history_partition not in HISTORY_PERIODS:
            raise ConfigError(
                f"history_partition must be one of {', '.join(map(repr, HISTORY_PERIODS))}, "
                f"got {self.history_partition!r}"
            )
        for name in (
            "busy_timeout",
            "connect_timeout",
            "pool_timeout",
            "pool_max_lifetime",
            "pool_max_idle",
            "idempotency_window",
        ):
            _check_seconds(name, getattr(self, name), low=0.0, allow_low=False)
        for name in ("max_staleness", "standby_wait"):
            _check_seconds(name, getattr(self, name), low=0.0, allow_low=True)
        if self.read_url is not None:
            if not isinstance(self.read_url, str) or not self.read_url.strip():  # pyright: ignore[reportUnnecessaryIsInstance]
                raise ConfigError(
                    f"read_url must be a PostgreSQL URL of the standbys or None, got {redact_url(str(self.read_url))!r}"
                )
            if self.driver == "postgres":
                standby_conninfo(self.read_url)
        for name in ("pool_min_size", "pool_max_size"):
            _check_count(name, getattr(self, name))
        if not 0 <= self.pool_min_size <= self.pool_max_size or self.pool_max_size < 1:
            raise ConfigError(
                f"pool sizes must satisfy 0 <= pool_min_size <= pool_max_size >= 1, "
                f"got {self.pool_min_size} and {self.pool_max_size}"
            )
        if not isinstance(self.retry, RetrySettings):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigError(f"retry must be a RetrySettings, got {type(self.retry).__name__}")
        _check_count("retry.max_attempts", self.retry.max_attempts)
        if self.retry.max_attempts < 1:
            raise ConfigError(f"retry.max_attempts must be at least 1, got {self.retry.max_attempts}")
        _check_seconds("retry.base_delay", self.retry.base_delay, low=0.0, allow_low=True)
        _check_seconds("retry.max_delay", self.retry.max_delay, low=0.0, allow_low=True)
        if self.slow_statement_ms is not None:
            value: object = self.slow_statement_ms
            if isinstance(value, bool) or not isinstance(value, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise ConfigError(
                    f"slow_statement_ms must be a number of milliseconds or None, got {type(value).__name__}"
                )
            if not math.isfinite(value) or value < 0 or value > 10**12:
                raise ConfigError(
                    f"slow_statement_ms must be a finite number of milliseconds >= 0, got {value!r}"
                )
        for name in ("auto_migrate", "pgbouncer", "telemetry", "read_only"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")

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
        hidden = ("url", "read_url")
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.name not in hidden
        )
        urls = ", ".join(
            f"{name}={redact_url(value) if (value := getattr(self, name)) else None!r}" for name in hidden
        )
        return f"PlanflowConfig({shown}, {urls})"


def _check_seconds(name: str, value: object, *, low: float, allow_low: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < low or (value == low and not allow_low) or value > 10**9:
        bound = f">= {low:g}" if allow_low else f"> {low:g}"
        raise ConfigError(f"{name} must be a finite number of seconds {bound}, got {value!r}")


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**6:
        raise ConfigError(f"{name} must be a whole number within 0..1000000, got {value!r}")


ConfigSource = PlanflowConfig | Mapping[str, object] | str | None

_PASSWORD_IN_CONNINFO = re.compile(r"(?P<head>password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_PASSWORD_QUERY = re.compile(r"(?P<head>[?&]password=)[^&#]*", re.IGNORECASE)
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)
#: libpq's key/value form of a connection string starts with a keyword and "=" (``host=/tmp dbname=x``).
_KEY_VALUE = re.compile(r"\s*[a-z_]+\s*=", re.IGNORECASE)


def redact_url(text: str) -> str:
    """Return ``text`` with any password in a URL or conninfo replaced by ``***``.

    A password in a URL is everything between the first ``:`` of the user part and the last ``@`` before the
    fragment, so an unencoded ``@``, ``?``, space or ``/`` in it is hidden too (hiding too much is the safe
    mistake).
    """
    starts = [match.start() for match in _SCHEME.finditer(text)]
    if not starts:
        return _PASSWORD_IN_CONNINFO.sub(r"\g<head>***", text)
    pieces = [_PASSWORD_IN_CONNINFO.sub(r"\g<head>***", text[: starts[0]])]
    for begin, end in zip(starts, [*starts[1:], len(text)], strict=True):
        pieces.append(_redact_one(text[begin:end]))
    return "".join(pieces)


def _redact_one(url: str) -> str:
    scheme_end = url.index("://") + 3
    head, rest = url[:scheme_end], url[scheme_end:]
    # To the fragment, not the query: an unencoded "?" may be part of the password.
    authority = rest.split("#", 1)[0]
    at = authority.rfind("@")
    if at >= 0:
        colon = authority.find(":", 0, at)
        if colon >= 0:
            rest = f"{rest[: colon + 1]}***{rest[at:]}"
    return head + _PASSWORD_QUERY.sub(r"\g<head>***", rest)


@dataclass(frozen=True, slots=True)
class PostgresConninfo:
    """A PostgreSQL connection string, a URL or libpq's key/value form, parsed once by libpq's own rules.

    Attributes:
        conninfo: The string as psycopg is given it, unchanged (``postgresql:///db`` stays so).
        params: libpq's keywords set by it (``host``, ``port``, ``dbname``, ``user``, ``password``,
            ``options`` ...); empty when psycopg is not installed (then nothing can connect anyway).
        redacted: ``conninfo`` without its password, for messages and reprs.
    """

    conninfo: str
    params: Mapping[str, str]
    redacted: str

    @property
    def password(self) -> str | None:
        """The password, wherever it was given (in the URL's user part, its query, or a key/value pair)."""
        return self.params.get("password") or None


@lru_cache(maxsize=64)
def parse_postgres(conninfo: str, *, given: str | None = None) -> PostgresConninfo:
    """``conninfo`` (a ``postgresql://`` or ``postgres://`` URL in any of libpq's forms, or ``key=value`` pairs)
    parsed by libpq (``psycopg.conninfo.conninfo_to_dict``), once per string (the configuration, the driver and
    the telemetry ask for the same one). Without psycopg, only its password is hidden.
    ``given``: what the user wrote, when ``conninfo`` was made from it (its passwords are hidden too).

    Raises:
        ConfigError: libpq refuses it, or a port is not a number in 1..65535; the message never shows the
            password.
    """
    try:
        from psycopg import ProgrammingError  # optional: the postgres extra
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return PostgresConninfo(conninfo, MappingProxyType({}), redact_url(conninfo))
    try:
        params = {key: str(value) for key, value in conninfo_to_dict(conninfo).items()}
    except ProgrammingError as exc:  # its text may echo the password
        said = _hide_passwords(" ".join(str(exc).split()), conninfo, given or "")
        raise ConfigError(
            f"malformed PostgreSQL URL ({said}); accepted: {ACCEPTED_URLS}, or key=value pairs (percent-encode "
            "special characters of the user and password)"
        ) from None
    for port in params.get("port", "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(
                f"malformed PostgreSQL URL (port {port!r} is not a number in 1..65535); accepted: {ACCEPTED_URLS}"
            )
    return PostgresConninfo(conninfo, MappingProxyType(params), redact_url(conninfo))


def standby_conninfo(read_url: str) -> PostgresConninfo:
    """``read_url`` (a URL in any spelling ``url`` accepts, or libpq's key/value pairs) as libpq parses it,
    its scheme made ``postgresql://``.

    Raises:
        ConfigError: it is not a PostgreSQL connection string, or libpq refuses it; never showing the password.
    """
    scheme, sep, rest = read_url.partition("://")
    if not sep:
        if _KEY_VALUE.match(read_url):
            return _named("read_url", lambda: parse_postgres(read_url))
        raise ConfigError(f"read_url: {_not_a_url(read_url)}; a PostgreSQL URL of the standbys is expected")
    if scheme.lower() not in POSTGRES_SCHEMES:
        raise ConfigError(
            f"read_url {redact_url(read_url)!r} is not a PostgreSQL URL (postgresql://user:pw@standby:5432/db)"
        )
    return _named("read_url", lambda: parse_postgres(f"postgresql://{rest}", given=read_url))


def _named(setting: str, parse: Callable[[], PostgresConninfo]) -> PostgresConninfo:
    """``parse()``, a refusal of which names ``setting``."""
    try:
        return parse()
    except ConfigError as exc:
        raise ConfigError(f"{setting}: {exc}") from None


def _hide_passwords(text: str, *conninfos: str) -> str:
    """``text`` (libpq's complaint about a connection string) without anything that may be a password of
    ``conninfos``: what :func:`redact_url` hides there, in either spelling (percent-encoded or not)."""
    text = redact_url(text)
    candidates: set[str] = set()
    for conninfo in conninfos:
        candidates.update(_password_candidates(conninfo))
    for candidate in sorted(candidates, key=len, reverse=True):
        for spelling in (candidate, unquote(candidate)):
            if spelling:
                text = text.replace(spelling, "***")
    return text


def _password_candidates(conninfo: str) -> set[str]:
    candidates: set[str] = set()
    for match in _PASSWORD_IN_CONNINFO.finditer(conninfo):
        candidates.add(match.group(2).strip("'"))
    for match in _PASSWORD_QUERY.finditer(conninfo):
        candidates.add(match.group(0).split("=", 1)[1])
    scheme = _SCHEME.match(conninfo)
    if scheme:
        authority = conninfo[scheme.end() :].split("#", 1)[0]
        at = authority.rfind("@")
        colon = authority.find(":", 0, at) if at >= 0 else -1
        if colon >= 0:
            candidates.add(authority[colon + 1 : at])
    return candidates


_SETTING_TYPES: dict[str, type] = {
    "auto_migrate": bool,
    "busy_timeout": float,
    "connect_timeout": float,
    "pool_min_size": int,
    "pool_max_size": int,
    "pool_timeout": float,
    "pool_max_lifetime": float,
    "pool_max_idle": float,
    "pgbouncer": bool,
    "tinydb_on_corrupt": str,
    "slow_statement_ms": float,
    "telemetry": bool,
    "idempotency_window": float,
    "read_only": bool,
    "read_url": str,
    "max_staleness": float,
    "standby_wait": float,
    "history_partition": str,
}
_RETRY_TYPES: dict[str, type] = {"max_attempts": int, "base_delay": float, "max_delay": float}


def _coerce(name: str, value: object, kind: type) -> object:
    if value is None and name == "slow_statement_ms":  # the one setting that may be unset
        return None
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if kind is float and text.lower() in ("nan", "inf", "-inf", "infinity", "-infinity", "+inf"):
            raise ConfigError(f"setting {name!r} must be a finite number, got {value!r}")
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


def _file_path(scheme: str, rest: str, url_for_errors: str) -> str:
    """Path part of ``sqlite:///x`` / ``tinydb:///x`` (``rest`` is what follows ``scheme://``)."""
    if rest in (MEMORY, "memory", "/" + MEMORY, "/memory") or (scheme == "sqlite" and not rest):
        return MEMORY  # "sqlite://" alone: SQLAlchemy's spelling of an in-memory database
    if not rest.startswith("/") or rest == "/":
        raise ConfigError(
            f"malformed URL {redact_url(url_for_errors)!r}: no file path; {SLASH_RULE}; accepted: {ACCEPTED_URLS}"
        )
    return rest[1:]


def config_from_url(url: str, **overrides: object) -> PlanflowConfig:
    """Parse a planflow URL (see the module docstring); ``overrides`` are further settings.

    Raises:
        ConfigError: unknown scheme, malformed URL or bad setting; the message never shows a password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        if _KEY_VALUE.match(url):
            conninfo = parse_postgres(url).conninfo
            return PlanflowConfig(driver="postgres", url=conninfo, **_settings(overrides, "the URL"))  # pyright: ignore[reportArgumentType]
        raise ConfigError(f"{_not_a_url(url)}; accepted: {ACCEPTED_URLS}")
    scheme = scheme.lower()
    rest, _, query = rest.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    if scheme in POSTGRES_SCHEMES:
        ours = {k: v for k, v in params.items() if k in _SETTING_TYPES or k.startswith("retry_")}
        theirs = {k: v for k, v in params.items() if k not in ours}
        # What follows "://" is kept as it is (libpq's forms: "postgresql:///db" is a local socket); the
        # planflow settings leave the query, and the scheme is libpq's.
        # Values are percent-encoded again ("options=-c x=y" is read so), except characters libpq reads as they
        # are: a socket's directory, a host list.
        query = urlencode(theirs, safe="/:,", quote_via=quote)
        clean = f"postgresql://{rest}{'?' if query else ''}{query}"
        parsed = parse_postgres(clean, given=url)
        if parsed.params and not any(
            parsed.params.get(key) for key in ("host", "hostaddr", "dbname", "service")
        ):
            raise ConfigError(
                f"malformed URL {redact_url(url)!r}: no host and no database; accepted: {ACCEPTED_URLS}"
            )
        return PlanflowConfig(driver="postgres", url=clean, **_settings({**ours, **overrides}, "the URL"))  # pyright: ignore[reportArgumentType]
    if scheme in ("sqlite", "tinydb"):
        path = _file_path(scheme, rest, url)
        return PlanflowConfig(driver=scheme, path=path, **_settings({**params, **overrides}, "the URL"))  # pyright: ignore[reportArgumentType]
    raise ConfigError(
        f"unknown driver {scheme!r} in URL {redact_url(url)!r}; valid drivers: {', '.join(DRIVERS)}; "
        f"accepted: {ACCEPTED_URLS}"
    )


def _not_a_url(text: str) -> str:
    """What to say of a config string without ``scheme://``: a file path gets the URL that names it."""
    stripped = text.strip()
    looks_like_a_file = "/" in stripped or "." in stripped.rsplit("/", 1)[-1]
    if not looks_like_a_file or any(c.isspace() for c in stripped) or ":" in stripped.split("/", 1)[0]:
        return f"malformed URL {redact_url(text)!r}"
    scheme = "tinydb" if stripped.lower().endswith(".json") else "sqlite"
    return f"{stripped!r} is a file path, not a URL: did you mean {scheme}:///{stripped}?"


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
