-- planflow schema 2 (SQLite): the add-on's task definitions, occurrences and executions.
-- Each record is the shared codec's JSON document; seq keeps the order in which records were first added
-- (an upsert keeps it).

CREATE TABLE exec_tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id  TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL CHECK (json_valid(doc))
) STRICT;

CREATE TABLE exec_occurrences (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    id      TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL,
    doc     TEXT NOT NULL CHECK (json_valid(doc))
) STRICT;

CREATE INDEX exec_occurrences_task ON exec_occurrences (task_id, seq);

CREATE TABLE exec_executions (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    occurrence_id TEXT NOT NULL UNIQUE,
    doc           TEXT NOT NULL CHECK (json_valid(doc))
) STRICT;
