"""SQLite's value adapters read back as what they were given."""

from __future__ import annotations

import json
import sqlite3

from hypothesis import given
from hypothesis import strategies as st

from planflow.infra.sqlite.dialect import SQLITE

#: Ids as the argument checks let them through: any text but NUL and lone surrogates.
ids = st.lists(
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=12),
    max_size=6,
)


@given(ids)
def test_an_id_list_is_the_json_array_sqlite_reads_back(values: list[str]) -> None:
    text = SQLITE.ids_param(values)
    assert json.loads(text) == values
    connection = sqlite3.connect(":memory:")
    try:
        rows = connection.execute("SELECT value FROM json_each(?)", [text]).fetchall()
    finally:
        connection.close()
    assert [row[0] for row in rows] == values
