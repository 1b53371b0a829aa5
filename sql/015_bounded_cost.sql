-- Bounded cost per request and per tenant. The API's process JSON is rendered by the server now
-- (src/processes/reader.ts); what is left of process_json is the webhook payload (sql/012_webhooks.sql), and
-- there metadata and result_summary are jsonb's own text, written in C, instead of compact_json, a PL/pgSQL
-- call per JSON value (a 1 MB array of zeros: 8 s per render). jsonb's text has ", " and ": " where
-- JSON.stringify writes "," and ":": the same JSON to any parser. It carries the tags
-- (sql/014) and the tree's fields (sql/013), in the API's key order (src/processes/queries/rows.ts toProcess).
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
       ',"metadata":' || coalesce(metadata::text, 'null') ||
       ',"result_summary":' || coalesce(result_summary::text, 'null') ||
       '}' as json
  from processes;

drop function compact_json(jsonb);

-- Audit rows of a flood (failed authentications, 429s) are aggregated: one row per address per window, with
-- how many requests it stands for (src/auth/audit.ts).
alter table audit_log add column count integer not null default 1;

-- Sessions: a sign-in deletes those that ended over a day ago (src/auth/queries.ts createSession), and
-- counts and revokes the open ones of its API token past MAX_SESSIONS_PER_TOKEN.
create index sessions_expires_idx on sessions (expires_at);
create index sessions_token_idx on sessions (api_token_id, id);

-- Log lines a process has had (worker `log` frames): capped by MAX_LOG_EVENTS_PER_PROCESS.
alter table processes add column log_events integer not null default 0;
