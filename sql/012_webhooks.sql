-- Webhooks (extension): per workspace, an endpoint and the process events it wants. The deliveries are an
-- outbox written by triggers on processes, so a delivery row commits in the same transaction as the status
-- change it announces, whichever statement made it (a transition, a claim, a group commit, the sweep).
-- Every instance's delivery loop sends them (src/webhooks/loop.ts).
create table webhooks (
  id           bigserial primary key,
  workspace_id bigint not null references workspaces (id) on delete cascade,
  url          text not null,
  -- process.created, process.pending, process.running, process.waiting_review, process.completed, …
  events       text[] not null,
  -- null: every type; else only processes of these types.
  types        text[],
  -- null: any process; else processes whose metadata.tags (an array of strings) holds one of these.
  tags         text[],
  -- whsec_<base64>: signs every delivery (Standard Webhooks); shown once, when the webhook is created.
  secret       text not null,
  enabled      boolean not null default true,
  created_by   bigint references users (id) on delete set null,
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now()
);
-- What the triggers probe on every status change: a workspace without a webhook costs one look-up here.
create index webhooks_workspace_idx on webhooks (workspace_id) where enabled;

create table webhook_deliveries (
  id              bigserial primary key,
  webhook_id      bigint not null references webhooks (id) on delete cascade,
  event           text not null,
  process_id      bigint not null,
  -- The body, as it was when the event happened: every attempt (and a redelivery) sends the same bytes.
  payload         text not null,
  -- pending (due at next_attempt_at) → sending (leased by an instance until lease_until) → succeeded | failed,
  -- or back to pending for a retry.
  state           text not null default 'pending' check (state in ('pending', 'sending', 'succeeded', 'failed')),
  attempts        integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  -- Retries stop WEBHOOK_RETRY_WINDOW_MS after this (the event, or the last redelivery).
  window_start    timestamptz not null default now(),
  lease_until     timestamptz,
  last_status     integer,
  last_error      text,
  last_latency_ms integer,
  last_attempt_at timestamptz,
  created_at      timestamptz not null default now()
);
-- The delivery loop's claim walks the webhooks with pending deliveries (a skip scan) and takes each one's due
-- deliveries, as many as its endpoint has room for; sending rows are counted per webhook for that room.
create index webhook_deliveries_due_idx on webhook_deliveries (webhook_id, next_attempt_at, id) where state = 'pending';
create index webhook_deliveries_sending_idx on webhook_deliveries (webhook_id, lease_until) where state = 'sending';
create index webhook_deliveries_log_idx on webhook_deliveries (webhook_id, id desc);
create index webhook_deliveries_done_idx on webhook_deliveries (created_at) where state in ('succeeded', 'failed');

create table webhook_attempts (
  delivery_id bigint not null references webhook_deliveries (id) on delete cascade,
  attempt     integer not null,
  at          timestamptz not null,
  status      integer,
  latency_ms  integer,
  error       text,
  primary key (delivery_id, attempt)
);

-- The body of a delivery: {"type": event, "timestamp": when the process changed, "data": the process JSON}.
create function webhook_payload(event text, at timestamptz, process text) returns text language sql immutable parallel safe as $$
  select '{"type":' || to_json(event)::text || ',"timestamp":"' || to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || '","data":' || process || '}'
$$;

-- A status change: process.<new status>. A row trigger, fired only for updates that set status and change
-- it (progress writes do not name status and never reach it); a workspace with no webhook costs one probe.
create function processes_webhook_status() returns trigger language plpgsql as $$
begin
  if not exists (select 1 from webhooks w where w.workspace_id = new.workspace_id and w.enabled) then
    return null;
  end if;
  insert into webhook_deliveries (webhook_id, event, process_id, payload)
  select w.id, 'process.' || new.status, new.id, webhook_payload('process.' || new.status, new.updated_at, j.json)
    from webhooks w
    cross join lateral (select json from process_json where id = new.id) j
   where w.workspace_id = new.workspace_id and w.enabled and ('process.' || new.status) = any(w.events)
     and (w.types is null or new.type = any(w.types))
     and (w.tags is null or (jsonb_typeof(new.metadata -> 'tags') = 'array' and (new.metadata -> 'tags') ?| w.tags));
  return null;
end
$$;
create trigger processes_webhook_status
  after update of status on processes
  for each row when (old.status is distinct from new.status)
  execute function processes_webhook_status();

-- A new process: process.created. One call per insert statement (a batch of 1,000 creates is one), over its
-- new rows.
create function processes_webhook_created() returns trigger language plpgsql as $$
begin
  if not exists (select 1 from webhooks w where w.enabled and w.workspace_id in (select workspace_id from new_rows)) then
    return null;
  end if;
  insert into webhook_deliveries (webhook_id, event, process_id, payload)
  select w.id, 'process.created', n.id, webhook_payload('process.created', n.created_at, j.json)
    from new_rows n
    join webhooks w on w.workspace_id = n.workspace_id and w.enabled and 'process.created' = any(w.events)
     and (w.types is null or n.type = any(w.types))
     and (w.tags is null or (jsonb_typeof(n.metadata -> 'tags') = 'array' and (n.metadata -> 'tags') ?| w.tags))
    cross join lateral (select json from process_json where id = n.id) j
   order by n.id, w.id;
  return null;
end
$$;
create trigger processes_webhook_created
  after insert on processes
  referencing new table as new_rows
  for each statement
  execute function processes_webhook_created();
