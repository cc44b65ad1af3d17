"""``planflow config``: the configuration a command would use, each setting with where it came from.

The values are :func:`planflow.config.resolve_config`'s own (the URL given with ``--db``, else the environment,
else the embedded default); this module only tells, for each setting, which of those set it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from planflow.config import DEFAULT_SQLITE_PATH, PlanflowConfig, RetrySettings, redact_url, resolve_config
from planflow.models import JsonValue

#: Settings named in the environment as ``PLANFLOW_DB_<NAME>`` that make a PostgreSQL URL.
_SERVER_PARTS = ("host", "port", "user", "password", "name")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its name, its value as shown (a URL without its password), and where it came from."""

    name: str
    value: JsonValue
    source: str


def _place(config: PlanflowConfig) -> str:
    """The setting that says where the store is: ``url`` for PostgreSQL, ``path`` for a file."""
    return "url" if config.driver == "postgres" else "path"


def _query_keys(url: str) -> set[str]:
    return {key for key, _ in parse_qsl(url.partition("?")[2], keep_blank_values=True)}


def _shown(value: object) -> JsonValue:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def effective_settings(db: str | None, environ: Mapping[str, str]) -> tuple[PlanflowConfig, list[Setting]]:
    """The config ``db`` (or, without it, the environment) resolves to, and each setting's source.

    Raises:
        ConfigError: the URL or a setting is invalid (the message never shows a password).
    """
    sources: dict[str, str] = {}
    if db is not None:
        config = resolve_config(db)
        sources |= dict.fromkeys(("driver", _place(config)), "--db URL")
        sources |= {key: f"--db URL (?{key}=)" for key in _query_keys(db)}
    else:
        env = {key: value for key, value in environ.items() if key.startswith("PLANFLOW_")}
        from planflow.config import config_from_env

        found = config_from_env(env)
        config = found or resolve_config(None)
        url = env.get("PLANFLOW_DATABASE_URL")
        if url:
            sources |= dict.fromkeys(("driver", _place(config)), "PLANFLOW_DATABASE_URL")
            sources |= {key: f"PLANFLOW_DATABASE_URL (?{key}=)" for key in _query_keys(url)}
        for key in env:
            if not key.startswith("PLANFLOW_DB_"):
                continue
            name = key[len("PLANFLOW_DB_") :].lower()
            if name in _SERVER_PARTS and not url:
                sources["url"] = f"{sources['url']}, {key}" if "url" in sources else key
                sources.setdefault("driver", key)
            else:
                sources[name] = key
        if found is None:
            sources["path"] = f"default ({DEFAULT_SQLITE_PATH} in the current directory)"
    settings: list[Setting] = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, RetrySettings):
            for inner in dataclasses.fields(value):
                key = f"retry_{inner.name}"
                source = sources.get(key) or sources.get("retry") or "default"
                settings.append(Setting(f"retry.{inner.name}", _shown(getattr(value, inner.name)), source))
            continue
        if field.name in ("url", "read_url"):
            value = None if value is None else redact_url(value)
        settings.append(Setting(field.name, _shown(value), sources.get(field.name, "default")))
    return config, settings


__all__ = ["Setting", "effective_settings"]
