-- planflow schema 6 (PostgreSQL): claims with leases (tasks.claim, heartbeat, release, wait_for_work).
-- A task is claimable when PENDING, or RUNNING with a lease that has expired. claimed_by names the worker that
-- holds (or last held) it; lease_expires_at is when its claim lapses.

ALTER TABLE task_states ADD COLUMN claimed_by TEXT;
ALTER TABLE task_states ADD COLUMN lease_expires_at TIMESTAMPTZ;

-- Oldest claimable first: the pending tasks in order, and the running ones by when their lease lapses.
CREATE INDEX task_states_pending ON task_states (created_at, task_exec_id) WHERE status = 'PENDING';
CREATE INDEX task_states_leases ON task_states (lease_expires_at) WHERE status = 'RUNNING';

-- Workers waiting in tasks.wait_for_work LISTEN on this channel (one per schema); the notification is sent by
-- the transaction that makes a task PENDING, so it arrives once that work can be claimed. Identical
-- notifications of one transaction are delivered once, so a bulk write of 1 000 pending tasks wakes once.
CREATE FUNCTION planflow_notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('planflow_work_' || md5(current_schema()), '');
    RETURN NULL;
END
$$;

-- Row triggers whose WHEN is checked without calling the function: a write that makes nothing PENDING (a claim,
-- a heartbeat, a status update to anything else) costs nothing more than the test of its new status.
CREATE TRIGGER task_states_work_inserted AFTER INSERT ON task_states
    FOR EACH ROW WHEN (NEW.status = 'PENDING') EXECUTE FUNCTION planflow_notify_work();
CREATE TRIGGER task_states_work_updated AFTER UPDATE ON task_states
    FOR EACH ROW WHEN (NEW.status = 'PENDING' AND OLD.status <> 'PENDING') EXECUTE FUNCTION planflow_notify_work();
