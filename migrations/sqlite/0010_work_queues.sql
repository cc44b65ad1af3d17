-- planflow schema 10 (SQLite): work queues (priorities, delayed start, attempts, limits, deduplication).
-- A task is due when run_after is NULL or past, by the database's clock; claims take due tasks by priority
-- (higher first), then by when they became due (run_after, or created_at without one). attempt counts claims;
-- max_attempts (NULL: unlimited) bounds them, after which the task ends FAILED with last_error saying why.
-- Existing rows read as priority 0, due since created, never attempted, unlimited, without keys.

ALTER TABLE task_states ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_states ADD COLUMN run_after TEXT;
ALTER TABLE task_states ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0);
ALTER TABLE task_states ADD COLUMN max_attempts INTEGER CHECK (max_attempts IS NULL OR max_attempts >= 1);
ALTER TABLE task_states ADD COLUMN concurrency_key TEXT;
ALTER TABLE task_states ADD COLUMN dedup_key TEXT;
ALTER TABLE task_states ADD COLUMN last_error TEXT CHECK (last_error IS NULL OR json_valid(last_error));

-- The claim's order: pending tasks by priority, then by when they became due. It replaces the pending index of
-- schema 6, whose order (created_at alone) no claim uses any more.
DROP INDEX task_states_pending;
CREATE INDEX task_states_claim ON task_states (priority DESC, coalesce(run_after, created_at), task_exec_id)
    WHERE status = 'PENDING';
-- The same within one workflow execution: claims filtered by workflow_exec_id (a worker per batch) read it in
-- order instead of passing over every other workflow's pending tasks.
CREATE INDEX task_states_workflow_claim ON task_states
    (workflow_exec_id, priority DESC, coalesce(run_after, created_at), task_exec_id) WHERE status = 'PENDING';
-- Pending tasks by when they become due: the due and delayed counts, the oldest due task, "is any work due".
CREATE INDEX task_states_due ON task_states (coalesce(run_after, created_at), task_exec_id)
    WHERE status = 'PENDING';
-- One non-terminal task per dedup_key: a second enqueue with the key finds the first (and concurrent ones
-- collide here instead of both inserting).
CREATE UNIQUE INDEX task_states_dedup ON task_states (dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('PENDING', 'RUNNING', 'WAITING', 'PAUSED');
-- RUNNING tasks per concurrency key: what a claim counts against the key's concurrency limit.
CREATE INDEX task_states_running_keys ON task_states (concurrency_key)
    WHERE status = 'RUNNING' AND concurrency_key IS NOT NULL;
-- Dead work: tasks that ended FAILED having used up their attempts (planflow tasks --dead, queue_stats).
CREATE INDEX task_states_dead ON task_states (updated_at, task_exec_id)
    WHERE status = 'FAILED' AND attempt >= max_attempts;

-- Limits, by key: a concurrency key's (how many of its tasks may be RUNNING at once) or a selector's. rate_count
-- claims per rate_seconds, over any window of that length. A claim that could break a limit locks its row
-- first, so that claimers of one key count one after another.
CREATE TABLE planflow_limits (
    key          TEXT PRIMARY KEY NOT NULL,
    concurrency  INTEGER CHECK (concurrency IS NULL OR concurrency >= 0),
    rate_count   INTEGER CHECK (rate_count IS NULL OR rate_count >= 0),
    rate_seconds REAL CHECK (rate_seconds IS NULL OR rate_seconds > 0),
    updated_at   TEXT NOT NULL,
    CHECK ((rate_count IS NULL) = (rate_seconds IS NULL))
) STRICT;

-- The claims of a rate-limited key within its window (older entries are deleted by the next claim of the key):
-- a claim may take as many tasks as rate_count less the entries newer than rate_seconds.
CREATE TABLE planflow_limit_claims (
    key        TEXT NOT NULL REFERENCES planflow_limits (key) ON DELETE CASCADE,
    claimed_at TEXT NOT NULL
) STRICT;
CREATE INDEX planflow_limit_claims_key ON planflow_limit_claims (key, claimed_at);
