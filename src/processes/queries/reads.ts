// Reads of processes and their events: by id (batched by the reader), lists, the workspace stream's pages, and
// what a Redis outage may have hidden.
import type { Sql } from '../../db/client'
import type { Process, ProcessSummary } from '../model'
import { NOT_FINAL, type Status } from '../states'
import { toProcess } from './rows'

/** What a public token covers: ids and/or tags (null: not scoped by that). */
export interface CoverScope {
  processIds: number[] | null
  tags: string[] | null
}

/** A public token's scope as a condition: only the processes it covers (nothing when there is no scope). */
function coveredBy(sql: Sql, scope: CoverScope | undefined) {
  if (!scope) return sql``
  return sql`and (id = any(${scope.processIds ?? []}::bigint[]) or tags && ${scope.tags ?? []}::text[])`
}

export async function getProcesses(sql: Sql, ids: number[]): Promise<Process[]> {
  if (ids.length === 0) return []
  const rows = await sql`select * from processes where id = any(${ids}::bigint[])`
  return rows.map(toProcess)
}

export interface ProcessText extends ProcessVersion {
  /** The process's JSON as the API shows it, rendered by the server (src/processes/reader.ts findText). */
  json: string
}

export interface ProcessVersion {
  id: number
  workspace_id: number
  version: number
}

export async function getVersions(sql: Sql, ids: number[]): Promise<ProcessVersion[]> {
  if (ids.length === 0) return []
  return sql<ProcessVersion[]>`
    select id, workspace_id, version from processes where id = any(${ids}::bigint[])`
}

export interface ListFilter {
  workspaceId: number
  statuses?: string[]
  type?: string
  /** Processes carrying every one of these tags. */
  tags?: string[]
  /** A public token's: only the processes it covers. */
  scope?: CoverScope
  /** Only the children of this process. */
  parentId?: number
  before?: number
  limit: number
}

/** Newest first by id; fetches one extra row to know whether another page follows. */
export async function listProcesses(sql: Sql, f: ListFilter): Promise<{ rows: ProcessSummary[]; more: boolean }> {
  const rows = await sql<ProcessSummary[]>`
    select id, workspace_id, type, status, progress, message, error, attempts, version, worker_id,
           created_by, created_at, updated_at, started_at, finished_at, priority, run_at, max_attempts, parent_id
      from processes
     where workspace_id = ${f.workspaceId}
       ${f.parentId !== undefined ? sql`and parent_id = ${f.parentId}` : sql``}
       ${f.statuses ? sql`and status = any(${f.statuses}::text[])` : sql``}
       ${f.type ? sql`and type = ${f.type}` : sql``}
       ${f.tags ? sql`and tags @> ${f.tags}::text[]` : sql``}
       ${coveredBy(sql, f.scope)}
       ${f.before ? sql`and id < ${f.before}` : sql``}
     order by id desc
     limit ${f.limit + 1}`
  const more = rows.length > f.limit
  return { rows: more ? rows.slice(0, f.limit) : [...rows], more }
}

export interface ActiveFilter {
  workspaceId: number
  statuses?: string[]
  type?: string
  /** Processes carrying every one of these tags. */
  tags?: string[]
  /** A public token's: only the processes it covers. */
  scope?: CoverScope
  /** Only one tree: the root and its descendants. */
  rootId?: number
  /** Keyset: only ids above this one (0 for the first page). */
  after: number
  limit: number
}

/**
 * NOT_FINAL written out as literals in listActive, not a parameter: only then does the planner know a page may
 * read the partial index processes_active_idx (sql/016), the workspace's live rows by id, instead of walking
 * the primary key through a workspace's history.
 */
const ACTIVE_LITERALS = ['pending', 'running', 'waiting_review', 'failed']
if (NOT_FINAL.join() !== ACTIVE_LITERALS.join()) throw new Error('listActive and processes_active_idx must name NOT_FINAL')

/** A page of the processes a workspace stream starts with: everything not final (states.ts) that matches, by id. */
export async function listActive(sql: Sql, f: ActiveFilter): Promise<Process[]> {
  const rows = await sql`
    select * from processes
     where workspace_id = ${f.workspaceId}
       and id > ${f.after}
       and status in ('pending', 'running', 'waiting_review', 'failed')
       ${f.statuses ? sql`and status = any(${f.statuses}::text[])` : sql``}
       ${f.type ? sql`and type = ${f.type}` : sql``}
       ${f.tags ? sql`and tags @> ${f.tags}::text[]` : sql``}
       ${coveredBy(sql, f.scope)}
       ${f.rootId !== undefined ? sql`and (root_id = ${f.rootId} or id = ${f.rootId})` : sql``}
     order by id
     limit ${f.limit}`
  return rows.map(toProcess)
}

/** Changed processes of some workspaces since a moment: what a Redis outage may have hidden. */
export async function listChangedSince(sql: Sql, workspaceIds: number[], since: Date): Promise<Process[]> {
  if (workspaceIds.length === 0) return []
  const rows = await sql`
    select * from processes
     where workspace_id = any(${workspaceIds}::bigint[]) and updated_at >= ${since}
     order by id`
  return rows.map(toProcess)
}

/** Processes of these workers that left `running` since then: the leases an outage may have hidden. */
export async function listLeasesEndedSince(sql: Sql, workerIds: string[], since: Date): Promise<Process[]> {
  if (workerIds.length === 0) return []
  const rows = await sql`
    select * from processes
     where worker_id = any(${workerIds}::text[]) and status <> 'running' and updated_at >= ${since}
     order by id`
  return rows.map(toProcess)
}

export async function listEvents(sql: Sql, processId: number, after: number, limit: number) {
  return sql<{ id: number; status: Status; message: string | null; created_at: string }[]>`
    select id, status, message, created_at from process_events
     where process_id = ${processId} and id > ${after}
     order by id
     limit ${limit}`
}

/** Why a guarded statement found no row: the current state, if the process is visible at all. */
export async function findState(sql: Sql, id: number) {
  const [row] = await sql<
    {
      status: Status
      worker_id: string | null
      attempts: number
      workspace_id: number
      type: string
      worker_token_id: number | null
      awaiting: Status | null
    }[]
  >`
    select status, worker_id, attempts, workspace_id, type, worker_token_id, awaiting from processes where id = ${id}`
  return row ?? null
}

/** When a pending process comes due, if that is still ahead: what a worker's `start` is refused for. */
export async function notDueUntil(sql: Sql, id: number): Promise<string | null> {
  const [row] = await sql<{ run_at: string }[]>`select run_at from processes where id = ${id} and status = 'pending' and run_at > now()`
  return row?.run_at ?? null
}
