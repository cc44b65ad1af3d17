"""The auth repository (users and API keys), written once for every SQL driver and both APIs."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from planflow.errors import AlreadyBootstrappedError, DuplicateError, NotFoundError, ValidationError
from planflow.infra import inputs
from planflow.infra.sql.codec import now
from planflow.infra.sql.database import Connection, Database, ForeignKeyViolation, Row
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.statements import delete_one, write_batches
from planflow.models import APIKey, CreatedAPIKey, Role, User

USER_COLUMNS = "id, email, role, created_at, updated_at"
API_KEY_COLUMNS = "id, user_id, fingerprint, prefix, created_at, last_used"
KEY_PREFIX = "pf_"
#: What :func:`fingerprint` returns, and so the only fingerprint a key can be found by.
FINGERPRINT = re.compile(r"[0-9a-f]{64}")
PREFIX_LENGTH = 10

INSERT_USER = (
    f"INSERT INTO users (id, email, email_key, role, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
    f"RETURNING {USER_COLUMNS}"
)
SELECT_USER = f"SELECT {USER_COLUMNS} FROM users"
ANY_ADMIN = "SELECT 1 FROM users WHERE role = 'admin' LIMIT 1"
UPDATE_USER = f"UPDATE users SET email = ?, email_key = ?, role = ?, updated_at = ? WHERE id = ? RETURNING {USER_COLUMNS}"
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


class SqlAuthRepository:
    """AuthRepository over a :class:`Database` (see ``planflow.protocols.AuthRepository``)."""

    def __init__(self, database: Database, dialect: Dialect) -> None:
        self._db = database
        self._dialect = dialect

    def _user(self, row: Sequence[Any] | None) -> User:
        assert row is not None
        load_ts = self._dialect.load_ts
        return User(row[0], row[1], Role(row[2]), load_ts(row[3]), load_ts(row[4]))

    def _key(self, row: Sequence[Any] | None) -> APIKey:
        assert row is not None
        load_ts = self._dialect.load_ts
        return APIKey(
            row[0], row[1], row[2], row[3], load_ts(row[4]), None if row[5] is None else load_ts(row[5])
        )

    def _user_params(self, email: str, role: Role) -> list[object]:
        stamp = self._dialect.ts_param(now())
        return [uuid.uuid4().hex, email, email.casefold(), role.value, stamp, stamp]

    async def _insert_user(self, conn: Connection, email: str, role: Role) -> User:
        try:
            row = await conn.fetch_one(INSERT_USER, self._user_params(email, role))
        except DuplicateError as exc:
            raise DuplicateError(f"a user with email {email!r} already exists") from exc
        return self._user(row)

    async def create_user(self, email: str, role: Role = Role.USER) -> User:
        params = self._user_params(email, role)

        async def reread(conn: Connection) -> Row | None:
            return await conn.fetch_one(f"{SELECT_USER} WHERE id = ?", [params[0]])

        try:
            row = await self._db.write(INSERT_USER, params, result="one", reread=reread)
        except DuplicateError as exc:
            raise DuplicateError(f"a user with email {email!r} already exists") from exc
        return self._user(row)

    async def create_initial_admin(self, email: str) -> User:
        async def work(conn: Connection) -> User:
            if self._dialect.bootstrap_lock:
                await conn.execute(self._dialect.bootstrap_lock)
            if await conn.fetch_one(ANY_ADMIN) is not None:
                raise AlreadyBootstrappedError("an admin user already exists")
            return await self._insert_user(conn, email, Role.ADMIN)

        return await self._db.run(work)

    async def _get_user(self, where: str, value: str, missing: str) -> User:
        row = await self._db.fetch_one(f"{SELECT_USER} WHERE {where} = ?", [value])
        if row is None:
            raise NotFoundError(missing)
        return self._user(row)

    async def get_user(self, user_id: str) -> User:
        return await self._get_user("id", user_id, f"user {user_id!r} not found")

    async def get_user_by_email(self, email: str) -> User:
        return await self._get_user("email_key", email.casefold(), f"no user with email {email!r}")

    async def list_users(self) -> list[User]:
        rows = await self._db.fetch_all(f"{SELECT_USER} ORDER BY created_at, id")
        return [self._user(row) for row in rows]

    async def update_user(self, user_id: str, *, email: str | None = None, role: Role | None = None) -> User:
        async def work(conn: Connection) -> User:
            row = await conn.fetch_one(f"{SELECT_USER} WHERE id = ?", [user_id])
            if row is None:
                raise NotFoundError(f"user {user_id!r} not found")
            current = self._user(row)
            new_email = email if email is not None else current.email
            new_role = role if role is not None else current.role
            try:
                updated = await conn.fetch_one(
                    UPDATE_USER,
                    [new_email, new_email.casefold(), new_role.value, self._dialect.ts_param(now()), user_id],
                )
            except DuplicateError as exc:
                raise DuplicateError(f"a user with email {email!r} already exists") from exc
            return self._user(updated)

        return await self._db.run(work)

    async def delete_user(self, user_id: str) -> None:
        await delete_one(self._db, ("users", "id"), user_id, "user")

    async def create_api_key(self, user_id: str) -> CreatedAPIKey:
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        params = [
            uuid.uuid4().hex,
            user_id,
            fingerprint(plaintext),
            plaintext[:PREFIX_LENGTH],
            self._dialect.ts_param(now()),
        ]

        async def reread(conn: Connection) -> Row | None:
            return await conn.fetch_one(f"{SELECT_KEY} WHERE id = ?", [params[0]])

        try:
            row = await self._db.write(INSERT_KEY, params, result="one", reread=reread)
        except ForeignKeyViolation as exc:
            raise NotFoundError(f"user {user_id!r} not found") from exc
        return CreatedAPIKey(self._key(row), plaintext)

    async def _get_key(self, where: str, value: str, missing: str) -> APIKey:
        row = await self._db.fetch_one(f"{SELECT_KEY} WHERE {where} = ?", [value])
        if row is None:
            raise NotFoundError(missing)
        return self._key(row)

    async def get_api_key(self, key_id: str) -> APIKey:
        return await self._get_key("id", key_id, f"API key {key_id!r} not found")

    async def get_api_key_by_fingerprint(self, fingerprint: str) -> APIKey:
        if len(fingerprint) != 64:
            raise NotFoundError("no API key with that fingerprint")
        key = await self._get_key("fingerprint", fingerprint.lower(), "no API key with that fingerprint")
        # The index lookup finds the row; the final comparison does not leak timing on the stored value.
        if not hmac.compare_digest(key.fingerprint, fingerprint.lower()):
            raise NotFoundError("no API key with that fingerprint")
        return key

    async def list_api_keys(self, user_id: str) -> list[APIKey]:
        rows = await self._db.fetch_all(f"{SELECT_KEY} WHERE user_id = ? ORDER BY created_at, id", [user_id])
        return [self._key(row) for row in rows]

    async def touch_api_key(self, key_id: str, at: datetime | None = None) -> APIKey:
        stamp = self._dialect.ts_param(now() if at is None else at)

        async def reread(conn: Connection) -> Row | None:
            return await conn.fetch_one(f"{SELECT_KEY} WHERE id = ?", [key_id])

        row = await self._db.write(TOUCH_KEY, [stamp, stamp, key_id], result="one", reread=reread)
        if row is None:
            raise NotFoundError(f"API key {key_id!r} not found")
        return self._key(row)

    async def import_users(self, users: Iterable[User]) -> int:
        """Write users verbatim (ids and timestamps as given), upserting by id; returns how many."""
        ts = self._dialect.ts_param

        def row(given: User) -> list[object]:
            user = inputs.check_instance(given, User, "an imported user")
            email = inputs.check_email(user.email, "email")
            return [
                inputs.check_id(user.id, "user id"),
                email,
                email.casefold(),
                inputs.check_enum(Role, user.role, "role").value,
                ts(inputs.check_aware(user.created_at, "created_at")),
                ts(inputs.check_aware(user.updated_at, "updated_at")),
            ]

        try:
            return await write_batches(self._db, users, row, IMPORT_USER)
        except DuplicateError as exc:
            raise DuplicateError(f"an imported user's email is taken by another user id: {exc}") from exc

    async def import_api_keys(self, keys: Iterable[APIKey]) -> int:
        """Write API keys verbatim (fingerprints, prefixes and times as given), upserting by id; returns how many.

        Raises:
            NotFoundError: a key's user does not exist in this store.
        """
        ts = self._dialect.ts_param

        def row(given: APIKey) -> list[object]:
            key = inputs.check_instance(given, APIKey, "an imported API key")
            return [
                inputs.check_id(key.id, "API key id"),
                inputs.check_id(key.user_id, "user_id"),
                _fingerprint(key.fingerprint),
                inputs.check_text(key.prefix, "prefix", max_length=64),
                ts(inputs.check_aware(key.created_at, "created_at")),
                None if key.last_used is None else ts(inputs.check_aware(key.last_used, "last_used")),
            ]

        try:
            return await write_batches(self._db, keys, row, IMPORT_KEY)
        except ForeignKeyViolation as exc:
            raise NotFoundError(
                f"an imported API key belongs to a user missing from this store: {exc}"
            ) from exc

    async def delete_api_key(self, key_id: str) -> None:
        await delete_one(self._db, ("api_keys", "id"), key_id, "API key")


def _fingerprint(value: object) -> str:
    """An imported fingerprint: a SHA-256 hex digest as :func:`fingerprint` writes it, else no lookup (which goes
    by that form) could ever find the key. The value is not quoted: it may be a key pasted by mistake."""
    text = inputs.check_id(value, "fingerprint")
    if FINGERPRINT.fullmatch(text) is None:
        raise ValidationError(
            f"fingerprint must be a SHA-256 digest of 64 lowercase hexadecimal digits; the {len(text)} "
            "characters given are not one"
        )
    return text
