-- Queues (extension): a type paused everywhere or in one workspace, per-type rate windows shared by every
-- instance's claims, and unique_key (one pending or running process per key in a workspace).

-- What claims skip: (type, 0) pauses the type in every workspace, (type, workspace_id) in that one only (no
-- workspace has id 0). The claim reads it per lane with pending work (src/queues/queries.ts pausedGuard).
create table paused_queues (
  type         text not null,
  workspace_id bigint not null,
  paused_by    bigint,
  paused_at    timestamptz not null default now(),
  primary key (type, workspace_id)
);

-- TYPE_DEFAULTS.<type>.rate = {max, per_ms}: the claims of a type handed out in its current window (windows
-- aligned to multiples of per_ms since the epoch). Claims of a rate-limited type lock its row, so racing
-- claims on every instance share one count.
create table type_rate_windows (
  type         text primary key,
  window_start timestamptz not null,
  used         integer not null default 0
);

-- unique_key: while a process with the key is pending or running in its workspace, a create with the same key
-- returns that process instead of making another. Rows without a key are not in the index at all.
alter table processes add column unique_key text;
create unique index processes_unique_key_idx on processes (workspace_id, unique_key)
  where unique_key is not null and status in ('pending', 'running');

-- An Idempotency-Key whose first request was answered with an existing process (unique_key) replays that answer.
alter table idempotency_keys add column unique_replayed boolean not null default false;
