// New processes: one statement inserts them with their first events.
import type { Sql } from '../../db/client'
import type { Process } from '../model'
import { toProcess } from './rows'

/** A new process's queue fields, resolved (defaults applied): run_at as a time, or a delay from the database's now(). */
export interface NewProcess {
  type: string
  metadata: object
  priority: number
  max_attempts: number
  run_at: string | null
  delay_ms: number | null
}

export async function insertProcess(
  sql: Sql,
  p: { workspaceId: number; createdBy: number | null; type: string; metadata: object } & Partial<NewProcess>,
): Promise<Process> {
  const item: NewProcess = { priority: 0, max_attempts: 1, run_at: null, delay_ms: null, ...p }
  const [process] = await insertProcesses(sql, { workspaceId: p.workspaceId, createdBy: p.createdBy, items: [item] })
  return process!
}

/** Many processes of one workspace and creator in one statement, with their events; in the order given. */
export async function insertProcesses(sql: Sql, o: { workspaceId: number; createdBy: number | null; items: NewProcess[] }): Promise<Process[]> {
  return insertProcessesOf(
    sql,
    o.items.map((item) => ({ ...item, workspace_id: o.workspaceId, created_by: o.createdBy })),
  )
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
  const rows = items.map(({ workspace_id, created_by, type, metadata, priority, max_attempts, run_at, delay_ms }) => ({
    workspace_id,
    created_by,
    type,
    metadata,
    priority,
    max_attempts,
    run_at,
    delay_ms,
  }))
  const inserted = await sql`
    with x as (
      select * from rows from (
               jsonb_to_recordset(${JSON.stringify(rows)}::text::jsonb)
               as (workspace_id bigint, created_by bigint, type text, metadata jsonb, priority int, max_attempts int, run_at timestamptz, delay_ms bigint)
             ) with ordinality as x(workspace_id, created_by, type, metadata, priority, max_attempts, run_at, delay_ms, n)
    ), p as (
      insert into processes (workspace_id, type, metadata, created_by, message, priority, max_attempts, run_at)
      select x.workspace_id, x.type, x.metadata, x.created_by, 'Queued', x.priority, x.max_attempts,
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
