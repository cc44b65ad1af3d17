"""The stateful, model-based test of the AuthRepository (users, API keys) and the MetadataRepository.

A hypothesis ``RuleBasedStateMachine`` in the manner of ``tests/model/machine.py``: one long-lived provider
(``tests/model/drivers.py``), rules for every public method of ``auth`` and ``metadata`` with valid and invalid
arguments (unknown ids, duplicate emails in every case and case folding, hostile strings, wrong types, naive
datetimes, imports that break a rule half way), and on the async API calls cancelled at random moments. Each
rule decides from a small reference model what the call must return or raise; after every step
:meth:`AccountMachine.store_matches_the_model` compares the whole store with it: ``list_users``, the
``list_api_keys`` of every user, and ``metadata.items()``.

The pieces the add-on's machine (``tests/model/addon.py``) shares live here too: :class:`StoreMachine` (calling
a plan, with or without a cancellation) and :class:`MetadataMachine` (the metadata rules and their model).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition

from planflow import (
    AlreadyBootstrappedError,
    APIKey,
    CreatedAPIKey,
    DuplicateError,
    NotFoundError,
    PlanflowError,
    Role,
    User,
    ValidationError,
    WrongTypeError,
)
from tests.model.drivers import Call, Driver, Outcome
from tests.model.machine import HOSTILE_IDS, step

#: Values of the wrong type for a ``str`` argument: each must be a WrongTypeError (a ValidationError).
WRONG_TYPES: list[object] = [7, None, b"bytes", 1.5]
#: (value, error) pairs no id argument may accept.
BAD_IDS: list[tuple[object, type[PlanflowError]]] = [
    *((value, ValidationError) for value in HOSTILE_IDS),
    *((value, WrongTypeError) for value in WRONG_TYPES),
]

#: Emails that collide when case-folded: ANN/ann, ß/SS/ss, the Kelvin sign and k, É/é. One of 320 characters,
#: the longest accepted.
EMAILS = [
    "ann@x.org",
    "ANN@X.ORG",
    "Straße@x.org",
    "STRASSE@x.org",
    "\u212a@x.org",
    "k@x.org",
    "émile@x.org",
    "ÉMILE@x.org",
    "o'brien+tag@日本.jp",
    "x" * 314 + "@x.org",
]
BAD_EMAILS: list[tuple[object, type[PlanflowError]]] = [
    ("not-an-email", ValidationError),
    (" ann@x.org", ValidationError),
    ("ann@x.org\n", ValidationError),
    ("x" * 315 + "@x.org", ValidationError),
    ("nul\x00@x.org", ValidationError),
    ("lone\ud800@x.org", ValidationError),
    ("", ValidationError),
    (7, WrongTypeError),
    (b"ann@x.org", WrongTypeError),
]
ROLES: list[object] = [Role.USER, Role.ADMIN, "admin", "user"]
BAD_ROLES: list[object] = ["root", "ADMIN", 1, None]

INDIA = timezone(timedelta(hours=5, minutes=30))
#: Moments an import or a touch may carry: offsets other than UTC, the first and last microsecond UTC knows.
MOMENTS = [
    datetime(2022, 2, 2, 2, 2, 2, 222222, tzinfo=UTC),
    datetime(2022, 2, 2, 7, 32, 2, 222222, tzinfo=INDIA),  # the same instant
    datetime(2022, 2, 2, 2, 2, 2, 222223, tzinfo=UTC),
    datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=-3))),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]
BAD_MOMENTS: list[tuple[object, type[PlanflowError]]] = [
    (datetime(2022, 2, 2), ValidationError),  # naive
    (datetime(1, 1, 1, tzinfo=INDIA), ValidationError),  # before year 1 in UTC
    ("2022-02-02T00:00:00+00:00", WrongTypeError),
    (1643760000, WrongTypeError),
]
#: Ids an import may give users and keys, beside the ids the store made.
IMPORTED_IDS = ["imp-a", "IMP-A", "imp-é", "i" * 511 + "😀"]
FINGERPRINTS = [hashlib.sha256(f"imported {n}".encode()).hexdigest() for n in range(3)]
#: Fingerprints no import may store (a key stored under one could never be found by its fingerprint).
BAD_FINGERPRINTS: list[object] = [
    "short",
    FINGERPRINTS[0].upper(),
    "g" * 64,
    FINGERPRINTS[0] + "0",
    "",
    None,
]
PREFIXES = ["pf_abcdefg", "", "p" * 64, "ключ"]
BAD_PREFIXES: list[object] = ["p" * 65, "nul\x00", 7]

META_KEYS = ["a", "B", "b", "é", "😀", "a.b", "planflow.copy.incomplete", "k" * 511 + "😀"]
META_VALUES = [
    "",
    "v",
    "  padded  ",
    "Réunion 日本語 — ñandú 😀 \"quoted\" 'single' back\\slash\nnew line\ttab \u200b",
    '{"from": "sqlite a.db"}',
    "x" * 5000,
]
BAD_META_KEYS: list[tuple[object, type[PlanflowError]]] = [
    ("", ValidationError),
    ("k" * 513, ValidationError),
    ("a\x00b", ValidationError),
    ("lone \udc80", ValidationError),
    (7, WrongTypeError),
    (None, WrongTypeError),
    (b"bytes", WrongTypeError),
]
BAD_META_VALUES: list[tuple[object, type[PlanflowError]]] = [
    ("a\x00b", ValidationError),
    ("lone \ud800", ValidationError),
    (1, WrongTypeError),
    (None, WrongTypeError),
]

#: How long a cancelled call may run before it is cancelled: at once (before it starts), or up to 3 ms later
#: (a call takes a fraction of a millisecond to a few), in steps of 0.1 ms.
DELAYS = st.integers(0, 30).map(lambda tenths: tenths / 10_000)


# Plans: one call, what it must do, and how a cancelled one is recognised as applied -------------------------


@dataclass
class Plan:
    """One call of a rule and what it must do, decided from the model before it is made.

    ``error``: the error it must raise (the store stays as it was), or ``None``: it must succeed, and
    ``accept(value)`` checks its value and brings the model up to date. ``applied(store)``: for a call that was
    cancelled before it returned, given what the store now holds (not what the model holds), the value the
    call returned had it finished (the store's own choices, an id say, are read from it).
    """

    what: str
    call: Call
    error: type[PlanflowError] | None
    accept: Callable[[Any], None] = lambda value: None
    applied: Callable[[Any], Any] | None = None


def bad(
    data: st.DataObject, pool: Sequence[tuple[object, type[PlanflowError]]]
) -> tuple[object, type[PlanflowError]]:
    """A value of ``pool`` and the error it must raise."""
    return data.draw(st.sampled_from(pool))


def pick(data: st.DataObject, choices: Sequence[Any], default: Any = None) -> Any:
    """One of ``choices`` (``default`` when there are none), by one draw whose range never depends on them.

    What the store holds depends on more than the draws (cancellations land where they land, the store makes
    ids): draws whose number or range followed it would make hypothesis find its data generation inconsistent.
    """
    index = data.draw(st.integers(0, 255))
    return choices[index % len(choices)] if choices else default


def sometimes(data: st.DataObject, tenths: int) -> bool:
    """True ``tenths`` times in ten."""
    return data.draw(st.integers(0, 9)) < tenths


class StoreMachine(RuleBasedStateMachine):
    """A machine that calls one long-lived provider (``driver``, set per test) and checks plans (see :class:`Plan`)."""

    driver: ClassVar[Driver]
    #: Steps walked and rules run, by name, over every example of a test (reported at its end).
    walked: ClassVar[dict[str, int]]

    def __init__(self) -> None:
        super().__init__()
        self.driver.reset()

    def call(self, call: Call) -> Outcome:
        return self.driver.outcome(call)

    def count(self, name: str) -> None:
        self.walked[name] = self.walked.get(name, 0) + 1

    def expect_error(self, outcome: Outcome, error: type[PlanflowError], what: str) -> None:
        assert outcome.error is not None, f"{what}: expected {error.__name__}, got {outcome.value!r}"
        assert isinstance(outcome.error, error), f"{what}: expected {error.__name__}, got {outcome.error!r}"

    def expect_value(self, outcome: Outcome, what: str) -> Any:
        assert outcome.error is None, f"{what}: unexpected {outcome.error!r}"
        return outcome.value

    def check(self, plan: Plan, outcome: Outcome) -> None:
        if plan.error is not None:
            self.expect_error(outcome, plan.error, plan.what)
        else:
            plan.accept(self.expect_value(outcome, plan.what))

    def execute(self, plan: Plan) -> None:
        """Make the plan's call and check what it did."""
        self.check(plan, self.call(plan.call))

    def execute_cancelled(self, plan: Plan, delay: float) -> None:
        """Make the plan's call, cancel it after ``delay`` seconds, and check that it was applied whole or not at
        all: the store is as before, or as the call would have left it (then the model follows the store)."""
        before = self.model_snapshot()
        first = self.driver.cancelled(plan.call, delay)
        if first is not None:
            self.count("cancelled (finished first)")
            self.check(plan, first)
            return
        found = self.store_snapshot()
        if found == before:
            self.count("cancelled (not applied)")
            return
        assert plan.applied is not None, (
            f"{plan.what}: must be refused, yet cancelled it changed the store:\nstore {found!r}\nmodel {before!r}"
        )
        self.count("cancelled (applied)")
        plan.accept(plan.applied(found))
        assert self.store_snapshot() == self.model_snapshot(), f"{plan.what}: cancelled, applied in part"

    def model_snapshot(self) -> object:
        """What the model says the whole store holds, comparable with :meth:`store_snapshot`."""
        raise NotImplementedError

    def store_snapshot(self) -> object:
        """What the whole store holds, read through the provider."""
        raise NotImplementedError


class MetadataMachine(StoreMachine):
    """The MetadataRepository's rules and model (``self.meta``); machines of other repositories extend it."""

    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}

    def metadata_snapshot(self) -> dict[str, str]:
        items = self.expect_value(self.call(lambda p: p.metadata.items()), "metadata.items")
        assert list(items) == sorted(items), f"metadata.items() not in code point order: {list(items)}"
        return dict(items)

    def meta_key(self, data: st.DataObject) -> tuple[object, type[PlanflowError] | None]:
        if sometimes(data, 2):
            return bad(data, BAD_META_KEYS)
        return data.draw(st.sampled_from(META_KEYS)), None

    def metadata_plan(self, data: st.DataObject) -> Plan:
        """A write: ``set`` or ``delete``, with a good or a bad key (and value)."""
        key, refused = self.meta_key(data)
        if data.draw(st.booleans()):
            value: object
            if sometimes(data, 2):
                value, wrong = bad(data, BAD_META_VALUES)
                refused = refused or wrong
            else:
                value = data.draw(st.sampled_from(META_VALUES))

            def set_value(_: object) -> None:
                assert isinstance(key, str) and isinstance(value, str)
                self.meta[key] = value

            return Plan(
                f"metadata.set({key!r:.40}, {value!r:.40})",
                lambda p: p.metadata.set(key, value),
                refused,
                set_value,
                lambda store: None,
            )

        def delete(_: object) -> None:
            self.meta.pop(key, None)  # pyright: ignore[reportArgumentType, reportCallIssue]

        return Plan(
            f"metadata.delete({key!r:.40})",
            lambda p: p.metadata.delete(key),
            refused,
            delete,
            lambda store: None,
        )

    @step(data=st.data())
    def metadata_write(self, data: st.DataObject) -> None:
        self.execute(self.metadata_plan(data))

    @step(data=st.data())
    def metadata_get(self, data: st.DataObject) -> None:
        key, refused = self.meta_key(data)

        def same(value: object) -> None:
            assert value == self.meta.get(key), f"metadata.get({key!r:.40}): {value!r:.60}"  # pyright: ignore[reportArgumentType, reportCallIssue]

        self.execute(Plan(f"metadata.get({key!r:.40})", lambda p: p.metadata.get(key), refused, same))


@dataclass
class Accounts:
    """The reference model of users, API keys and metadata: what the store must hold."""

    users: dict[str, User] = field(default_factory=dict[str, User])
    keys: dict[str, APIKey] = field(default_factory=dict[str, APIKey])
    #: The plaintext of every key created in this example (imported keys have none).
    plaintexts: dict[str, str] = field(default_factory=dict[str, str])
    #: Ids of users and keys deleted in this example, in order: unknown ids that once existed.
    former: list[str] = field(default_factory=list[str])

    def owner(self, email: str) -> str | None:
        """The id of the user whose email is ``email`` case-folded."""
        folded = email.casefold()
        return next((u.id for u in self.users.values() if u.email.casefold() == folded), None)

    def user_list(self) -> list[User]:
        return sorted(self.users.values(), key=lambda u: (u.created_at, u.id))

    def keys_of(self, user_id: str) -> list[APIKey]:
        return sorted(
            (k for k in self.keys.values() if k.user_id == user_id), key=lambda k: (k.created_at, k.id)
        )

    def has_admin(self) -> bool:
        return any(u.role is Role.ADMIN for u in self.users.values())

    def fingerprint_owner(self, fingerprint: str) -> str | None:
        return next((k.id for k in self.keys.values() if k.fingerprint == fingerprint), None)


@dataclass(frozen=True)
class Store:
    """The whole store as the public API shows it."""

    users: list[User]
    keys: dict[str, list[APIKey]]
    meta: dict[str, str]


def _aware_utc(moment: datetime | None) -> bool:
    return moment is None or moment.utcoffset() == timedelta(0)


class AccountMachine(MetadataMachine):
    """Users, API keys and metadata (see the module docstring). ``driver`` is set per test."""

    def __init__(self) -> None:
        super().__init__()
        self.model = Accounts()

    # Snapshots and the invariant -------------------------------------------------------------------------

    def model_snapshot(self) -> Store:
        return Store(
            self.model.user_list(),
            {u: self.model.keys_of(u) for u in sorted(self.model.users)},
            dict(self.meta),
        )

    def store_snapshot(self) -> Store:
        users = self.expect_value(self.call(lambda p: p.auth.list_users()), "list_users")
        ids = sorted({u.id for u in users} | set(self.model.users))
        keys = {
            user_id: self.expect_value(
                self.call(lambda p, u=user_id: p.auth.list_api_keys(u)), "list_api_keys"
            )
            for user_id in ids
        }
        return Store(
            users,
            {u: k for u, k in keys.items() if k or u in {x.id for x in users}},
            self.metadata_snapshot(),
        )

    @invariant()
    def store_matches_the_model(self) -> None:
        self.count("steps")
        found, expected = self.store_snapshot(), self.model_snapshot()
        assert found.users == expected.users, _listing("users", found.users, expected.users)
        for user in found.users:
            assert _aware_utc(user.created_at) and _aware_utc(user.updated_at), f"not UTC: {user!r}"
        for user_id in sorted(set(found.keys) | set(expected.keys)):
            got, wanted = found.keys.get(user_id, []), expected.keys.get(user_id, [])
            assert got == wanted, _listing(f"keys of {user_id!r}", got, wanted)
            for key in got:
                assert _aware_utc(key.created_at) and _aware_utc(key.last_used), f"not UTC: {key!r}"
        assert found.meta == expected.meta, (
            f"metadata: store {found.meta!r:.300}\nmodel {expected.meta!r:.300}"
        )

    # Drawing arguments -----------------------------------------------------------------------------------

    def some_id(self, data: st.DataObject, known: Iterable[str]) -> tuple[object, type[PlanflowError] | None]:
        """Mostly an id of ``known``; else one deleted in this example, one never stored, or a bad value with
        the error it must raise."""
        kind = data.draw(st.integers(0, 9))
        known_id = pick(data, list(known))
        other_id = pick(data, ["ghost", *self.model.former])
        bad_id = bad(data, BAD_IDS)
        if kind < 6 and known_id is not None:
            return known_id, None
        if kind < 8:
            return other_id, None
        return bad_id

    def some_email(self, data: st.DataObject) -> tuple[object, type[PlanflowError] | None]:
        if sometimes(data, 2):
            return bad(data, BAD_EMAILS)
        return data.draw(st.sampled_from(EMAILS)), None

    def some_role(self, data: st.DataObject) -> tuple[object, type[PlanflowError] | None]:
        if sometimes(data, 1):
            return data.draw(st.sampled_from(BAD_ROLES)), ValidationError
        return data.draw(st.sampled_from(ROLES)), None

    def some_moment(self, data: st.DataObject) -> tuple[object, type[PlanflowError] | None]:
        if sometimes(data, 2):
            return bad(data, BAD_MOMENTS)
        return data.draw(st.sampled_from(MOMENTS)), None

    # Users -----------------------------------------------------------------------------------------------

    def new_user(self, email: object, role: object, admin: bool) -> Callable[[User], None]:
        def accept(user: User) -> None:
            assert isinstance(user, User), f"not a User: {user!r}"
            assert isinstance(user.id, str) and user.id and user.id not in self.model.users
            assert user.email == email and user.role is (Role.ADMIN if admin else Role(role))
            assert user.created_at == user.updated_at and _aware_utc(user.created_at), f"{user!r}"
            self.model.users[user.id] = user

        return accept

    def created_user(self, store: Store) -> User:
        """The one user a cancelled creation added to ``store``."""
        new = [u for u in store.users if u.id not in self.model.users]
        assert len(new) == 1, f"a cancelled creation added {new!r}"
        return new[0]

    def create_user_plan(self, data: st.DataObject) -> Plan:
        email, refused = self.some_email(data)
        if data.draw(st.booleans()):
            role, wrong = self.some_role(data)
            call: Call = lambda p: p.auth.create_user(email, role)  # noqa: E731
            refused = refused or wrong
        else:
            role = Role.USER
            call = lambda p: p.auth.create_user(email)  # noqa: E731
        if refused is None and self.model.owner(email) is not None:  # pyright: ignore[reportArgumentType]
            refused = DuplicateError
        return Plan(
            f"create_user({email!r:.40}, {role!r})",
            call,
            refused,
            self.new_user(email, role, False),
            self.created_user,
        )

    def create_initial_admin_plan(self, data: st.DataObject) -> Plan:
        email, refused = self.some_email(data)
        if refused is None:
            if self.model.has_admin():
                refused = AlreadyBootstrappedError
            elif self.model.owner(email) is not None:  # pyright: ignore[reportArgumentType]
                refused = DuplicateError
        return Plan(
            f"create_initial_admin({email!r:.40})",
            lambda p: p.auth.create_initial_admin(email),
            refused,
            self.new_user(email, Role.ADMIN, True),
            self.created_user,
        )

    def update_user_plan(self, data: st.DataObject) -> Plan:
        user_id, refused = self.some_id(data, self.model.users)
        email: object = None
        role: object = None
        if data.draw(st.booleans()):
            email, wrong = self.some_email(data)
            refused = refused or wrong
        if data.draw(st.booleans()):
            role, wrong = self.some_role(data)
            if role is None:
                wrong = None  # None means "leave the role"
            refused = refused or wrong
        current = self.model.users.get(user_id)  # pyright: ignore[reportArgumentType, reportCallIssue]
        if refused is None:
            if current is None:
                refused = NotFoundError
            elif email is not None and self.model.owner(email) not in (None, user_id):  # pyright: ignore[reportArgumentType]
                refused = DuplicateError

        def accept(user: User) -> None:
            assert current is not None
            expected = dataclasses.replace(
                current,
                email=current.email if email is None else email,  # pyright: ignore[reportArgumentType]
                role=current.role if role is None else Role(role),
                updated_at=user.updated_at,
            )
            assert user == expected, f"update_user: {user!r}\nexpected {expected!r}"
            assert _aware_utc(user.updated_at)
            self.model.users[current.id] = user

        return Plan(
            f"update_user({user_id!r:.40}, email={email!r:.40}, role={role!r})",
            lambda p: p.auth.update_user(user_id, email=email, role=role),
            refused,
            accept,
            lambda store: next(u for u in store.users if u.id == user_id),
        )

    def delete_user_plan(self, data: st.DataObject) -> Plan:
        user_id, refused = self.some_id(data, self.model.users)
        if refused is None and user_id not in self.model.users:
            refused = NotFoundError

        def accept(value: object) -> None:
            assert value is None
            assert isinstance(user_id, str)
            keys = [k.id for k in self.model.keys_of(user_id)]
            del self.model.users[user_id]
            for key_id in keys:
                del self.model.keys[key_id]
                self.model.plaintexts.pop(key_id, None)
            self.model.former.extend([user_id, *keys])
            # Its keys went with it: not listed under its id, not found by theirs.
            assert (
                self.expect_value(self.call(lambda p: p.auth.list_api_keys(user_id)), "list_api_keys") == []
            )
            for key_id in keys:
                self.expect_error(
                    self.call(lambda p, k=key_id: p.auth.get_api_key(k)),
                    NotFoundError,
                    "a deleted user's key",
                )

        return Plan(
            f"delete_user({user_id!r:.40})",
            lambda p: p.auth.delete_user(user_id),
            refused,
            accept,
            lambda s: None,
        )

    def import_users_plan(self, data: st.DataObject) -> Plan:
        """Users written verbatim, upserting by id: any bad item refuses the whole import (one batch); so does
        an email taken by another id, met in order."""
        users: list[object] = []
        refused: type[PlanflowError] | None = None
        for _ in range(data.draw(st.integers(0, 3))):
            user_id = pick(data, [*IMPORTED_IDS, *self.model.users])
            email = data.draw(st.sampled_from(EMAILS))
            role = data.draw(st.sampled_from([Role.USER, Role.ADMIN]))
            created, updated = data.draw(st.sampled_from(MOMENTS)), data.draw(st.sampled_from(MOMENTS))
            if sometimes(data, 1):
                what = data.draw(
                    st.sampled_from(["not a user", "id", "email", "role", "created_at", "updated_at"])
                )
                if what == "not a user":
                    users.append(data.draw(st.sampled_from([{"id": user_id}, None, "user"])))
                    refused = refused or WrongTypeError
                    continue
                if what == "id":
                    user_id, wrong = bad(data, BAD_IDS)
                elif what == "email":
                    email, wrong = bad(data, BAD_EMAILS)
                elif what == "role":
                    role, wrong = data.draw(st.sampled_from(BAD_ROLES[:2])), ValidationError
                else:
                    moment, wrong = bad(data, BAD_MOMENTS)
                    created, updated = (moment, updated) if what == "created_at" else (created, moment)
                refused = refused or wrong
            users.append(User(user_id, email, role, created, updated))  # pyright: ignore[reportArgumentType]
        trial = dict(self.model.users)
        if refused is None:
            for user in users:
                assert isinstance(user, User)
                owner = next(
                    (u.id for u in trial.values() if u.email.casefold() == user.email.casefold()), None
                )
                if owner not in (None, user.id):
                    refused = DuplicateError
                    break
                trial[user.id] = user
        kind = data.draw(st.sampled_from(["list", "tuple", "generator"]))

        def call(p: Any) -> Any:
            given: Iterable[object] = (
                list(users) if kind == "list" else tuple(users) if kind == "tuple" else (u for u in users)
            )
            return p.auth.import_users(given)

        def accept(count: object) -> None:
            assert count == len(users), f"import_users returned {count!r} for {len(users)} users"
            self.model.users = trial

        return Plan(f"import_users({users!r:.200})", call, refused, accept, lambda store: len(users))

    @step(data=st.data())
    def create_user(self, data: st.DataObject) -> None:
        self.execute(self.create_user_plan(data))

    @step(data=st.data())
    def create_initial_admin(self, data: st.DataObject) -> None:
        self.execute(self.create_initial_admin_plan(data))

    @step(data=st.data())
    def update_user(self, data: st.DataObject) -> None:
        self.execute(self.update_user_plan(data))

    @step(data=st.data())
    def delete_user(self, data: st.DataObject) -> None:
        self.execute(self.delete_user_plan(data))

    @step(data=st.data())
    def import_users(self, data: st.DataObject) -> None:
        self.execute(self.import_users_plan(data))

    @step(data=st.data())
    def import_something_else(self, data: st.DataObject) -> None:
        """Imports given something that is no iterable of models: a WrongTypeError, nothing stored."""
        given = data.draw(st.sampled_from(["users", b"users", {"id": "u"}, 7, None]))
        method = data.draw(st.sampled_from(["import_users", "import_api_keys"]))
        self.execute(Plan(f"{method}({given!r})", lambda p: getattr(p.auth, method)(given), WrongTypeError))

    @step(data=st.data())
    def get_user(self, data: st.DataObject) -> None:
        user_id, refused = self.some_id(data, self.model.users)
        current = self.model.users.get(user_id)  # pyright: ignore[reportArgumentType, reportCallIssue]
        if refused is None and current is None:
            refused = NotFoundError

        def same(user: User) -> None:
            assert user == current, f"get_user({user_id!r}): {user!r}\nexpected {current!r}"

        self.execute(Plan(f"get_user({user_id!r:.40})", lambda p: p.auth.get_user(user_id), refused, same))

    @step(data=st.data())
    def get_user_by_email(self, data: st.DataObject) -> None:
        email, refused = self.some_email(data)
        owner = None if refused else self.model.owner(email)  # pyright: ignore[reportArgumentType]
        if refused is None and owner is None:
            refused = NotFoundError

        def same(user: User) -> None:
            assert owner is not None
            assert user == self.model.users[owner], f"get_user_by_email({email!r}): {user!r}"

        self.execute(
            Plan(
                f"get_user_by_email({email!r:.40})", lambda p: p.auth.get_user_by_email(email), refused, same
            )
        )

    # API keys --------------------------------------------------------------------------------------------

    def create_api_key_plan(self, data: st.DataObject) -> Plan:
        user_id, refused = self.some_id(data, self.model.users)
        return self.create_api_key_plan_for(user_id, refused)

    def create_api_key_plan_for(self, user_id: object, refused: type[PlanflowError] | None = None) -> Plan:
        if refused is None and user_id not in self.model.users:
            refused = NotFoundError

        def accept(created: CreatedAPIKey) -> None:
            key = created.key
            assert key.user_id == user_id and key.last_used is None and _aware_utc(key.created_at), f"{key!r}"
            assert key.id not in self.model.keys and isinstance(key.id, str) and key.id
            assert len(key.fingerprint) == 64 and set(key.fingerprint) <= set("0123456789abcdef"), (
                key.fingerprint
            )
            if created.plaintext is not None:  # None: read back after a cancellation, never returned
                assert hashlib.sha256(created.plaintext.encode()).hexdigest() == key.fingerprint
                assert created.plaintext.startswith(key.prefix) and key.prefix.startswith("pf_")
                assert created.plaintext not in repr(created) and created.plaintext not in repr(key)
                self.model.plaintexts[key.id] = created.plaintext
            self.model.keys[key.id] = key

        def applied(store: Store) -> CreatedAPIKey:
            assert isinstance(user_id, str)
            new = [k for k in store.keys.get(user_id, []) if k.id not in self.model.keys]
            assert len(new) == 1, f"a cancelled create_api_key added {new!r}"
            return CreatedAPIKey(new[0], None)  # pyright: ignore[reportArgumentType]

        return Plan(
            f"create_api_key({user_id!r:.40})",
            lambda p: p.auth.create_api_key(user_id),
            refused,
            accept,
            applied,
        )

    def touch_api_key_plan(self, data: st.DataObject) -> Plan:
        key_id, refused = self.some_id(data, self.model.keys)
        current = self.model.keys.get(key_id)  # pyright: ignore[reportArgumentType, reportCallIssue]
        # Now (None), a moment of MOMENTS, or one beside the key's last use: a microsecond before, the same, after.
        last = None if current is None else current.last_used
        how = data.draw(st.sampled_from(["now", "moment", "earlier", "same", "later"]))
        at, wrong = self.some_moment(data)
        if how == "now":
            at, wrong = None, None
        elif how != "moment" and last is not None:
            shift = {
                "earlier": -timedelta(microseconds=1),
                "same": timedelta(0),
                "later": timedelta(seconds=1),
            }
            try:
                at, wrong = last + shift[how], None
            except OverflowError:  # beyond the first or last microsecond
                at, wrong = last, None
        refused = refused or wrong
        if refused is None and current is None:
            refused = NotFoundError

        def accept(key: APIKey) -> None:
            assert current is not None and key.last_used is not None, f"touch_api_key: {key!r}"
            assert key == dataclasses.replace(current, last_used=key.last_used), f"{key!r}\nwas {current!r}"
            before = current.last_used
            if isinstance(at, datetime):
                assert key.last_used == (at if before is None else max(before, at)), (
                    f"{key!r}, touched at {at!r}"
                )
            else:  # now: never backwards, and a last use beyond tomorrow stays
                assert before is None or key.last_used >= before, f"{key!r} moved back from {before!r}"
                if before is not None and before > datetime.now(UTC) + timedelta(days=1):
                    assert key.last_used == before
            self.model.keys[current.id] = key

        def applied(store: Store) -> APIKey:
            assert current is not None
            return next(k for k in store.keys.get(current.user_id, []) if k.id == current.id)

        call: Call = (
            (lambda p: p.auth.touch_api_key(key_id))
            if at is None
            else (lambda p: p.auth.touch_api_key(key_id, at))
        )
        return Plan(f"touch_api_key({key_id!r:.40}, {at!r})", call, refused, accept, applied)

    def delete_api_key_plan(self, data: st.DataObject) -> Plan:
        key_id, refused = self.some_id(data, self.model.keys)
        if refused is None and key_id not in self.model.keys:
            refused = NotFoundError

        def accept(value: object) -> None:
            assert value is None and isinstance(key_id, str)
            del self.model.keys[key_id]
            self.model.plaintexts.pop(key_id, None)
            self.model.former.append(key_id)

        return Plan(
            f"delete_api_key({key_id!r:.40})",
            lambda p: p.auth.delete_api_key(key_id),
            refused,
            accept,
            lambda s: None,
        )

    def import_api_keys_plan(self, data: st.DataObject) -> Plan:
        """Keys written verbatim, upserting by id: a bad item refuses the whole import; so does, met in order, a
        key of a user not stored (NotFoundError) or a fingerprint another key has (DuplicateError)."""
        keys: list[object] = []
        refused: type[PlanflowError] | None = None
        users = list(self.model.users)
        for _ in range(data.draw(st.integers(0, 3))):
            key_id = pick(data, [*IMPORTED_IDS, *self.model.keys])
            user_id = pick(data, [*users, *users, "ghost"])
            fingerprint = pick(data, [*FINGERPRINTS, *(k.fingerprint for k in self.model.keys.values())])
            prefix: object = data.draw(st.sampled_from(PREFIXES))
            created = data.draw(st.sampled_from(MOMENTS))
            used = data.draw(st.sampled_from([None, *MOMENTS]))
            if sometimes(data, 1):
                what = data.draw(
                    st.sampled_from(
                        ["not a key", "id", "user_id", "fingerprint", "prefix", "created_at", "last_used"]
                    )
                )
                wrong: type[PlanflowError] = ValidationError
                if what == "not a key":
                    keys.append(data.draw(st.sampled_from([{"id": key_id}, None, "key"])))
                    refused = refused or WrongTypeError
                    continue
                if what == "id":
                    key_id, wrong = bad(data, BAD_IDS)
                elif what == "user_id":
                    user_id, wrong = bad(data, BAD_IDS)
                elif what == "fingerprint":
                    fingerprint = data.draw(st.sampled_from(BAD_FINGERPRINTS))
                elif what == "prefix":
                    prefix = data.draw(st.sampled_from(BAD_PREFIXES))
                else:
                    moment, wrong = bad(data, BAD_MOMENTS)
                    created, used = (moment, used) if what == "created_at" else (created, moment)
                refused = refused or wrong
            keys.append(APIKey(key_id, user_id, fingerprint, prefix, created, used))  # pyright: ignore[reportArgumentType]
        trial = dict(self.model.keys)
        possible: set[type[PlanflowError]] = set()
        if refused is None:
            for key in keys:
                assert isinstance(key, APIKey)
                if next((k.id for k in trial.values() if k.fingerprint == key.fingerprint), key.id) != key.id:
                    possible.add(DuplicateError)
                if key.user_id not in self.model.users:
                    possible.add(NotFoundError)
                if possible:
                    break
                trial[key.id] = key
        if len(possible) == 1:
            refused = possible.pop()
        elif possible:
            refused = PlanflowError  # a key breaking both rules: either error names a real fault

        def accept(count: object) -> None:
            assert count == len(keys), f"import_api_keys returned {count!r} for {len(keys)} keys"
            for key_id in list(self.model.plaintexts):
                if trial[key_id].fingerprint != self.model.keys[key_id].fingerprint:
                    del self.model.plaintexts[key_id]  # an import gave the key another fingerprint
            self.model.keys = trial

        return Plan(
            f"import_api_keys({keys!r:.200})",
            lambda p: p.auth.import_api_keys(list(keys)),
            refused,
            accept,
            lambda store: len(keys),
        )

    @step(data=st.data())
    def create_api_key(self, data: st.DataObject) -> None:
        self.execute(self.create_api_key_plan(data))

    @step(data=st.data())
    def touch_api_key(self, data: st.DataObject) -> None:
        self.execute(self.touch_api_key_plan(data))

    @step(data=st.data())
    def delete_api_key(self, data: st.DataObject) -> None:
        self.execute(self.delete_api_key_plan(data))

    @step(data=st.data())
    def import_api_keys(self, data: st.DataObject) -> None:
        self.execute(self.import_api_keys_plan(data))

    @step(data=st.data())
    def get_api_key(self, data: st.DataObject) -> None:
        key_id, refused = self.some_id(data, self.model.keys)
        current = self.model.keys.get(key_id)  # pyright: ignore[reportArgumentType, reportCallIssue]
        if refused is None and current is None:
            refused = NotFoundError

        def same(key: APIKey) -> None:
            assert key == current, f"get_api_key({key_id!r}): {key!r}\nexpected {current!r}"

        self.execute(
            Plan(f"get_api_key({key_id!r:.40})", lambda p: p.auth.get_api_key(key_id), refused, same)
        )

    @step(data=st.data())
    def get_api_key_by_fingerprint(self, data: st.DataObject) -> None:
        """By a stored fingerprint (in either case: it is hex), by a key's plaintext (not its fingerprint), by
        digests never stored, by text of another length, or by bad values."""
        never = [*FINGERPRINTS, hashlib.sha256(b"never").hexdigest()]
        choices: dict[str, object] = {
            "stored": pick(data, [k.fingerprint for k in self.model.keys.values()], never[0]),
            "plaintext": pick(data, list(self.model.plaintexts.values()), "pf_never"),
            "digest": pick(data, never),
            "other": pick(data, ["abc", "0" * 63, "0" * 65, "é" * 64, "g" * 64]),
        }
        choices["upper"] = str(choices["stored"]).upper()
        how = data.draw(st.sampled_from([*choices, "bad"]))
        refused: type[PlanflowError] | None = None
        wrong = bad(data, BAD_IDS)
        if how == "bad":
            fingerprint, refused = wrong
        else:
            fingerprint = choices[how]
        owner = None
        if refused is None:
            assert isinstance(fingerprint, str)
            owner = self.model.fingerprint_owner(fingerprint.lower()) if len(fingerprint) == 64 else None
            refused = None if owner is not None else NotFoundError

        def same(key: APIKey) -> None:
            assert owner is not None and key == self.model.keys[owner], (
                f"by fingerprint {fingerprint!r}: {key!r}"
            )

        self.execute(
            Plan(
                f"get_api_key_by_fingerprint({fingerprint!r:.70})",
                lambda p: p.auth.get_api_key_by_fingerprint(fingerprint),
                refused,
                same,
            )
        )

    @step(data=st.data())
    def list_api_keys(self, data: st.DataObject) -> None:
        user_id, refused = self.some_id(data, self.model.users)

        def same(keys: list[APIKey]) -> None:
            assert isinstance(user_id, str)
            assert keys == self.model.keys_of(user_id), _listing(
                "list_api_keys", keys, self.model.keys_of(user_id)
            )

        self.execute(
            Plan(f"list_api_keys({user_id!r:.40})", lambda p: p.auth.list_api_keys(user_id), refused, same)
        )

    # The asynchronous API: cancellations -----------------------------------------------------------------

    @precondition(lambda self: self.driver.cancellable)
    @step(data=st.data())
    def cancelled_write(self, data: st.DataObject) -> None:
        """A write cancelled at a random moment: applied whole or not at all, and the connection stays usable
        (every later step reads through it)."""
        builders = [
            self.create_user_plan,
            self.create_initial_admin_plan,
            self.update_user_plan,
            self.delete_user_plan,
            self.import_users_plan,
            self.create_api_key_plan,
            self.touch_api_key_plan,
            self.delete_api_key_plan,
            self.import_api_keys_plan,
            self.metadata_plan,
        ]
        plan = data.draw(st.sampled_from(builders))(data)
        self.execute_cancelled(plan, data.draw(DELAYS))

    @initialize(data=st.data())
    def seed(self, data: st.DataObject) -> None:
        """Every example starts from an empty store (on the provider and connection of the whole test), into
        which most put a few users with keys, through the API and checked as any call is: without them most
        calls of an example would meet no user or key (a key needs a user, and few calls make one)."""
        distinct = [email for index, email in enumerate(EMAILS) if index in (0, 2, 4, 6, 8, 9)]
        for email in data.draw(st.lists(st.sampled_from(distinct), max_size=3, unique=True)):
            role = data.draw(st.sampled_from([Role.USER, Role.ADMIN]))
            self.execute(
                Plan(
                    f"create_user({email!r})",
                    lambda p, e=email, r=role: p.auth.create_user(e, r),
                    None,
                    self.new_user(email, role, False),
                )
            )
            user_id = next(reversed(self.model.users))
            for _ in range(data.draw(st.integers(0, 2))):
                self.execute(self.create_api_key_plan_for(user_id))


def _listing(what: str, found: Sequence[Any], expected: Sequence[Any]) -> str:
    lines = [f"{what}: the store differs from the model"]
    for index in range(max(len(found), len(expected))):
        got = found[index] if index < len(found) else None
        wanted = expected[index] if index < len(expected) else None
        mark = " " if got == wanted else "!"
        lines.append(f"{mark} {index}: store {got!r:.200}\n     model {wanted!r:.200}")
    return "\n".join(lines)
