-- Live output, live results and tags. Tags: up to 10 short strings per process, set at creation,
-- filtered with `tags @> …` (the GIN index). A constant default: no table rewrite. The API's JSON gains
-- "tags" after max_attempts, before the tree's fields (the one key order of src/processes/queries/rows.ts toProcess).
alter table processes add column tags text[] not null default '{}';
create index processes_tags_idx on processes using gin (tags);

-- process_json (the webhook payload) gains "tags" in sql/015_bounded_cost.sql.

-- A webhook's tag filter matches the process's tags as well as metadata.tags (what it matched before tags).
create or replace function processes_webhook_status() returns trigger language plpgsql as $$
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
     and (w.tags is null or new.tags && w.tags
          or (jsonb_typeof(new.metadata -> 'tags') = 'array' and (new.metadata -> 'tags') ?| w.tags));
  return null;
end
$$;

create or replace function processes_webhook_created() returns trigger language plpgsql as $$
begin
  if not exists (select 1 from webhooks w where w.enabled and w.workspace_id in (select workspace_id from new_rows)) then
    return null;
  end if;
  insert into webhook_deliveries (webhook_id, event, process_id, payload)
  select w.id, 'process.created', n.id, webhook_payload('process.created', n.created_at, j.json)
    from new_rows n
    join webhooks w on w.workspace_id = n.workspace_id and w.enabled and 'process.created' = any(w.events)
     and (w.types is null or n.type = any(w.types))
     and (w.tags is null or n.tags && w.tags
          or (jsonb_typeof(n.metadata -> 'tags') = 'array' and (n.metadata -> 'tags') ?| w.tags))
    cross join lateral (select json from process_json where id = n.id) j
   order by n.id, w.id;
  return null;
end
$$;

-- Live output (src/workers/output-behind.ts): what a worker's `output` frames appended, per process in seq
-- order (1, 2, …, across attempts), written behind in batches (one statement per tick for every process).
-- `bytes` is the chunk's JSON text length: OUTPUT_MAX_BYTES is counted from it. Removed with the process.
create table process_output (
  process_id bigint not null references processes (id) on delete cascade,
  seq        bigint not null,
  chunk      jsonb not null,
  bytes      integer not null,
  created_at timestamptz not null default now(),
  primary key (process_id, seq)
);

-- Public (end-user) tokens (src/auth/public-tokens.ts): short-lived, read-only, scoped to some processes of one
-- workspace (by id and/or tag), minted by an API token of a member. Stored as the SHA-256 of the token only.
-- They die with the API token that minted them (its revocation or expiry), and with the minter's membership.
create table public_tokens (
  id           bigserial primary key,
  token_hash   text not null unique,
  workspace_id bigint not null references workspaces (id) on delete cascade,
  user_id      bigint not null references users (id) on delete cascade,
  api_token_id bigint not null references api_tokens (id) on delete cascade,
  -- null: not scoped by that; a process is covered when its id is listed or it carries one of the tags.
  process_ids  bigint[],
  tags         text[],
  expires_at   timestamptz not null,
  revoked_at   timestamptz,
  created_at   timestamptz not null default now()
);
create index public_tokens_expires_idx on public_tokens (expires_at);
