"""The MetadataRepository contract, run unchanged on every driver (tests/contract/drivers.py).

The suite is handed an open, empty :class:`~planflow.Provider` as the ``provider`` fixture
(tests/contract/conftest.py) and uses nothing but the Protocols.
"""

from __future__ import annotations

import threading

import pytest

from planflow import Provider, ValidationError
from tests.contract.helpers import a_task

UNICODE = "Réunion 日本語 — ñandú 😀 \"quoted\" 'single' back\\slash\nnew line\ttab \u200b"


class TestMetadataRepository:
    """Behaviour every MetadataRepository must have."""

    suite = "metadata"

    def test_a_key_never_set_reads_as_none(self, provider: Provider) -> None:
        assert provider.metadata.get("absent") is None
        assert provider.metadata.items() == {}

    def test_a_value_set_reads_back_and_a_second_set_replaces_it(self, provider: Provider) -> None:
        provider.metadata.set("planflow.copy.incomplete", '{"from": "sqlite a.db"}')
        assert provider.metadata.get("planflow.copy.incomplete") == '{"from": "sqlite a.db"}'
        provider.metadata.set("planflow.copy.incomplete", "second")
        assert provider.metadata.get("planflow.copy.incomplete") == "second"
        assert provider.metadata.items() == {"planflow.copy.incomplete": "second"}

    def test_delete_removes_only_its_key_and_a_missing_key_is_no_error(self, provider: Provider) -> None:
        provider.metadata.set("a", "1")
        provider.metadata.set("b", "2")
        provider.metadata.delete("a")
        provider.metadata.delete("a")
        provider.metadata.delete("never-set")
        assert provider.metadata.get("a") is None
        assert provider.metadata.items() == {"b": "2"}

    def test_items_come_by_key_in_code_point_order(self, provider: Provider) -> None:
        for key in ("b", "B", "a", "é", "a.b", "😀"):
            provider.metadata.set(key, f"value of {key}")
        assert list(provider.metadata.items()) == sorted(("b", "B", "a", "é", "a.b", "😀"))

    @pytest.mark.parametrize("value", ["", UNICODE, "x" * 200_000, "  padded  "])
    def test_any_text_value_round_trips_exactly(self, provider: Provider, value: str) -> None:
        provider.metadata.set("k", value)
        assert provider.metadata.get("k") == value

    def test_a_key_of_512_characters_is_accepted(self, provider: Provider) -> None:
        key = "k" * 511 + "😀"
        provider.metadata.set(key, "v")
        assert provider.metadata.get(key) == "v"

    @pytest.mark.parametrize(
        ("key", "says"),
        [
            ("", "1 to 512 characters"),
            ("k" * 513, "1 to 512 characters"),
            ("a\x00b", "NUL"),
            ("lone \udc80", "not valid Unicode"),
            (7, "must be a string"),
            (None, "must be a string"),
            (b"bytes", "must be a string"),
        ],
    )
    def test_a_bad_key_is_refused_by_every_method_and_nothing_is_stored(
        self, provider: Provider, key: object, says: str
    ) -> None:
        calls = [
            lambda: provider.metadata.get(key),  # pyright: ignore[reportArgumentType]
            lambda: provider.metadata.set(key, "v"),  # pyright: ignore[reportArgumentType]
            lambda: provider.metadata.delete(key),  # pyright: ignore[reportArgumentType]
        ]
        for call in calls:
            with pytest.raises(ValidationError, match=says):
                call()
        assert provider.metadata.items() == {}

    @pytest.mark.parametrize(
        ("value", "says"),
        [
            ("a\x00b", "NUL"),
            ("lone \ud800", "not valid Unicode"),
            (1, "must be a string"),
            (None, "must be a string"),
        ],
    )
    def test_a_bad_value_is_refused_and_the_stored_one_kept(
        self, provider: Provider, value: object, says: str
    ) -> None:
        provider.metadata.set("k", "kept")
        with pytest.raises(ValidationError, match=says):
            provider.metadata.set("k", value)  # pyright: ignore[reportArgumentType]
        assert provider.metadata.get("k") == "kept"

    def test_metadata_and_the_addon_records_share_the_store_without_disturbing_each_other(
        self, provider: Provider
    ) -> None:
        provider.executions.add_task(a_task("t1"))
        provider.metadata.set("k", "v")
        provider.executions.add_task(a_task("t2"))
        provider.metadata.delete("k")
        provider.metadata.set("k2", "v2")
        assert [task.id for task in provider.executions.list_tasks()] == ["t1", "t2"]
        assert provider.metadata.items() == {"k2": "v2"}

    def test_concurrent_writers_lose_no_key(self, provider: Provider) -> None:
        threads_count, per_thread = 6, 15
        start = threading.Barrier(threads_count)
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                start.wait()
                for n in range(per_thread):
                    provider.metadata.set(f"w{worker}-{n}", str(n))
                    # The add-on's writes interleave with them on the same store.
                    provider.executions.add_task(a_task(f"w{worker}-{n}"))
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(w,)) for w in range(threads_count)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        assert errors == []
        expected = {f"w{w}-{n}": str(n) for w in range(threads_count) for n in range(per_thread)}
        assert provider.metadata.items() == dict(sorted(expected.items()))
        assert len(provider.executions.list_tasks()) == threads_count * per_thread
