-- planflow schema 8 (PostgreSQL): commit tokens kept for a bounded time; idempotency keys.
-- Every process deletes tokens older than an hour, a bounded batch at a time, in created_at order: the index
-- serves that range without reading the rest of the table.
CREATE INDEX planflow_commits_created ON planflow_commits (created_at);

-- A write given an idempotency key records the key and its outcome (JSON text) in the transaction that applies
-- it. A second call with the key, until expires_at, returns that outcome and applies nothing; a call after it
-- expired applies again. request says what the key was given to: the same key with another request is refused. Expired keys are deleted a bounded batch at a time by the processes that use keys.
CREATE TABLE planflow_idempotency (
    key        TEXT PRIMARY KEY,
    request    TEXT NOT NULL,
    outcome    TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX planflow_idempotency_expires ON planflow_idempotency (expires_at);
