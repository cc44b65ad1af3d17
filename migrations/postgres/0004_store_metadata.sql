-- planflow schema 4 (PostgreSQL): facts about the store itself, such as an unfinished `planflow copy` into it.

CREATE TABLE planflow_metadata (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
