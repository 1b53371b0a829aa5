-- Connected workers across instances: one row per open worker socket, written by the instance holding it
-- (at hello, at close, and every few seconds while open), so any instance can list them (GET /workers).
-- A row whose instance stopped refreshing it (killed, partitioned) is pruned as stale by the others.
create table worker_sessions (
  conn_id      text primary key,
  worker_id    text not null,
  instance_id  text not null,
  token_id     bigint,
  -- The types its last claim asked for; null: any type (or it has not claimed yet).
  types        text[],
  connected_at timestamptz not null,
  -- Its last frame (heartbeat, progress, claim, …) as the instance saw it.
  last_frame_at timestamptz not null,
  -- When its instance last wrote this row: older than the stale limit means the instance is gone.
  refreshed_at timestamptz not null default now()
);
create index worker_sessions_worker_idx on worker_sessions (worker_id);
create index worker_sessions_instance_idx on worker_sessions (instance_id);
