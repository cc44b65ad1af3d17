"""The AuthRepository contract, run against every SQL driver."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta

import pytest

from planflow import AlreadyBootstrappedError, DuplicateError, NotFoundError, Provider, Role, ValidationError
from tests.contract.helpers import unique


class TestAuthRepository:
    """Behaviour every AuthRepository must have."""

    suite = "auth"

    def test_create_get_list_update_delete_user(self, provider: Provider) -> None:
        user = provider.auth.create_user(f"{unique('u')}@Example.com")
        assert user.role is Role.USER
        assert provider.auth.get_user(user.id) == user
        assert provider.auth.get_user_by_email(user.email.upper()) == user
        assert user in provider.auth.list_users()
        updated = provider.auth.update_user(user.id, role=Role.ADMIN)
        assert (
            updated.role is Role.ADMIN
            and updated.email == user.email
            and updated.created_at == user.created_at
        )
        provider.auth.delete_user(user.id)
        with pytest.raises(NotFoundError):
            provider.auth.get_user(user.id)
        with pytest.raises(NotFoundError):
            provider.auth.delete_user(user.id)

    def test_duplicate_email_is_case_insensitive(self, provider: Provider) -> None:
        email = f"{unique('dup')}@example.com"
        provider.auth.create_user(email)
        with pytest.raises(DuplicateError, match="already exists"):
            provider.auth.create_user(email.upper())
        other = provider.auth.create_user(f"{unique('o')}@example.com")
        with pytest.raises(DuplicateError):
            provider.auth.update_user(other.id, email=email.title())

    def test_invalid_email_and_role_are_rejected(self, provider: Provider) -> None:
        with pytest.raises(ValidationError, match="email"):
            provider.auth.create_user("not-an-email")
        with pytest.raises(ValidationError, match="role"):
            provider.auth.create_user("x@example.com", role="root")  # type: ignore[arg-type]

    def test_initial_admin_is_created_once_even_from_8_threads(self, provider: Provider) -> None:
        results: list[str] = []
        lock = threading.Lock()

        def worker(n: int) -> None:
            try:
                provider.auth.create_initial_admin(f"admin{n}@example.com")
                outcome = "created"
            except AlreadyBootstrappedError:
                outcome = "refused"
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == ["created"] + ["refused"] * 7
        assert [u.role for u in provider.auth.list_users()].count(Role.ADMIN) == 1

    def test_api_key_plaintext_is_returned_once_and_only_its_fingerprint_stored(
        self, provider: Provider
    ) -> None:
        user = provider.auth.create_user(f"{unique('k')}@example.com")
        created = provider.auth.create_api_key(user.id)
        digest = hashlib.sha256(created.plaintext.encode()).hexdigest()
        assert created.key.fingerprint == digest
        assert created.plaintext.startswith(created.key.prefix)
        assert created.plaintext not in repr(created) and created.plaintext not in repr(created.key)
        assert provider.auth.get_api_key_by_fingerprint(digest) == created.key
        assert provider.auth.get_api_key(created.key.id) == created.key
        assert provider.auth.list_api_keys(user.id) == [created.key]
        with pytest.raises(NotFoundError):
            provider.auth.get_api_key_by_fingerprint(hashlib.sha256(b"other").hexdigest())

    def test_api_key_for_unknown_user_raises_not_found(self, provider: Provider) -> None:
        with pytest.raises(NotFoundError, match="ghost-user"):
            provider.auth.create_api_key("ghost-user")

    def test_touch_last_used_never_moves_backwards(self, provider: Provider) -> None:
        user = provider.auth.create_user(f"{unique('t')}@example.com")
        key = provider.auth.create_api_key(user.id).key
        assert key.last_used is None
        later = datetime(2030, 1, 1, tzinfo=UTC)
        assert provider.auth.touch_api_key(key.id, later).last_used == later
        assert provider.auth.touch_api_key(key.id, later - timedelta(days=1)).last_used == later
        assert provider.auth.touch_api_key(
            key.id, later + timedelta(seconds=1)
        ).last_used == later + timedelta(seconds=1)
        with pytest.raises(NotFoundError):
            provider.auth.touch_api_key("ghost")

    def test_deleting_a_user_deletes_its_keys(self, provider: Provider) -> None:
        user = provider.auth.create_user(f"{unique('c')}@example.com")
        key = provider.auth.create_api_key(user.id).key
        provider.auth.delete_user(user.id)
        with pytest.raises(NotFoundError):
            provider.auth.get_api_key(key.id)

    def test_delete_api_key(self, provider: Provider) -> None:
        user = provider.auth.create_user(f"{unique('d')}@example.com")
        key = provider.auth.create_api_key(user.id).key
        provider.auth.delete_api_key(key.id)
        assert provider.auth.list_api_keys(user.id) == []
        with pytest.raises(NotFoundError):
            provider.auth.delete_api_key(key.id)

    def test_import_users_and_api_keys_verbatim(self, provider: Provider) -> None:
        from planflow import APIKey, User

        stamp = datetime(2022, 2, 2, 2, 2, 2, 222222, tzinfo=UTC)
        user = User(unique("uid"), f"{unique('imp')}@Example.org", Role.ADMIN, stamp, stamp)
        key = APIKey(unique("kid"), user.id, hashlib.sha256(b"k").hexdigest(), "pf_abcdefg", stamp, stamp)
        assert provider.auth.import_users([user]) == 1
        assert provider.auth.import_api_keys([key]) == 1
        assert provider.auth.get_user(user.id) == user
        assert provider.auth.get_api_key(key.id) == key
        assert provider.auth.import_users([user]) == 1  # idempotent
        with pytest.raises(NotFoundError):
            provider.auth.import_api_keys(
                [APIKey(unique("kid"), "ghost", hashlib.sha256(b"z").hexdigest(), "p", stamp)]
            )
