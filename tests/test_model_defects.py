"""Regression tests of the defects the model-based walks of auth, metadata and executions found
(``tests/model/accounts.py``, ``tests/model/addon.py``), each the few public calls that showed it, on every
driver that serves the repository."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from planflow import APIKey, NotFoundError, Provider, TaskEvent, TaskExecution, ValidationError, open_provider
from tests.contract.helpers import a_task, an_occurrence

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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "tinydb"])
def addon_provider(request: pytest.FixtureRequest) -> Iterator[Provider]:
    if request.param == "tinydb":
        with open_provider("tinydb://memory") as provider:
            yield provider
        return
    yield request.getfixturevalue(
        "sqlite_file_provider" if request.param == "sqlite" else "postgres_provider"
    )


PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2025, 10, 26, 2, 30, tzinfo=PARIS),
        datetime(2025, 10, 26, 2, 30, fold=1, tzinfo=PARIS),
        datetime(2025, 3, 30, 2, 30, tzinfo=PARIS),
    ],
    ids=["autumn-fold-first", "autumn-fold-second", "spring-gap"],
)
def test_a_zoned_time_in_a_fold_or_gap_is_stored_and_reads_back_with_its_offset(
    addon_provider: Provider, moment: datetime
) -> None:
    # Was: ValidationError "reads back as another moment", because such a time is never == a time of another
    # tzinfo (PEP 495), though its ISO text reads back as the same wall clock and offset.
    executions = addon_provider.executions
    executions.add_task(a_task("t", created_at=moment, pinned_time=moment))
    executions.add_occurrence(an_occurrence("o", scheduled_for=moment, pinned_time=moment))
    executions.add_execution(TaskExecution("o", "pending", 1, [TaskEvent("triggered", moment)]))
    task, occurrence, execution = (
        executions.get_task("t"),
        executions.get_occurrence("o"),
        executions.get_execution("o"),
    )
    assert task is not None and occurrence is not None and execution is not None
    for stored in (
        task.created_at,
        task.pinned_time,
        occurrence.scheduled_for,
        execution.history[0].timestamp,
    ):
        assert stored is not None
        assert stored.isoformat() == moment.isoformat()
        assert stored.utcoffset() == moment.utcoffset()
