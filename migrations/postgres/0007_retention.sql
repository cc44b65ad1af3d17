-- planflow schema 7 (PostgreSQL): retention (workflows.purge) and listings bounded by time.
-- Listings by created_at in either order, with statuses, read each status along task_states_status /
-- workflow_states_status (status, created_at, key), forwards or backwards. What is new are bounds on
-- updated_at, and the purge, which looks for finished workflows last written before a moment.

CREATE INDEX workflow_states_purge ON workflow_states (status, updated_at, workflow_exec_id);
CREATE INDEX workflow_states_updated ON workflow_states (updated_at, workflow_exec_id);
-- Tasks get no updated_at index: their updated_at changes on every write, and indexing it would cost each
-- update_state a fifth more on SQLite (measured: 240 against 197 us). Their updated_* bounds filter a read along
-- the listing's order instead.
