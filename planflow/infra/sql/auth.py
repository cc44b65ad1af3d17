"""The auth repository (users and API keys), written once for every SQL driver."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime

from planflow.errors import AlreadyBootstrappedError, DuplicateError, NotFoundError, ValidationError
from planflow.infra.sql.codec import (
    API_KEY_COLUMNS,
    USER_COLUMNS,
    api_key_from_row,
    enum_value,
    now,
    require_id,
    user_from_row,
)
from planflow.infra.sql.database import Connection, Database, ForeignKeyViolation
from planflow.infra.sql.dialect import Dialect
from planflow.models import APIKey, CreatedAPIKey, Role, User

KEY_PREFIX = "pf_"
PREFIX_LENGTH = 10

INSERT_USER = (
    f"INSERT INTO users (id, email, email_key, role, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
    f"RETURNING {USER_COLUMNS}"
)
SELECT_USER = f"SELECT {USER_COLUMNS} FROM users"
ANY_ADMIN = "SELECT 1 FROM users WHERE role = 'admin' LIMIT 1"
UPDATE_USER = f"UPDATE users SET email = ?, email_key = ?, role = ?, updated_at = ? WHERE id = ? RETURNING {USER_COLUMNS}"
DELETE_USER = "DELETE FROM users WHERE id = ?"
INSERT_KEY = (
    "INSERT INTO api_keys (id, user_id, fingerprint, prefix, created_at, last_used) VALUES (?, ?, ?, ?, ?, NULL) "
    f"RETURNING {API_KEY_COLUMNS}"
)
SELECT_KEY = f"SELECT {API_KEY_COLUMNS} FROM api_keys"
# CASE instead of GREATEST/MAX: the same text on every engine, and NULL-safe.
TOUCH_KEY = (
    "UPDATE api_keys SET last_used = CASE WHEN last_used IS NULL OR last_used < ? THEN ? ELSE last_used END "
    f"WHERE id = ? RETURNING {API_KEY_COLUMNS}"
)
DELETE_KEY = "DELETE FROM api_keys WHERE id = ?"
IMPORT_USER = (
    "INSERT INTO users (id, email, email_key, role, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET email = excluded.email, email_key = excluded.email_key, role = excluded.role, "
    "created_at = excluded.created_at, updated_at = excluded.updated_at"
)
IMPORT_KEY = (
    "INSERT INTO api_keys (id, user_id, fingerprint, prefix, created_at, last_used) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, fingerprint = excluded.fingerprint, "
    "prefix = excluded.prefix, created_at = excluded.created_at, last_used = excluded.last_used"
)


def fingerprint(plaintext: str) -> str:
    """The SHA-256 hex digest under which an API key is stored and looked up."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _email(email: object) -> tuple[str, str]:
    if not isinstance(email, str) or "@" not in email or email != email.strip() or len(email) > 320:
        raise ValidationError(f"invalid email {email!r}")
    return email, email.casefold()


class SqlAuthRepository:
    """AuthRepository over a :class:`Database` (see ``planflow.protocols.AuthRepository``)."""

    def __init__(self, database: Database, dialect: Dialect) -> None:
        self._db = database
        self._d = dialect

    def _user(self, row: object) -> User:
        return user_from_row(row, self._d.load_ts)  # pyright: ignore[reportArgumentType]

    def _key(self, row: object) -> APIKey:
        return api_key_from_row(row, self._d.load_ts)  # pyright: ignore[reportArgumentType]

    def _insert_user(self, conn: Connection, email: str, role: Role) -> User:
        shown, key = _email(email)
        stamp = self._d.ts_param(now())
        try:
            row = conn.fetch_one(INSERT_USER, [uuid.uuid4().hex, shown, key, role.value, stamp, stamp])
        except DuplicateError as exc:
            raise DuplicateError(f"a user with email {email!r} already exists") from exc
        return self._user(row)

    def create_user(self, email: str, role: Role = Role.USER) -> User:
        checked = enum_value(Role, role, "role")
        return self._db.run(lambda conn: self._insert_user(conn, email, checked), atomic=True)

    def create_initial_admin(self, email: str) -> User:
        def work(conn: Connection) -> User:
            if self._d.bootstrap_lock:
                conn.execute(self._d.bootstrap_lock)
            if conn.fetch_one(ANY_ADMIN) is not None:
                raise AlreadyBootstrappedError("an admin user already exists")
            return self._insert_user(conn, email, Role.ADMIN)

        return self._db.run(work)

    def _get_user(self, where: str, value: str, missing: str) -> User:
        row = self._db.fetch_one(f"{SELECT_USER} WHERE {where} = ?", [value])
        if row is None:
            raise NotFoundError(missing)
        return self._user(row)

    def get_user(self, user_id: str) -> User:
        return self._get_user("id", user_id, f"user {user_id!r} not found")

    def get_user_by_email(self, email: str) -> User:
        return self._get_user("email_key", str(email).casefold(), f"no user with email {email!r}")

    def list_users(self) -> list[User]:
        rows = self._db.fetch_all(f"{SELECT_USER} ORDER BY created_at, id")
        return [self._user(row) for row in rows]

    def update_user(self, user_id: str, *, email: str | None = None, role: Role | None = None) -> User:
        checked = None if role is None else enum_value(Role, role, "role")
        if email is not None:
            _email(email)

        def work(conn: Connection) -> User:
            row = conn.fetch_one(f"{SELECT_USER} WHERE id = ?", [user_id])
            if row is None:
                raise NotFoundError(f"user {user_id!r} not found")
            current = self._user(row)
            shown, key = _email(email if email is not None else current.email)
            new_role = checked if checked is not None else current.role
            try:
                updated = conn.fetch_one(
                    UPDATE_USER, [shown, key, new_role.value, self._d.ts_param(now()), user_id]
                )
            except DuplicateError as exc:
                raise DuplicateError(f"a user with email {email!r} already exists") from exc
            return self._user(updated)

        return self._db.run(work)

    def delete_user(self, user_id: str) -> None:
        def work(conn: Connection) -> None:
            if conn.execute(DELETE_USER, [user_id]) == 0:
                raise NotFoundError(f"user {user_id!r} not found")

        self._db.run(work, atomic=True)

    def create_api_key(self, user_id: str) -> CreatedAPIKey:
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        params = [
            uuid.uuid4().hex,
            user_id,
            fingerprint(plaintext),
            plaintext[:PREFIX_LENGTH],
            self._d.ts_param(now()),
        ]

        def work(conn: Connection) -> APIKey:
            try:
                return self._key(conn.fetch_one(INSERT_KEY, params))
            except ForeignKeyViolation as exc:
                raise NotFoundError(f"user {user_id!r} not found") from exc

        return CreatedAPIKey(self._db.run(work, atomic=True), plaintext)

    def _get_key(self, where: str, value: str, missing: str) -> APIKey:
        row = self._db.fetch_one(f"{SELECT_KEY} WHERE {where} = ?", [value])
        if row is None:
            raise NotFoundError(missing)
        return self._key(row)

    def get_api_key(self, key_id: str) -> APIKey:
        return self._get_key("id", key_id, f"API key {key_id!r} not found")

    def get_api_key_by_fingerprint(self, fingerprint: str) -> APIKey:
        if not isinstance(fingerprint, str) or len(fingerprint) != 64:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise NotFoundError("no API key with that fingerprint")
        key = self._get_key("fingerprint", fingerprint.lower(), "no API key with that fingerprint")
        # The index lookup finds the row; the final comparison does not leak timing on the stored value.
        if not hmac.compare_digest(key.fingerprint, fingerprint.lower()):
            raise NotFoundError("no API key with that fingerprint")
        return key

    def list_api_keys(self, user_id: str) -> list[APIKey]:
        rows = self._db.fetch_all(f"{SELECT_KEY} WHERE user_id = ? ORDER BY created_at, id", [user_id])
        return [self._key(row) for row in rows]

    def touch_api_key(self, key_id: str, at: datetime | None = None) -> APIKey:
        moment = now() if at is None else at
        if moment.tzinfo is None:
            raise ValidationError("touch_api_key needs a timezone-aware datetime")
        stamp = self._d.ts_param(moment)

        def work(conn: Connection) -> APIKey:
            row = conn.fetch_one(TOUCH_KEY, [stamp, stamp, key_id])
            if row is None:
                raise NotFoundError(f"API key {key_id!r} not found")
            return self._key(row)

        return self._db.run(work, atomic=True)

    def import_users(self, users: Iterable[User]) -> int:
        """Write users verbatim (ids and timestamps as given), upserting by id; returns how many."""
        ts = self._d.ts_param
        rows: list[list[object]] = []
        for user in users:
            shown, key = _email(user.email)
            role = enum_value(Role, user.role, "role")
            rows.append(
                [
                    require_id(user.id, "user id"),
                    shown,
                    key,
                    role.value,
                    ts(user.created_at),
                    ts(user.updated_at),
                ]
            )

        def work(conn: Connection) -> None:
            try:
                conn.execute_many(IMPORT_USER, rows)
            except DuplicateError as exc:
                raise DuplicateError(f"an imported user's email is taken by another user id: {exc}") from exc

        self._db.run(work)
        return len(rows)

    def import_api_keys(self, keys: Iterable[APIKey]) -> int:
        """Write API keys verbatim (fingerprints, prefixes and times as given), upserting by id; returns how many.

        Raises:
            NotFoundError: a key's user does not exist in this store.
        """
        ts = self._d.ts_param
        rows = [
            [
                require_id(k.id, "API key id"),
                k.user_id,
                k.fingerprint,
                k.prefix,
                ts(k.created_at),
                None if k.last_used is None else ts(k.last_used),
            ]
            for k in keys
        ]

        def work(conn: Connection) -> None:
            try:
                conn.execute_many(IMPORT_KEY, rows)
            except ForeignKeyViolation as exc:
                raise NotFoundError(
                    f"an imported API key belongs to a user missing from this store: {exc}"
                ) from exc

        self._db.run(work)
        return len(rows)

    def delete_api_key(self, key_id: str) -> None:
        def work(conn: Connection) -> None:
            if conn.execute(DELETE_KEY, [key_id]) == 0:
                raise NotFoundError(f"API key {key_id!r} not found")

        self._db.run(work, atomic=True)
