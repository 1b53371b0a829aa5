-- The console's views and actions (README: API). A failed attempt's stack: on the process while it is the
-- latest error (cleared by a retry, as `error` is) and on the event the fail appended. One audit row per bulk
-- action carries what it did (details). Partial indexes for the list's views, each bounded to the rows the
-- view shows: retrying (pending, attempts > 0), dead (failed, attempts exhausted) and scheduled (pending,
-- by run_at: `run_at > now()` is not immutable, so it cannot be an index predicate).
alter table processes add column error_stack text;
alter table process_events add column stack text;
alter table audit_log add column details jsonb;

create index processes_retrying_idx on processes (workspace_id, id desc) where status = 'pending' and attempts > 0;
create index processes_dead_idx on processes (workspace_id, id desc) where status = 'failed' and attempts >= max_attempts;
create index processes_scheduled_idx on processes (workspace_id, run_at) where status = 'pending';

-- The webhook payload (sql/015_bounded_cost.sql) gains error_stack, in the API's key order
-- (src/processes/queries/rows.ts toProcess).
create or replace view process_json as
select id, workspace_id, version,
       '{"id":' || id ||
       ',"workspace_id":' || workspace_id ||
       ',"type":' || to_json(type)::text ||
       ',"status":' || to_json(status)::text ||
       ',"progress":' || progress ||
       ',"message":' || coalesce(to_json(message)::text, 'null') ||
       ',"error":' || coalesce(to_json(error)::text, 'null') ||
       ',"attempts":' || attempts ||
       ',"version":' || version ||
       ',"worker_id":' || coalesce(to_json(worker_id)::text, 'null') ||
       ',"created_by":' || coalesce(created_by::text, 'null') ||
       ',"created_at":' || ('"' || to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || '"') ||
       ',"updated_at":' || ('"' || to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || '"') ||
       ',"started_at":' || coalesce(('"' || to_char(started_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || '"'), 'null') ||
       ',"finished_at":' || coalesce(('"' || to_char(finished_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || '"'), 'null') ||
       ',"priority":' || priority ||
       ',"run_at":' || ('"' || to_char(run_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || '"') ||
       ',"max_attempts":' || max_attempts ||
       ',"tags":' || to_json(tags)::text ||
       ',"parent_id":' || coalesce(parent_id::text, 'null') ||
       ',"root_id":' || coalesce(root_id, id) ||
       ',"children":' || case when children_total = 0 then 'null' else
         '{"total":' || children_total || ',"pending":' || children_pending || ',"running":' || children_running ||
         ',"waiting_review":' || children_waiting_review || ',"completed":' || children_completed ||
         ',"failed":' || children_failed || ',"cancelled":' || children_cancelled || '}' end ||
       ',"error_stack":' || coalesce(to_json(error_stack)::text, 'null') ||
       ',"metadata":' || coalesce(metadata::text, 'null') ||
       ',"result_summary":' || coalesce(result_summary::text, 'null') ||
       '}' as json
  from processes;
