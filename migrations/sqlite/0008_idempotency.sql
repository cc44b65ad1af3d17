-- planflow schema 8 (SQLite): idempotency keys.
-- A write given an idempotency key records the key and its outcome (JSON text) in the transaction that applies
-- it. A second call with the key, until expires_at, returns that outcome and applies nothing; a call after it
-- expired applies again. request says what the key was given to: the same key with another request is refused. Expired keys are deleted a bounded batch at a time by the processes that use keys.
CREATE TABLE planflow_idempotency (
    key        TEXT PRIMARY KEY,
    request    TEXT NOT NULL,
    outcome    TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;
CREATE INDEX planflow_idempotency_expires ON planflow_idempotency (expires_at);
