// New processes: one statement inserts them with their first events.
import type { Row, Sql } from '../../db/client'
import type { Process } from '../model'
import { toProcess } from './rows'

/** A new process's queue fields, resolved (defaults applied): run_at as a time, or a delay from the database's now(). */
export interface NewProcess {
  type: string
  metadata: object
  /** Deduplicated, in the order given (none by default). */
  tags?: string[]
  priority: number
  max_attempts: number
  run_at: string | null
  delay_ms: number | null
  /** While a process with this key is pending or running in the workspace, none other is made (src/processes/unique.ts). */
  unique_key?: string | null
  /** Tree options: its share of its parent's progress, and how it ends as a parent. */
  weight?: number
  child_failures?: 'fail' | 'tolerate'
  finalize?: boolean
}

/** The parent new processes are made under: its root and depth are theirs too (src/processes/tree.ts checks it). */
export interface ParentRef {
  id: number
  root_id: number
  depth: number
}

export async function insertProcess(
  sql: Sql,
  p: { workspaceId: number; createdBy: number | null; type: string; metadata: object } & Partial<NewProcess>,
): Promise<Process> {
  const item: NewProcess = { priority: 0, max_attempts: 1, run_at: null, delay_ms: null, tags: [], ...p }
  const [process] = await insertProcesses(sql, { workspaceId: p.workspaceId, createdBy: p.createdBy, items: [item] })
  return process!
}

/** The partial unique index of sql/010_queues.sql, as an insert's conflict target (its predicate, word for word). */
function uniqueKeyConflict(sql: Sql) {
  return sql`on conflict (workspace_id, unique_key) where unique_key is not null and status in ('pending', 'running') do nothing`
}

/**
 * Many processes in one statement, with their events; returned in the order given (ids ascend with it). An
 * item whose unique_key is held by a pending or running process of the workspace (or by an earlier item) is
 * not inserted and not returned: src/processes/unique.ts finds what holds it.
 */
export async function insertProcesses(sql: Sql, o: { workspaceId: number; createdBy: number | null; items: NewProcess[] }): Promise<Process[]> {
  return (await insertProcessRows(sql, o)).map(toProcess)
}

/** insertProcesses's rows as stored (with unique_key, which the API's process does not show). */
export async function insertProcessRows(
  sql: Sql,
  o: { workspaceId: number; createdBy: number | null; items: NewProcess[]; parent?: ParentRef | null },
): Promise<Row[]> {
  const items = o.items.map(({ type, metadata, tags, priority, max_attempts, run_at, delay_ms, unique_key, weight, child_failures, finalize }) => ({
    type,
    metadata,
    tags: tags ?? [],
    priority,
    max_attempts,
    run_at,
    delay_ms,
    unique_key: unique_key ?? null,
    weight: weight ?? 1,
    child_failures: child_failures ?? 'fail',
    finalize: finalize ?? false,
  }))
  const parent = o.parent ?? null
  const keyed = items.some((i) => i.unique_key !== null)
  return sql`
    with x as (
      select * from rows from (
               jsonb_to_recordset(${JSON.stringify(items)}::text::jsonb)
               as (type text, metadata jsonb, tags text[], priority int, max_attempts int, run_at timestamptz, delay_ms bigint, unique_key text,
                   weight float8, child_failures text, finalize boolean)
             ) with ordinality as x(type, metadata, tags, priority, max_attempts, run_at, delay_ms, unique_key, weight, child_failures, finalize, n)
    ), p as (
      insert into processes (workspace_id, type, metadata, tags, created_by, message, priority, max_attempts, run_at, unique_key,
                             weight, child_failures, finalize, parent_id, root_id, depth)
      select ${o.workspaceId}, x.type, x.metadata, x.tags, ${o.createdBy}, 'Queued', x.priority, x.max_attempts,
             coalesce(x.run_at, now() + coalesce(x.delay_ms, 0) * interval '1 millisecond'), x.unique_key,
             x.weight, x.child_failures, x.finalize, ${parent?.id ?? null}::bigint, ${parent?.root_id ?? null}::bigint, ${parent ? parent.depth + 1 : 0}
        from x
       order by x.n
      ${keyed ? uniqueKeyConflict(sql) : sql``}
      returning *
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p order by id`
}

/** A new process and where it goes: the workspace, and the user creating it. */
export type NewProcessIn = NewProcess & { workspace_id: number; created_by: number | null }

/**
 * Many processes in one statement, each with its own workspace and creator (the group commit of single
 * creates, src/processes/create-batcher.ts), with their events; returned in the order given (ids ascend with
 * it: the rows are inserted in that order).
 */
export async function insertProcessesOf(sql: Sql, items: NewProcessIn[]): Promise<Process[]> {
  if (items.length === 0) return []
  const rows = items.map(({ workspace_id, created_by, type, metadata, tags, priority, max_attempts, run_at, delay_ms }) => ({
    workspace_id,
    created_by,
    type,
    metadata,
    tags: tags ?? [],
    priority,
    max_attempts,
    run_at,
    delay_ms,
  }))
  const inserted = await sql`
    with x as (
      select * from rows from (
               jsonb_to_recordset(${JSON.stringify(rows)}::text::jsonb)
               as (workspace_id bigint, created_by bigint, type text, metadata jsonb, tags text[], priority int, max_attempts int, run_at timestamptz, delay_ms bigint)
             ) with ordinality as x(workspace_id, created_by, type, metadata, tags, priority, max_attempts, run_at, delay_ms, n)
    ), p as (
      insert into processes (workspace_id, type, metadata, tags, created_by, message, priority, max_attempts, run_at)
      select x.workspace_id, x.type, x.metadata, x.tags, x.created_by, 'Queued', x.priority, x.max_attempts,
             coalesce(x.run_at, now() + coalesce(x.delay_ms, 0) * interval '1 millisecond')
        from x
       order by x.n
      returning *
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p order by id`
  return inserted.map(toProcess)
}
