-- planflow schema 1 (PostgreSQL): workflow and task execution state, users and API keys.
-- Foreign keys are DEFERRABLE (checked per statement unless a transaction defers them) so that a verbatim
-- import (planflow copy) may write a child before its parent inside one batch.

CREATE TABLE workflow_states (
    workflow_exec_id TEXT PRIMARY KEY,
    workflow_id      TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN
        ('PENDING', 'RUNNING', 'SUCCESS', 'FAILED', 'TIMED_OUT', 'CANCELED', 'WAITING', 'PAUSED')),
    usage            JSONB CHECK (usage IS NULL OR jsonb_typeof(usage) = 'array'),
    input            JSONB CHECK (input IS NULL OR jsonb_typeof(input) = 'object'),
    output           JSONB CHECK (output IS NULL OR jsonb_typeof(output) = 'object'),
    error            JSONB CHECK (error IS NULL OR jsonb_typeof(error) = 'object'),
    version          INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE INDEX workflow_states_workflow_id ON workflow_states (workflow_id, created_at, workflow_exec_id);
CREATE INDEX workflow_states_status ON workflow_states (status, created_at, workflow_exec_id);
CREATE INDEX workflow_states_created ON workflow_states (created_at, workflow_exec_id);

CREATE TABLE task_states (
    task_exec_id     TEXT PRIMARY KEY,
    task_id          TEXT NOT NULL,
    workflow_exec_id TEXT NOT NULL REFERENCES workflow_states (workflow_exec_id) ON DELETE CASCADE
                     DEFERRABLE INITIALLY IMMEDIATE,
    workflow_id      TEXT NOT NULL,
    component        TEXT NOT NULL CHECK (component IN ('workflow', 'task', 'agent', 'tool', 'log')),
    status           TEXT NOT NULL CHECK (status IN
        ('PENDING', 'RUNNING', 'SUCCESS', 'FAILED', 'TIMED_OUT', 'CANCELED', 'WAITING', 'PAUSED')),
    execution_type   TEXT NOT NULL CHECK (execution_type IN
        ('basic', 'router', 'parallel', 'collection', 'composite', 'wait', 'signal', 'aggregate', 'memory')),
    parent_state_id  TEXT REFERENCES task_states (task_exec_id) ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE
                     CHECK (parent_state_id IS NULL OR parent_state_id <> task_exec_id),
    agent_id         TEXT,
    action_id        TEXT,
    tool_id          TEXT,
    input            JSONB CHECK (input IS NULL OR jsonb_typeof(input) = 'object'),
    output           JSONB CHECK (output IS NULL OR jsonb_typeof(output) = 'object'),
    error            JSONB CHECK (error IS NULL OR jsonb_typeof(error) = 'object'),
    usage            JSONB CHECK (usage IS NULL OR jsonb_typeof(usage) = 'array'),
    version          INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE INDEX task_states_workflow_exec ON task_states (workflow_exec_id, created_at, task_exec_id);
CREATE INDEX task_states_parent ON task_states (parent_state_id, created_at, task_exec_id);
CREATE INDEX task_states_status ON task_states (status, created_at, task_exec_id);
CREATE INDEX task_states_workflow_id ON task_states (workflow_id, created_at, task_exec_id);
CREATE INDEX task_states_task_id ON task_states (task_id);
CREATE INDEX task_states_agent ON task_states (agent_id) WHERE agent_id IS NOT NULL;
CREATE INDEX task_states_tool ON task_states (tool_id) WHERE tool_id IS NOT NULL;
CREATE INDEX task_states_created ON task_states (created_at, task_exec_id);

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    email      TEXT NOT NULL,
    email_key  TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX users_role ON users (role);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE,
    fingerprint TEXT NOT NULL UNIQUE CHECK (length(fingerprint) = 64),
    prefix      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    last_used   TIMESTAMPTZ
);

CREATE INDEX api_keys_user ON api_keys (user_id, created_at);
