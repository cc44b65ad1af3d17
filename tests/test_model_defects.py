"""Regression tests of the defects the model-based walks of auth, metadata and executions found
(``tests/model/accounts.py``, ``tests/model/addon.py``), each the few public calls that showed it, on every
driver that serves the repository."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from planflow import APIKey, NotFoundError, Provider, ValidationError

STAMP = datetime(2022, 2, 2, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_provider(request: pytest.FixtureRequest) -> Provider:
    name = "sqlite_file_provider" if request.param == "sqlite" else "postgres_provider"
    provider: Provider = request.getfixturevalue(name)
    return provider


@pytest.mark.parametrize(
    "fingerprint",
    [
        hashlib.sha256(b"k").hexdigest().upper(),
        "g" * 64,
        hashlib.sha256(b"k").hexdigest()[:63] + "é",
        "short",
    ],
    ids=["upper-case-hex", "not-hex", "not-ascii", "short"],
)
def test_an_imported_key_whose_fingerprint_no_lookup_could_find_is_refused_and_nothing_stored(
    sql_provider: Provider, fingerprint: str
) -> None:
    # Was: stored, and then get_api_key_by_fingerprint (which compares lowercase hex digests) never found it.
    user = sql_provider.auth.create_user("a@x.org")
    good = APIKey("good", user.id, hashlib.sha256(b"good").hexdigest(), "pf_", STAMP)
    with pytest.raises(ValidationError, match="fingerprint must be a SHA-256 digest"):
        sql_provider.auth.import_api_keys([good, APIKey("bad", user.id, fingerprint, "pf_", STAMP)])
    assert sql_provider.auth.list_api_keys(user.id) == []
    with pytest.raises(NotFoundError):
        sql_provider.auth.get_api_key_by_fingerprint(fingerprint.ljust(64, "0")[:64])


def test_an_imported_key_is_found_by_its_fingerprint_in_either_case(sql_provider: Provider) -> None:
    user = sql_provider.auth.create_user("a@x.org")
    digest = hashlib.sha256(b"k").hexdigest()
    key = APIKey("k", user.id, digest, "pf_", STAMP)
    assert sql_provider.auth.import_api_keys([key]) == 1
    assert sql_provider.auth.get_api_key_by_fingerprint(digest) == key
    assert sql_provider.auth.get_api_key_by_fingerprint(digest.upper()) == key
