-- Schedules (extension): a cron expression in a time zone that creates a process at each tick. Every instance
-- runs the tick loop (src/schedules/loop.ts); a schedule's row is locked while one instance handles its due
-- ticks (skip locked: the others move on), and schedule_runs' primary key makes a tick create at most one
-- process whatever happens, so no leader is elected.
create table schedules (
  id              bigserial primary key,
  workspace_id    bigint not null references workspaces (id) on delete cascade,
  type            text not null,
  cron            text not null,
  timezone        text not null default 'UTC',
  metadata        jsonb not null default '{}',
  priority        integer not null default 0,
  -- null: the type's default (TYPE_DEFAULTS, DEFAULT_MAX_ATTEMPTS) when each run is created.
  max_attempts    integer check (max_attempts between 1 and 100),
  overlap         text not null default 'allow' check (overlap in ('skip', 'allow')),
  catch_up        text not null default 'latest' check (catch_up in ('none', 'latest', 'all')),
  enabled         boolean not null default true,
  created_by      bigint references users (id) on delete set null,
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now(),
  -- The last tick handled (run or skipped); ticks after it and up to now are due.
  last_tick_at    timestamptz not null default now(),
  -- When the first tick after last_tick_at comes; the loop reads due schedules by it.
  next_tick_at    timestamptz,
  -- The process of the last run: overlap 'skip' skips a tick while it is pending or running.
  last_process_id bigint
);
create index schedules_workspace_idx on schedules (workspace_id, id);
create index schedules_due_idx on schedules (next_tick_at) where enabled;

-- One row per tick handled: its process, or why there is none ('overlap').
create table schedule_runs (
  schedule_id bigint not null references schedules (id) on delete cascade,
  tick        timestamptz not null,
  process_id  bigint,
  skipped     text check (skipped in ('overlap')),
  created_at  timestamptz not null default now(),
  primary key (schedule_id, tick)
);
-- The tick loop prunes runs older than RETENTION_DAYS by tick.
create index schedule_runs_tick_idx on schedule_runs (tick);
