-- A process as the API shows it, rendered by Postgres: GET /processes/{id} sends this text as it is, so the
-- server neither parses the row's columns nor serialises an object for it (bun run bench rest: ~20 µs of
-- the server's CPU per request). Timestamps in the API's format, ISO-8601 UTC with milliseconds.
create view process_json as
select id, workspace_id, version, row_to_json(x)::text as json
  from (
    select id, workspace_id, type, status, progress, message, error, attempts, version, worker_id, created_by,
           to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as created_at,
           to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as updated_at,
           to_char(started_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as started_at,
           to_char(finished_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as finished_at,
           metadata, result_summary
      from processes
  ) x;
