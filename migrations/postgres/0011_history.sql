-- planflow schema 11 (PostgreSQL): run history and workflow origin.
-- Every change of a task's status, holder (claimed_by), attempt or error, and of a workflow's status or error,
-- appends one row to planflow_history. Triggers write it, so it is part of the statement (and the transaction)
-- that made the change whatever the path (upserts, updates, bulk writes, claims, releases, reclaims of lapsed
-- leases, cancels): the history and the state cannot disagree, and a unit retried after a lost COMMIT or an
-- idempotent retry that applies nothing appends nothing. A write that changes none of those columns (an
-- output update, a heartbeat) appends nothing: the triggers' WHEN conditions skip it without calling the
-- function. Records are stamped by the database's clock (clock_timestamp()).
-- The primary key includes recorded_at, so that a later schema can range-partition the table by time;
-- history_id orders the records. An entity's records are read by (entity, entity_id, history_id) and a
-- workflow's by (workflow_exec_id, history_id), both index range scans. A workflow's records (its tasks' too)
-- go with it: purge and delete cascade. Existing states have no history.

ALTER TABLE workflow_states ADD COLUMN forked_from TEXT COLLATE "C";

CREATE TABLE planflow_history (
    history_id       BIGINT GENERATED ALWAYS AS IDENTITY,
    recorded_at      TIMESTAMPTZ NOT NULL,
    entity           TEXT NOT NULL CHECK (entity IN ('task', 'workflow')),
    entity_id        TEXT COLLATE "C" NOT NULL,
    workflow_exec_id TEXT COLLATE "C" NOT NULL REFERENCES workflow_states (workflow_exec_id) ON DELETE CASCADE
                     DEFERRABLE INITIALLY IMMEDIATE,
    from_status      TEXT,
    to_status        TEXT NOT NULL,
    worker           TEXT COLLATE "C",
    attempt          INTEGER,
    version          INTEGER NOT NULL,
    error            TEXT,
    PRIMARY KEY (history_id, recorded_at)
);
CREATE INDEX planflow_history_entity ON planflow_history (entity, entity_id, history_id);
CREATE INDEX planflow_history_workflow ON planflow_history (workflow_exec_id, history_id);

CREATE FUNCTION planflow_error_summary(e JSONB) RETURNS TEXT LANGUAGE sql IMMUTABLE AS
$$ SELECT left(coalesce(e ->> 'message', e ->> 'code', e ->> 'error', e::text), 500) $$;

CREATE FUNCTION planflow_task_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO planflow_history (recorded_at, entity, entity_id, workflow_exec_id, from_status, to_status,
                                      worker, attempt, version, error)
        VALUES (clock_timestamp(), 'task', NEW.task_exec_id, NEW.workflow_exec_id, NULL, NEW.status,
                NEW.claimed_by, NEW.attempt, NEW.version,
                planflow_error_summary(coalesce(NEW.last_error, NEW.error)));
    ELSE
        INSERT INTO planflow_history (recorded_at, entity, entity_id, workflow_exec_id, from_status, to_status,
                                      worker, attempt, version, error)
        VALUES (clock_timestamp(), 'task', NEW.task_exec_id, NEW.workflow_exec_id, OLD.status, NEW.status,
                coalesce(NEW.claimed_by, OLD.claimed_by), NEW.attempt, NEW.version,
                planflow_error_summary(CASE WHEN OLD.last_error IS DISTINCT FROM NEW.last_error
                                            THEN NEW.last_error ELSE NEW.error END));
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION planflow_workflow_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO planflow_history (recorded_at, entity, entity_id, workflow_exec_id, from_status, to_status,
                                  worker, attempt, version, error)
    VALUES (clock_timestamp(), 'workflow', NEW.workflow_exec_id, NEW.workflow_exec_id,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status, NULL, NULL, NEW.version,
            planflow_error_summary(NEW.error));
    RETURN NULL;
END $$;

CREATE TRIGGER planflow_history_task_insert AFTER INSERT ON task_states
    FOR EACH ROW EXECUTE FUNCTION planflow_task_history();
CREATE TRIGGER planflow_history_task_update AFTER UPDATE ON task_states FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.claimed_by IS DISTINCT FROM NEW.claimed_by
          OR OLD.attempt IS DISTINCT FROM NEW.attempt OR OLD.error IS DISTINCT FROM NEW.error
          OR OLD.last_error IS DISTINCT FROM NEW.last_error)
    EXECUTE FUNCTION planflow_task_history();
CREATE TRIGGER planflow_history_workflow_insert AFTER INSERT ON workflow_states
    FOR EACH ROW EXECUTE FUNCTION planflow_workflow_history();
CREATE TRIGGER planflow_history_workflow_update AFTER UPDATE ON workflow_states FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.error IS DISTINCT FROM NEW.error)
    EXECUTE FUNCTION planflow_workflow_history();
