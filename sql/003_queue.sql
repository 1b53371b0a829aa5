-- The queue engine (issue #11): priority, run_at and max_attempts per process; the claim's index, which holds
-- only pending rows, so a claim's cost does not grow with finished history; the API's JSON with the new
-- fields, in the one key order the server's own serialiser uses too (src/processes/queries.ts toProcess).

alter table processes
  add column priority     integer not null default 0,
  add column run_at       timestamptz not null default now(),
  add column max_attempts integer not null default 1 check (max_attempts between 1 and 100);

-- A claim walks lanes (workspace, type) with pending work — a skip scan over the first two columns — and
-- takes each lane's best: priority desc, run_at, id. Finished rows are not in it at all.
drop index processes_pending_idx;
create index processes_claim_idx on processes (workspace_id, type, priority desc, run_at, id) where status = 'pending';
-- When the next delayed process (or retry) comes due: a waiting claim sleeps until then.
create index processes_pending_run_at_idx on processes (run_at) where status = 'pending';
-- Concurrency caps count running processes per type (per workspace: processes_workspace_status_idx).
create index processes_running_type_idx on processes (type) where status = 'running';

-- jsonb as compact JSON text (no spaces), as JSON.stringify writes it: jsonb's own text has ", " and ": ".
create function compact_json(j jsonb) returns text language plpgsql immutable parallel safe as $$
begin
  return case
    when j is null then 'null'
    when j = '{}'::jsonb then '{}'
    when jsonb_typeof(j) = 'object' then
      '{' || (select string_agg(to_json(e.key)::text || ':' || compact_json(e.value), ',' order by e.n)
                from jsonb_each(j) with ordinality as e(key, value, n)) || '}'
    when jsonb_typeof(j) = 'array' then
      '[' || coalesce((select string_agg(compact_json(a.value), ',' order by a.n)
                         from jsonb_array_elements(j) with ordinality as a(value, n)), '') || ']'
    else j::text
  end;
end
$$;

-- Key order: the summary's fields, then the queue's, then metadata and result_summary (as model.ts's Process).
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
       ',"metadata":' || compact_json(metadata) ||
       ',"result_summary":' || compact_json(result_summary) ||
       '}' as json
  from processes;
