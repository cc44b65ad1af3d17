-- planflow schema 1 (SQLite): workflow and task execution state, users and API keys.
-- Timestamps are UTC ISO-8601 text of fixed width ('YYYY-MM-DDTHH:MM:SS.ffffff+00:00'), so they sort as text.

CREATE TABLE workflow_states (
    workflow_exec_id TEXT PRIMARY KEY NOT NULL,
    workflow_id      TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN
        ('PENDING', 'RUNNING', 'SUCCESS', 'FAILED', 'TIMED_OUT', 'CANCELED', 'WAITING', 'PAUSED')),
    usage            TEXT CHECK (usage IS NULL OR json_valid(usage)),
    input            TEXT CHECK (input IS NULL OR json_valid(input)),
    output           TEXT CHECK (output IS NULL OR json_valid(output)),
    error            TEXT CHECK (error IS NULL OR json_valid(error)),
    version          INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
) STRICT;

CREATE INDEX workflow_states_workflow_id ON workflow_states (workflow_id, created_at, workflow_exec_id);
CREATE INDEX workflow_states_status ON workflow_states (status, created_at, workflow_exec_id);
CREATE INDEX workflow_states_created ON workflow_states (created_at, workflow_exec_id);

CREATE TABLE task_states (
    task_exec_id     TEXT PRIMARY KEY NOT NULL,
    task_id          TEXT NOT NULL,
    workflow_exec_id TEXT NOT NULL REFERENCES workflow_states (workflow_exec_id) ON DELETE CASCADE,
    workflow_id      TEXT NOT NULL,
    component        TEXT NOT NULL CHECK (component IN ('workflow', 'task', 'agent', 'tool', 'log')),
    status           TEXT NOT NULL CHECK (status IN
        ('PENDING', 'RUNNING', 'SUCCESS', 'FAILED', 'TIMED_OUT', 'CANCELED', 'WAITING', 'PAUSED')),
    execution_type   TEXT NOT NULL CHECK (execution_type IN
        ('basic', 'router', 'parallel', 'collection', 'composite', 'wait', 'signal', 'aggregate', 'memory')),
    parent_state_id  TEXT REFERENCES task_states (task_exec_id) ON DELETE CASCADE
                     CHECK (parent_state_id IS NULL OR parent_state_id <> task_exec_id),
    agent_id         TEXT,
    action_id        TEXT,
    tool_id          TEXT,
    input            TEXT CHECK (input IS NULL OR json_valid(input)),
    output           TEXT CHECK (output IS NULL OR json_valid(output)),
    error            TEXT CHECK (error IS NULL OR json_valid(error)),
    usage            TEXT CHECK (usage IS NULL OR json_valid(usage)),
    version          INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
) STRICT;

CREATE INDEX task_states_workflow_exec ON task_states (workflow_exec_id, created_at, task_exec_id);
CREATE INDEX task_states_parent ON task_states (parent_state_id, created_at, task_exec_id);
CREATE INDEX task_states_status ON task_states (status, created_at, task_exec_id);
CREATE INDEX task_states_workflow_id ON task_states (workflow_id, created_at, task_exec_id);
CREATE INDEX task_states_task_id ON task_states (task_id);
CREATE INDEX task_states_agent ON task_states (agent_id) WHERE agent_id IS NOT NULL;
CREATE INDEX task_states_tool ON task_states (tool_id) WHERE tool_id IS NOT NULL;
CREATE INDEX task_states_created ON task_states (created_at, task_exec_id);

CREATE TABLE users (
    id         TEXT PRIMARY KEY NOT NULL,
    email      TEXT NOT NULL,
    email_key  TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

CREATE INDEX users_role ON users (role);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL UNIQUE CHECK (length(fingerprint) = 64),
    prefix      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    last_used   TEXT
) STRICT;

CREATE INDEX api_keys_user ON api_keys (user_id, created_at);
