-- Tree counts without the parent's lock on claims. In sql/013_trees.sql every child's status change updated its
-- parent's row, the claims too (pending → running): at concurrency 50 the claims and the group commits of
-- completes then queued on that one row lock (bench tree: the lock's `for update` inside the trigger averaged
-- 7.7 ms a call, the tree's children ran at 0.71–0.87× the jobs/s of independent processes).
--
-- A claim (or start) changes no count fan-in reads: the children still unfinished (pending + running) stay
-- as many, and no child settles. So a statement whose only changes under a parent are pending → running moves
-- leaves the parent alone. What stays exact, in the child's own statement as before: the total, the
-- unfinished (the sum children_pending + children_running), waiting_review, completed, failed, cancelled and
-- the settled weight; so the fan-in's "none left" is decided exactly once, under the parent's lock, by the
-- statement that settles the last child. The split of the unfinished into pending and running is for display:
-- each counted change adjusts it (running kept within 0 and the unfinished), and the refresher recounts the
-- running children (src/processes/queries/trees.ts aggregateProgress, through processes_running_children_idx,
-- at most every REFRESH_MS). Once none is unfinished both are 0, exactly.
--
-- A child back to pending (a queue retry, a user's retry) still locks its parent: an ended parent refuses it.

create or replace function processes_tree_update() returns trigger language plpgsql as $$
declare
  parents bigint[];
  revived bigint[];
begin
  -- Every statement on processes comes here (a transition table rules out a column list): most change no
  -- child's status, and the claims change only the split; both end here.
  select array_agg(d.id order by d.id), array_agg(d.id order by d.id) filter (where d.dp > 0) into parents, revived
    from (
      select x.parent_id as id, sum(x.pending) as dp, sum(x.running) as dr, sum(x.review) as dw,
             sum(x.completed) as dc, sum(x.failed) as df, sum(x.cancelled) as dx
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
   where d.dp > 0 or d.dp + d.dr <> 0 or d.dw <> 0 or d.dc <> 0 or d.df <> 0 or d.dx <> 0;
  if parents is null then
    return null;
  end if;
  -- Locked first, in id order: the statement below then reads the parents' current statuses (for their events).
  perform 1 from processes where id = any(parents) order by id for update;
  -- A child back to pending under a parent that has ended (a retry after the parent was cancelled): refused, so
  -- no child runs for a tree that is over (the service answers 409). A claim or start needs a pending child,
  -- so pending is the one status to check.
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
       -- The unfinished, exact: pending + running + dp + dr. Running moves by dr within [0, unfinished] (the
       -- claims it has not seen make it low, never wrong in sum); pending is the rest.
       set children_running = least(q.children_pending + q.children_running + d.dp + d.dr, greatest(0, q.children_running + d.dr)),
           children_pending = q.children_pending + q.children_running + d.dp + d.dr
                              - least(q.children_pending + q.children_running + d.dp + d.dr, greatest(0, q.children_running + d.dr)),
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
