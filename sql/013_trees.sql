-- Process trees (extension): a process may have a parent (same workspace, depth ≤ 5). A parent keeps
-- its children's counts per status on its own row, and the database keeps them: statement triggers on processes
-- apply every child's status change to its parent in the same statement (so in the same transaction) as the
-- change, whichever code path made it — a transition, a claim, a group commit of completes or fails, the sweep,
-- a cascade, a create. No path can forget, and there is no second copy to drift (tests/trees recount).
--
-- Fan-in is the same mechanism: a parent whose handler returned (completed or waiting_review) while children
-- are pending or running stays running with no lease (awaiting says what it asked for); when its last child
-- settles, the statement trigger sets it to that status and the row trigger below decides the outcome
-- (failed when a child failed and child_failures is 'fail'; pending once more when finalize; else asked).
--
-- Progress is not counted here: a child's progress changes many times a second (the write-behind), and making
-- every such write lock its parent cost the queue (bench tree). The parent's mean is aggregated from the
-- committed children by src/processes/tree-refresh.ts, at most every REFRESH_MS, into children_progress.

alter table processes
  add column parent_id               bigint,
  -- The tree's root; null on a root (the API shows its own id).
  add column root_id                 bigint,
  add column depth                   smallint not null default 0,
  -- A child's share of its parent's progress.
  add column weight                  double precision not null default 1 check (weight > 0 and weight <= 1000000),
  add column child_failures          text not null default 'fail' check (child_failures in ('fail', 'tolerate')),
  add column finalize                boolean not null default false,
  -- The finalize run was handed out (the parent went back to pending once its children ended).
  add column finalized               boolean not null default false,
  -- The handler returned with this outcome while children were unfinished (kept after a fan-in failure, so a
  -- retry knows the handler need not run again).
  add column awaiting                text check (awaiting in ('completed', 'waiting_review')),
  add column children_total          integer not null default 0,
  add column children_pending        integer not null default 0,
  add column children_running        integer not null default 0,
  add column children_waiting_review integer not null default 0,
  add column children_completed      integer not null default 0,
  add column children_failed         integer not null default 0,
  add column children_cancelled      integer not null default 0,
  -- Σ weight of the children, and their weighted mean progress (a child whose worker part is over counts as
  -- 100) as last aggregated (src/processes/tree-refresh.ts: at most every REFRESH_MS, from committed rows).
  add column children_weight         double precision not null default 0,
  -- Σ weight of the children whose worker part is over (completed, failed, cancelled, waiting_review).
  add column children_weight_done    double precision not null default 0,
  add column children_progress       double precision not null default 0;

-- GET /processes/{id}/children and ?parent_id=; ?root_id= on the workspace stream. Only tree rows are in them.
create index processes_parent_idx on processes (parent_id, id) where parent_id is not null;
create index processes_root_idx on processes (root_id, id) where root_id is not null;
-- The aggregate reads only a parent's running children (the others count as 0 or 100): a few rows, not 10,000.
create index processes_running_children_idx on processes (parent_id) where status = 'running' and parent_id is not null;

-- What a child adds to its parent's progress.
create function tree_progress(status text, progress integer) returns integer language sql immutable parallel safe as $$
  select case when status in ('completed', 'failed', 'cancelled', 'waiting_review') then 100 else progress end
$$;

-- The next version of a parent changed by its children: past its lease holder's live states when a worker
-- holds it (src/processes/live.ts, LIVE_VERSION_JUMP), else the next.
create function tree_next_version(status text, worker_id text, version bigint, live_base bigint) returns bigint
language sql immutable parallel safe as $$
  select case when status = 'running' and worker_id is not null then greatest(version, live_base) + 10000 else version + 1 end
$$;

-- A parent's row, whoever writes it: its progress is its children's, and a handler's return while children are
-- unfinished becomes waiting (fan-in). Children that have all settled decide the outcome.
create function processes_tree_parent() returns trigger language plpgsql as $$
declare
  unfinished integer := new.children_pending + new.children_running;
begin
  -- Progress is the children's: all of it once none is unfinished, else the last aggregate.
  new.progress := case when unfinished = 0 then 100 else least(100, floor(new.children_progress))::integer end;
  if old.status = 'running' and new.status in ('completed', 'waiting_review') then
    new.awaiting := new.status;
    if unfinished > 0 then
      new.status := 'running';
      new.worker_id := null;
      new.worker_token_id := null;
      new.heartbeat_at := null;
      new.finished_at := null;
      new.message := 'waiting for ' || unfinished || ' of ' || new.children_total || ' children';
    elsif new.children_failed > 0 and new.child_failures = 'fail' then
      new.status := 'failed';
      new.error := new.children_failed || ' of ' || new.children_total || ' children failed';
      new.message := new.error;
      new.finished_at := now();
    elsif new.finalize and not new.finalized then
      -- Claimed once more: the handler sees its children (ctx.children) and writes the result.
      new.status := 'pending';
      new.finalized := true;
      new.awaiting := null;
      new.run_at := now();
      new.finished_at := null;
      new.message := 'children done: finalizing';
    else
      new.message := case when new.status = 'completed' then 'Completed' else 'Waiting for review' end;
      new.finished_at := now();
    end if;
  end if;
  return new;
end
$$;
create trigger processes_tree_parent
  before update on processes
  for each row when (new.children_total > 0)
  execute function processes_tree_parent();

-- Children's status changes applied to their parents, one update per parent per statement, parents locked in id order
-- (so two statements touching the same parents cannot deadlock on them). A parent whose last unfinished child
-- settles while it waits is set to what it asked for (processes_tree_parent then decides), with its event.
-- The deltas are summed over the two transition tables (+1 for a child's new status, -1 for its old one), never
-- joined: transition tables have no index or statistics, and a join of new_rows and old_rows was planned as a
-- nested loop, quadratic in the rows a statement changes (a 10,000-child cascade: 17 s).
create function processes_tree_update() returns trigger language plpgsql as $$
declare
  parents bigint[];
  revived bigint[];
begin
  -- Every statement on processes comes here (a transition table rules out a column list): most change no
  -- child's status, and end here.
  select array_agg(d.id order by d.id), array_agg(d.id order by d.id) filter (where d.dp > 0) into parents, revived
    from (
      select x.parent_id as id, sum(x.pending) as dp,
             (sum(x.pending) <> 0 or sum(x.running) <> 0 or sum(x.review) <> 0
               or sum(x.completed) <> 0 or sum(x.failed) <> 0 or sum(x.cancelled) <> 0) as changed
        from (
          select parent_id, (status = 'pending')::int as pending, (status = 'running')::int as running,
                 (status = 'waiting_review')::int as review, (status = 'completed')::int as completed,
                 (status = 'failed')::int as failed, (status = 'cancelled')::int as cancelled
            from new_rows where parent_id is not null
          union all
          select parent_id, -(status = 'pending')::int, -(status = 'running')::int,
                 -(status = 'waiting_review')::int, -(status = 'completed')::int,
                 -(status = 'failed')::int, -(status = 'cancelled')::int
            from old_rows where parent_id is not null
        ) x
       group by x.parent_id
    ) d
   where d.changed;
  if parents is null then
    return null;
  end if;
  -- Locked first, in id order: the statement below then reads the parents' current statuses (for their events).
  perform 1 from processes where id = any(parents) order by id for update;
  -- A child back to pending under a parent that has ended (a retry after the parent was cancelled): refused, so
  -- no child runs for a tree that is over (the service answers 409). Only a retry makes a child pending again,
  -- and a claim or start needs a pending child, so pending is the one status to check.
  if revived is not null and exists (select 1 from processes p where p.id = any(revived)
              and p.status in ('completed', 'failed', 'cancelled', 'waiting_review')) then
    raise exception 'tree: the parent of this process has ended' using errcode = 'P0001', hint = 'tree_parent_ended';
  end if;
  with d as (
    select x.parent_id as id, sum(x.dp) as dp, sum(x.dr) as dr, sum(x.dw) as dw, sum(x.dc) as dc, sum(x.df) as df,
           sum(x.dx) as dx, sum(x.dwd) as dwd
      from (
        select parent_id, (status = 'pending')::int as dp, (status = 'running')::int as dr,
               (status = 'waiting_review')::int as dw, (status = 'completed')::int as dc,
               (status = 'failed')::int as df, (status = 'cancelled')::int as dx,
               weight * (tree_progress(status, 0) = 100)::int as dwd
          from new_rows where parent_id = any(parents)
        union all
        select parent_id, -(status = 'pending')::int, -(status = 'running')::int,
               -(status = 'waiting_review')::int, -(status = 'completed')::int,
               -(status = 'failed')::int, -(status = 'cancelled')::int,
               -(weight * (tree_progress(status, 0) = 100)::int)
          from old_rows where parent_id = any(parents)
      ) x
     group by x.parent_id
  ), u as (
    update processes q
       set children_pending = q.children_pending + d.dp,
           children_running = q.children_running + d.dr,
           children_waiting_review = q.children_waiting_review + d.dw,
           children_completed = q.children_completed + d.dc,
           children_failed = q.children_failed + d.df,
           children_cancelled = q.children_cancelled + d.dx,
           children_weight_done = q.children_weight_done + d.dwd,
           status = case when q.awaiting is not null and q.status = 'running' and q.worker_id is null
                              and q.children_pending + d.dp + q.children_running + d.dr = 0
                         then q.awaiting else q.status end,
           message = case when q.awaiting is not null and q.status = 'running' and q.worker_id is null
                          then 'waiting for ' || (q.children_pending + d.dp + q.children_running + d.dr) || ' of ' || q.children_total || ' children'
                          else q.message end,
           version = tree_next_version(q.status, q.worker_id, q.version, q.live_base),
           updated_at = now()
      from d
     where q.id = d.id
    returning q.id, q.status, q.message
  )
  -- `processes` here is the statement's snapshot, before u: the parents' statuses before this change.
  insert into process_events (process_id, status, message)
  select u.id, u.status, u.message from u join processes b on b.id = u.id where b.status <> u.status;
  return null;
end
$$;
create trigger processes_tree_update
  after update on processes
  referencing old table as old_rows new table as new_rows
  for each statement
  execute function processes_tree_update();

-- New children counted on their parents (one update per parent per insert statement: 10,000 children of one
-- create are one update).
create function processes_tree_insert() returns trigger language plpgsql as $$
declare
  parents bigint[];
begin
  select array_agg(distinct n.parent_id order by n.parent_id) into parents from new_rows n where n.parent_id is not null;
  if parents is null then
    return null;
  end if;
  perform 1 from processes where id = any(parents) order by id for update;
  with d as (
    select n.parent_id as id, count(*)::int as n,
           sum((n.status = 'pending')::int) as dp,
           sum((n.status = 'running')::int) as dr,
           sum(n.weight) as w
      from new_rows n
     where n.parent_id is not null
     group by n.parent_id
  )
  update processes q
     set children_total = q.children_total + d.n,
         children_pending = q.children_pending + d.dp,
         children_running = q.children_running + d.dr,
         -- New children start at 0: the mean falls by their share until the next aggregate.
         children_progress = q.children_progress * q.children_weight / (q.children_weight + d.w),
         children_weight = q.children_weight + d.w,
         message = case when q.awaiting is not null and q.status = 'running' and q.worker_id is null
                        then 'waiting for ' || (q.children_pending + d.dp + q.children_running + d.dr) || ' of ' || (q.children_total + d.n) || ' children'
                        else q.message end,
         version = tree_next_version(q.status, q.worker_id, q.version, q.live_base),
         updated_at = now()
    from d
   where q.id = d.id;
  return null;
end
$$;
create trigger processes_tree_insert
  after insert on processes
  referencing new table as new_rows
  for each statement
  execute function processes_tree_insert();

-- The webhook payload's JSON (process_json) gains the tree's fields in sql/015_bounded_cost.sql, which defines
-- the view once with every column it shows.
