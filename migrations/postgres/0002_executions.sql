-- planflow schema 2 (PostgreSQL): the add-on's task definitions, occurrences and executions.
-- Each record is the shared codec's JSON document; seq keeps the order in which records were first added
-- (an upsert keeps it).

CREATE TABLE exec_tasks (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id  TEXT NOT NULL UNIQUE,
    doc JSONB NOT NULL CHECK (jsonb_typeof(doc) = 'object')
);

CREATE TABLE exec_occurrences (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id      TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL,
    doc     JSONB NOT NULL CHECK (jsonb_typeof(doc) = 'object')
);

CREATE INDEX exec_occurrences_task ON exec_occurrences (task_id, seq);

CREATE TABLE exec_executions (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurrence_id TEXT NOT NULL UNIQUE,
    doc           JSONB NOT NULL CHECK (jsonb_typeof(doc) = 'object')
);
