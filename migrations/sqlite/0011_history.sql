-- planflow schema 11 (SQLite): run history and workflow origin.
-- Every change of a task's status, holder (claimed_by), attempt or error, and of a workflow's status or error,
-- appends one row to planflow_history. Triggers write it, so it is part of the statement (and the transaction)
-- that made the change whatever the path (upserts, updates, bulk writes, claims, releases, reclaims of lapsed
-- leases, cancels): the history and the state cannot disagree, and a unit retried after a lost COMMIT or an
-- idempotent retry that applies nothing appends nothing. A write that changes none of those columns (an
-- output update, a heartbeat) appends nothing. A task's record is stamped with its updated_at (on SQLite all
-- writers share one machine's clock). history_id orders the records; an entity's records are read by
-- (entity, entity_id, history_id) and a workflow's by (workflow_exec_id, history_id), both index range scans.
-- A workflow's records (its tasks' too) go with it: purge and delete cascade. Existing states have no history.

ALTER TABLE workflow_states ADD COLUMN forked_from TEXT;

CREATE TABLE planflow_history (
    history_id       INTEGER PRIMARY KEY,
    recorded_at      TEXT NOT NULL,
    entity           TEXT NOT NULL CHECK (entity IN ('task', 'workflow')),
    entity_id        TEXT NOT NULL,
    workflow_exec_id TEXT NOT NULL REFERENCES workflow_states (workflow_exec_id) ON DELETE CASCADE,
    from_status      TEXT,
    to_status        TEXT NOT NULL,
    worker           TEXT,
    attempt          INTEGER,
    version          INTEGER NOT NULL,
    error            TEXT
) STRICT;
CREATE INDEX planflow_history_entity ON planflow_history (entity, entity_id, history_id);
CREATE INDEX planflow_history_workflow ON planflow_history (workflow_exec_id, history_id);

CREATE TRIGGER planflow_history_task_insert AFTER INSERT ON task_states
BEGIN
    INSERT INTO planflow_history (recorded_at, entity, entity_id, workflow_exec_id, from_status, to_status,
                                  worker, attempt, version, error)
    VALUES (NEW.updated_at, 'task', NEW.task_exec_id, NEW.workflow_exec_id, NULL, NEW.status, NEW.claimed_by,
            NEW.attempt, NEW.version,
            (SELECT substr(CAST(coalesce(json_extract(e, '$.message'), json_extract(e, '$.code'), json_extract(e, '$.error'), e) AS TEXT), 1, 500)
             FROM (SELECT coalesce(NEW.last_error, NEW.error) AS e)));
END;

CREATE TRIGGER planflow_history_task_update AFTER UPDATE OF status, claimed_by, attempt, error, last_error
ON task_states
WHEN OLD.status IS NOT NEW.status OR OLD.claimed_by IS NOT NEW.claimed_by OR OLD.attempt IS NOT NEW.attempt
    OR OLD.error IS NOT NEW.error OR OLD.last_error IS NOT NEW.last_error
BEGIN
    INSERT INTO planflow_history (recorded_at, entity, entity_id, workflow_exec_id, from_status, to_status,
                                  worker, attempt, version, error)
    VALUES (NEW.updated_at, 'task', NEW.task_exec_id, NEW.workflow_exec_id, OLD.status, NEW.status,
            coalesce(NEW.claimed_by, OLD.claimed_by), NEW.attempt, NEW.version,
            (SELECT substr(CAST(coalesce(json_extract(e, '$.message'), json_extract(e, '$.code'), json_extract(e, '$.error'), e) AS TEXT), 1, 500)
             FROM (SELECT CASE WHEN OLD.last_error IS NOT NEW.last_error THEN NEW.last_error ELSE NEW.error END
                   AS e)));
END;

CREATE TRIGGER planflow_history_workflow_insert AFTER INSERT ON workflow_states
BEGIN
    INSERT INTO planflow_history (recorded_at, entity, entity_id, workflow_exec_id, from_status, to_status,
                                  worker, attempt, version, error)
    VALUES (NEW.updated_at, 'workflow', NEW.workflow_exec_id, NEW.workflow_exec_id, NULL, NEW.status, NULL, NULL,
            NEW.version,
            (SELECT substr(CAST(coalesce(json_extract(e, '$.message'), json_extract(e, '$.code'), json_extract(e, '$.error'), e) AS TEXT), 1, 500)
             FROM (SELECT NEW.error AS e)));
END;

CREATE TRIGGER planflow_history_workflow_update AFTER UPDATE OF status, error ON workflow_states
WHEN OLD.status IS NOT NEW.status OR OLD.error IS NOT NEW.error
BEGIN
    INSERT INTO planflow_history (recorded_at, entity, entity_id, workflow_exec_id, from_status, to_status,
                                  worker, attempt, version, error)
    VALUES (NEW.updated_at, 'workflow', NEW.workflow_exec_id, NEW.workflow_exec_id, OLD.status, NEW.status, NULL,
            NULL, NEW.version,
            (SELECT substr(CAST(coalesce(json_extract(e, '$.message'), json_extract(e, '$.code'), json_extract(e, '$.error'), e) AS TEXT), 1, 500)
             FROM (SELECT NEW.error AS e)));
END;
