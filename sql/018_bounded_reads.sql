-- Workspace reads bounded by index: the workspace stream's snapshot pages (the non-final rows of one
-- workspace, by id) and GET /processes/stats (one workspace's rows in a window, by time; counts by status
-- and type read from the index alone). Before, a 200,000-process workspace's 7-day stats read the whole
-- table twice (810 ms), and a snapshot page of a workspace with few live processes walked the primary key.
-- The statuses are states.ts NOT_FINAL, written out: a partial index serves only a query that names them so.
create index processes_active_idx on processes (workspace_id, id) where status in ('pending', 'running', 'waiting_review', 'failed');
create index processes_workspace_created_idx on processes (workspace_id, created_at);
create index processes_workspace_started_idx on processes (workspace_id, started_at) where started_at is not null;
create index processes_workspace_finished_idx on processes (workspace_id, finished_at) where status in ('completed', 'failed', 'cancelled');
-- The list's index, with the type beside it: counts by (status, type) come from an index-only scan.
create index processes_workspace_status_type_idx on processes (workspace_id, status, id desc) include (type);
drop index processes_workspace_status_idx;
