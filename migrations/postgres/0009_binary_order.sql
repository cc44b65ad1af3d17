-- planflow schema 9 (PostgreSQL): identifiers sort by their bytes, whatever the database's collation.
-- Listings page by (created_at, id). Under a linguistic collation (en_US.UTF-8, the official images' default)
-- 'b8fb' sorts before 'IMP-A', under SQLite's and Python's order after it: the same calls returned the same
-- rows in another order on another server. The "C" collation is code-point order for UTF-8 (as SQLite's
-- BINARY and Python's str), and its comparisons are cheaper. A column and every column it is compared with
-- (foreign keys, joins) change together, since PostgreSQL refuses to compare two different implicit collations.
ALTER TABLE workflow_states
    ALTER COLUMN workflow_exec_id TYPE TEXT COLLATE "C",
    ALTER COLUMN workflow_id TYPE TEXT COLLATE "C";
ALTER TABLE task_states
    ALTER COLUMN task_exec_id TYPE TEXT COLLATE "C",
    ALTER COLUMN task_id TYPE TEXT COLLATE "C",
    ALTER COLUMN workflow_exec_id TYPE TEXT COLLATE "C",
    ALTER COLUMN workflow_id TYPE TEXT COLLATE "C",
    ALTER COLUMN parent_state_id TYPE TEXT COLLATE "C",
    ALTER COLUMN agent_id TYPE TEXT COLLATE "C",
    ALTER COLUMN action_id TYPE TEXT COLLATE "C",
    ALTER COLUMN tool_id TYPE TEXT COLLATE "C",
    ALTER COLUMN claimed_by TYPE TEXT COLLATE "C";
ALTER TABLE users ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE api_keys
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN user_id TYPE TEXT COLLATE "C";
ALTER TABLE exec_tasks ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE exec_occurrences
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN task_id TYPE TEXT COLLATE "C";
ALTER TABLE exec_executions ALTER COLUMN occurrence_id TYPE TEXT COLLATE "C";
ALTER TABLE planflow_metadata ALTER COLUMN key TYPE TEXT COLLATE "C";
ALTER TABLE planflow_idempotency ALTER COLUMN key TYPE TEXT COLLATE "C";
