-- planflow schema 3 (PostgreSQL): commit tokens, so that a unit of work whose COMMIT lost its connection is
-- never applied twice.
-- Every write unit inserts one row in the transaction it begins; after a lost COMMIT, the token's row tells
-- whether that transaction committed. A transaction id cannot tell: after a crash the server may hand the id of
-- a transaction that never reached the WAL to another transaction, whose outcome it would then report. Rows
-- older than an hour are deleted now and then by planflow itself.

CREATE TABLE planflow_commits (
    token      UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
