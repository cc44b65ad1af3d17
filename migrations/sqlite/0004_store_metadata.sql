-- planflow schema 4 (SQLite): facts about the store itself, such as an unfinished `planflow copy` into it.
-- Keys and values are text; updated_at is UTC ISO-8601 text of fixed width, as in the other tables.

CREATE TABLE planflow_metadata (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
