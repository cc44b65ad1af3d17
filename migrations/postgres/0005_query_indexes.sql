-- planflow schema 5 (PostgreSQL): an index for every query the repositories run, checked by the query-plan tests.
-- Each single-column filter of a listing has an index that also yields the listing's order
-- (created_at, task_exec_id), so a page is read in index order with no sort and no scan of other rows.

DROP INDEX task_states_task_id;
DROP INDEX task_states_agent;
DROP INDEX task_states_tool;
CREATE INDEX task_states_task_id ON task_states (task_id, created_at, task_exec_id);
CREATE INDEX task_states_agent ON task_states (agent_id, created_at, task_exec_id);
CREATE INDEX task_states_tool ON task_states (tool_id, created_at, task_exec_id);
CREATE INDEX task_states_action ON task_states (action_id, created_at, task_exec_id);
CREATE INDEX task_states_execution_type ON task_states (execution_type, created_at, task_exec_id);

-- The newest child with a task id (get_child_by_task_id) and the newest state per task id of a workflow (its
-- tasks), read newest first.
CREATE INDEX task_states_parent_task ON task_states (parent_state_id, task_id, created_at DESC, task_exec_id DESC);
CREATE INDEX task_states_workflow_task ON task_states (workflow_exec_id, task_id, created_at DESC, task_exec_id DESC);
-- The tasks of a workflow in one status (list_tasks_by_status), in order.
CREATE INDEX task_states_workflow_status ON task_states (workflow_exec_id, status, created_at, task_exec_id);

-- Users oldest first, and a user's API keys oldest first (ties broken by id, as the listings order them).
CREATE INDEX users_created ON users (created_at, id);
DROP INDEX api_keys_user;
CREATE INDEX api_keys_user ON api_keys (user_id, created_at, id);
