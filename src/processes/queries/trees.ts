// Process trees: the parent a create or spawn goes under, the children's page, and the cascades of a
// cancel and a retry. The children's counts are kept by the database (sql/013_trees.sql), never here.
import type { Sql } from '../../db/client'
import type { Process } from '../model'
import type { Status } from '../states'
import { toProcess } from './rows'
import { nextVersion } from './transitions'

export interface ParentRow {
  id: number
  workspace_id: number
  status: Status
  depth: number
  root_id: number
  worker_id: string | null
  attempts: number
  worker_token_id: number | null
  type: string
}

/** The parent row, locked until the transaction ends: a cancel of it waits for the children being made, or they for it. */
export async function lockParent(sql: Sql, id: number): Promise<ParentRow | null> {
  const [row] = await sql<ParentRow[]>`
    select id, workspace_id, status, depth, coalesce(root_id, id) as root_id, worker_id, attempts, worker_token_id, type
      from processes where id = ${id} for update`
  return row ?? null
}

export interface ChildFilter {
  parentId: number
  statuses?: string[]
  /** Keyset: only ids above this one. */
  after?: number
  limit: number
}

/** A page of a process's children, oldest first (creation order); one extra row tells whether more follow. */
export async function listChildren(sql: Sql, f: ChildFilter): Promise<{ rows: Process[]; more: boolean }> {
  const rows = await sql`
    select * from processes
     where parent_id = ${f.parentId}
       ${f.statuses ? sql`and status = any(${f.statuses}::text[])` : sql``}
       ${f.after ? sql`and id > ${f.after}` : sql``}
     order by id
     limit ${f.limit + 1}`
  const more = rows.length > f.limit
  return { rows: (more ? rows.slice(0, f.limit) : [...rows]).map(toProcess), more }
}

/**
 * Locks every descendant of a process, deepest first: a child's transition locks the child and then its parent
 * (sql/013_trees.sql), so a cascade that locks from the bottom up takes its locks in the same order and cannot
 * deadlock with it. Returns their ids (none for a process without children: one index probe).
 */
export async function lockDescendants(sql: Sql, id: number): Promise<number[]> {
  const rows = await sql<{ id: number }[]>`
    with recursive t as (
      select id, depth from processes where parent_id = ${id}
      union all
      select c.id, c.depth from processes c join t on c.parent_id = t.id
    )
    select p.id from processes p where p.id = any(array(select id from t)) order by p.depth desc, p.id for update of p`
  return rows.map((r) => r.id)
}

/** Cancel cascades down: every pending or running descendant is cancelled, with its event (their workers are told). */
export async function cancelDescendants(sql: Sql, ids: number[]): Promise<Process[]> {
  if (ids.length === 0) return []
  const rows = await sql`
    with p as (
      update processes
         set status = 'cancelled', message = 'Cancelled with its parent', finished_at = now(), updated_at = now(),
             version = ${nextVersion(sql, undefined)}
       where id = any(${ids}::bigint[]) and status in ('pending', 'running')
      returning *
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p order by id`
  return rows.map(toProcess)
}

/** A retried parent retries its failed descendants (as a user's retry of each, so they are claimed again). */
export async function retryDescendants(sql: Sql, ids: number[]): Promise<Process[]> {
  if (ids.length === 0) return []
  const rows = await sql`
    with p as (
      update processes
         set status = 'pending', message = 'Retried with its parent', progress = 0, error = null, error_stack = null, result_summary = null,
             started_at = null, finished_at = null, worker_id = null, worker_token_id = null, heartbeat_at = null,
             run_at = now(), updated_at = now(), version = version + 1
       where id = any(${ids}::bigint[]) and status = 'failed'
      returning *
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p order by id`
  return rows.map(toProcess)
}

/**
 * Retried parents whose handler had already returned (awaiting) and that have unfinished children again go
 * straight back to waiting (pending → running with no lease): their handler does not run twice.
 */
export async function resumeWaiting(sql: Sql, ids: number[]): Promise<Process[]> {
  if (ids.length === 0) return []
  const rows = await sql`
    with p as (
      update processes
         set status = 'running', worker_id = null, worker_token_id = null, heartbeat_at = null,
             started_at = coalesce(started_at, now()), updated_at = now(), version = version + 1,
             message = 'waiting for ' || (children_pending + children_running) || ' of ' || children_total || ' children'
       where id = any(${ids}::bigint[]) and status = 'pending' and awaiting is not null
         and children_pending + children_running > 0
      returning *
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p order by id`
  return rows.map(toProcess)
}

/**
 * Parents' progress from their committed children: the weighted mean (a child whose worker part is over counts
 * as 100, a pending one 0, so only the running ones are read: processes_running_children_idx), written where it moved by at least a hundredth, with the parent's next version (past its lease
 * holder's live states, as every commit by another must). One statement for all the parents given; returns the
 * rows it changed. src/processes/tree-refresh.ts calls it at most every REFRESH_MS.
 */
export async function aggregateProgress(sql: Sql, ids: number[]): Promise<Process[]> {
  if (ids.length === 0) return []
  const rows = await sql`
    with a as (
      -- Settled children count 100 (children_weight_done), pending ones 0: only the running ones are read.
      select q.id, (q.children_weight_done * 100 + coalesce(r.sum, 0)) / nullif(q.children_weight, 0) as mean
        from processes q
        left join lateral (
          select sum(c.weight * c.progress) as sum from processes c where c.parent_id = q.id and c.status = 'running'
        ) r on true
       where q.id = any(${ids}::bigint[]) and q.children_total > 0
    )
    update processes p
       set children_progress = a.mean, version = tree_next_version(p.status, p.worker_id, p.version, p.live_base), updated_at = now()
      from a
     where p.id = a.id and p.status in ('pending', 'running') and abs(p.children_progress - a.mean) >= 0.01
    returning p.*`
  return rows.map(toProcess)
}

/** Counts that disagree with a recount of the children (tests and the kill -9 check): none, if the triggers hold. */
export async function driftedParents(sql: Sql): Promise<{ id: number }[]> {
  return sql<{ id: number }[]>`
    select p.id from processes p
      left join lateral (
        select count(*)::int as total,
               count(*) filter (where c.status = 'pending')::int as pending,
               count(*) filter (where c.status = 'running')::int as running,
               count(*) filter (where c.status = 'waiting_review')::int as waiting_review,
               count(*) filter (where c.status = 'completed')::int as completed,
               count(*) filter (where c.status = 'failed')::int as failed,
               count(*) filter (where c.status = 'cancelled')::int as cancelled
          from processes c where c.parent_id = p.id
      ) r on true
     where (p.children_total > 0 or r.total > 0)
       and (p.children_total, p.children_pending, p.children_running, p.children_waiting_review, p.children_completed,
            p.children_failed, p.children_cancelled)
           is distinct from (r.total, r.pending, r.running, r.waiting_review, r.completed, r.failed, r.cancelled)`
}
