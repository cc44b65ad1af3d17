-- planflow schema 6 (SQLite): claims with leases (tasks.claim, heartbeat, release, wait_for_work).
-- A task is claimable when PENDING, or RUNNING with a lease that has expired. claimed_by names the worker that
-- holds (or last held) it; lease_expires_at is when its claim lapses (UTC text, as every timestamp here).

ALTER TABLE task_states ADD COLUMN claimed_by TEXT;
ALTER TABLE task_states ADD COLUMN lease_expires_at TEXT;

-- Oldest claimable first: the pending tasks in order, and the running ones by when their lease lapses.
CREATE INDEX task_states_pending ON task_states (created_at, task_exec_id) WHERE status = 'PENDING';
CREATE INDEX task_states_leases ON task_states (lease_expires_at) WHERE status = 'RUNNING';
