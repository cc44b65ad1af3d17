"""Server errors become planflow errors by their psycopg class (never by their text): each family, raised for
real by the server, and the messages that callers see."""

from __future__ import annotations

import psycopg
import pytest

from planflow import DuplicateError, PlanflowError, Provider, ReadOnlyError, TransientError, ValidationError
from planflow.errors import DatabaseError
from planflow.infra.postgres.errors import translate
from planflow.infra.sql.database import ConnectionLostError, ForeignKeyViolation
from tests.driven import database

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize(
    ("errcode", "sqlstate", "expected", "prefix"),
    [
        ("unique_violation", "23505", DuplicateError, "boom"),
        ("foreign_key_violation", "23503", ForeignKeyViolation, "a referenced row does not exist (boom"),
        ("read_only_sql_transaction", "25006", ReadOnlyError, "the PostgreSQL session is read-only: boom"),
        ("check_violation", "23514", ValidationError, "rejected by the database: boom"),
        ("not_null_violation", "23502", ValidationError, "rejected by the database: boom"),
        ("numeric_value_out_of_range", "22003", ValidationError, "rejected by the database: boom"),
        ("invalid_text_representation", "22P02", ValidationError, "rejected by the database: boom"),
        ("admin_shutdown", "57P01", ConnectionLostError, "PostgreSQL connection lost (57P01): boom"),
        ("crash_shutdown", "57P02", ConnectionLostError, "PostgreSQL connection lost (57P02): boom"),
        ("cannot_connect_now", "57P03", ConnectionLostError, "PostgreSQL connection lost (57P03): boom"),
        ("connection_failure", "08006", ConnectionLostError, "PostgreSQL connection lost (08006): boom"),
        ("protocol_violation", "08P01", ConnectionLostError, "PostgreSQL connection lost (08P01): boom"),
        ("serialization_failure", "40001", TransientError, "PostgreSQL failed transiently (40001): boom"),
        ("deadlock_detected", "40P01", TransientError, "PostgreSQL failed transiently (40P01): boom"),
        (
            "statement_completion_unknown",
            "40003",
            TransientError,
            "PostgreSQL failed transiently (40003): boom",
        ),
        ("lock_not_available", "55P03", TransientError, "PostgreSQL failed transiently (55P03): boom"),
        ("too_many_connections", "53300", TransientError, "PostgreSQL failed transiently (53300): boom"),
        ("insufficient_privilege", "42501", DatabaseError, "PostgreSQL error 42501: boom"),
    ],
)
def test_each_family_of_server_error_becomes_its_planflow_error(
    postgres_provider: Provider, errcode: str, sqlstate: str, expected: type[PlanflowError], prefix: str
) -> None:
    db = database(postgres_provider)
    with pytest.raises(PlanflowError) as caught, db.transaction() as conn:
        conn.execute(f"DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '{errcode}'; END $$")
    assert type(caught.value) is expected, repr(caught.value)
    assert str(caught.value).startswith(prefix), str(caught.value)
    cause = caught.value.__cause__
    assert isinstance(cause, psycopg.Error) and cause.sqlstate == sqlstate


def test_errors_raised_by_psycopg_itself_are_classified_by_their_class() -> None:
    # Not from a server: no SQLSTATE. A failed connection is lost; bad data is refused; the rest is an error.
    failed = translate(psycopg.OperationalError("the socket broke"))
    assert type(failed) is ConnectionLostError
    assert str(failed) == "PostgreSQL connection failed: the socket broke"
    refused = translate(psycopg.DataError("cannot dump"))
    assert type(refused) is ValidationError and str(refused) == "rejected by the database: cannot dump"
    other = translate(psycopg.InterfaceError("the cursor is closed"))
    assert (
        type(other) is DatabaseError and str(other) == "PostgreSQL error InterfaceError: the cursor is closed"
    )
    lost = translate(psycopg.ProgrammingError("whatever"), lost=True)
    assert type(lost) is ConnectionLostError and str(lost) == "PostgreSQL connection lost (closed): whatever"
