-- Tenants, people, credentials, processes, their append-only event log and the audit trail.

create table workspaces (
  id         bigserial primary key,
  name       text not null,
  created_at timestamptz not null default now()
);

create table users (
  id         bigserial primary key,
  email      text not null unique,
  created_at timestamptz not null default now()
);

create table memberships (
  user_id      bigint not null references users (id) on delete cascade,
  workspace_id bigint not null references workspaces (id) on delete cascade,
  role         text not null default 'member',
  created_at   timestamptz not null default now(),
  primary key (user_id, workspace_id)
);
create index memberships_workspace_idx on memberships (workspace_id);

-- Only the SHA-256 of a token is kept; the token itself is shown once, at creation.
create table api_tokens (
  id           bigserial primary key,
  user_id      bigint not null references users (id) on delete cascade,
  token_hash   text not null unique,
  name         text,
  expires_at   timestamptz,
  revoked_at   timestamptz,
  last_used_at timestamptz,
  created_at   timestamptz not null default now()
);

create table worker_tokens (
  id           bigserial primary key,
  token_hash   text not null unique,
  name         text,
  expires_at   timestamptz,
  revoked_at   timestamptz,
  last_used_at timestamptz,
  created_at   timestamptz not null default now()
);

create table processes (
  id             bigserial primary key,
  workspace_id   bigint not null references workspaces (id),
  type           text not null,
  status         text not null default 'pending'
                 check (status in ('pending', 'running', 'waiting_review', 'completed', 'failed', 'cancelled')),
  progress       integer not null default 0 check (progress between 0 and 100),
  message        text,
  metadata       jsonb not null default '{}',
  result_summary jsonb,
  error          text,
  attempts       integer not null default 0,
  version        bigint not null default 1,
  worker_id      text,
  created_by     bigint references users (id),
  created_at     timestamptz not null default now(),
  updated_at     timestamptz not null default now(),
  started_at     timestamptz,
  finished_at    timestamptz,
  heartbeat_at   timestamptz
);
-- The list is "newest first" per workspace: id desc is creation order.
create index processes_workspace_idx on processes (workspace_id, id desc);
create index processes_workspace_status_idx on processes (workspace_id, status, id desc);
-- Claims take the oldest pending process; the sweep scans running leases.
create index processes_pending_idx on processes (type, id) where status = 'pending';
create index processes_running_idx on processes (heartbeat_at) where status = 'running';
create index processes_worker_idx on processes (worker_id) where status = 'running';

create table process_events (
  id         bigserial primary key,
  process_id bigint not null references processes (id),
  status     text not null,
  message    text,
  created_at timestamptz not null default now()
);
create index process_events_process_idx on process_events (process_id, id);

-- The event log is history: the database itself refuses to rewrite it.
create function process_events_append_only() returns trigger language plpgsql as $$
begin
  raise exception 'process_events is append-only (% refused)', tg_op using errcode = '55000';
end
$$;
create trigger process_events_append_only
  before update or delete on process_events
  for each row execute function process_events_append_only();
create trigger process_events_no_truncate
  before truncate on process_events
  for each statement execute function process_events_append_only();

create table audit_log (
  id           bigserial primary key,
  user_id      bigint,
  token_id     bigint,
  workspace_id bigint,
  method       text not null,
  route        text not null,
  status       integer not null,
  ip           text,
  user_agent   text,
  request_id   text,
  created_at   timestamptz not null default now()
);
create index audit_log_created_idx on audit_log (created_at);

create table idempotency_keys (
  user_id    bigint not null references users (id) on delete cascade,
  key        text not null,
  process_id bigint not null references processes (id),
  response   jsonb not null,
  created_at timestamptz not null default now(),
  primary key (user_id, key)
);
