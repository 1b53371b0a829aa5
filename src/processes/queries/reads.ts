// Reads of processes and their events: by id (batched by the reader), lists, the workspace stream's pages, and
// what a Redis outage may have hidden.
import type { Sql } from '../../db/client'
import type { Process, ProcessSummary, View } from '../model'
import { NOT_FINAL, type Status } from '../states'
import { SEARCH_SCAN_MAX, searchCondition, viewCondition } from './filters'
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
  /** One of the views (queries/filters.ts). */
  view?: View
  /** A search: within the newest SEARCH_SCAN_MAX rows the other filters match. */
  q?: string
  before?: number
  limit: number
}

/** The list's filters (all but the search and the cursor) as conditions; also the bulk actions' selection. */
export function listConditions(sql: Sql, f: Omit<ListFilter, 'q' | 'before' | 'limit'>) {
  return sql`workspace_id = ${f.workspaceId}
       ${f.parentId !== undefined ? sql`and parent_id = ${f.parentId}` : sql``}
       ${f.statuses ? sql`and status = any(${f.statuses}::text[])` : sql``}
       ${f.type ? sql`and type = ${f.type}` : sql``}
       ${f.tags ? sql`and tags @> ${f.tags}::text[]` : sql``}
       ${viewCondition(sql, f.view)}
       ${coveredBy(sql, f.scope)}`
}

const SUMMARY_COLUMNS = `id, workspace_id, type, status, progress, message, error, attempts, version, worker_id,
  created_by, created_at, updated_at, started_at, finished_at, priority, run_at, max_attempts, parent_id`

/**
 * Newest first by id; fetches one extra row to know whether another page follows. `next`: the cursor of the
 * next page, if one may follow. A search reads at most SEARCH_SCAN_MAX rows per page: a page may then hold
 * fewer rows than `limit` (even none) and still have a next page, which goes on below what this one read.
 */
export async function listProcesses(sql: Sql, f: ListFilter): Promise<{ rows: ProcessSummary[]; next: number | null }> {
  const columns = sql.unsafe(SUMMARY_COLUMNS)
  if (f.q === undefined) {
    const rows = await sql<ProcessSummary[]>`
      select ${columns}
        from processes
       where ${listConditions(sql, f)}
         ${f.before ? sql`and id < ${f.before}` : sql``}
       order by id desc
       limit ${f.limit + 1}`
    const more = rows.length > f.limit
    const page = more ? rows.slice(0, f.limit) : [...rows]
    return { rows: page, next: more ? page[page.length - 1]!.id : null }
  }
  const rows = await sql<(ProcessSummary & { scanned: number; floor: number })[]>`
    with scan as (
      select ${columns}, ${searchCondition(sql, f.q)} as hit
        from processes
       where ${listConditions(sql, f)}
         ${f.before ? sql`and id < ${f.before}` : sql``}
       order by id desc
       limit ${SEARCH_SCAN_MAX}
    ), window_ as (
      select count(*)::int as scanned, min(id) as floor from scan
    )
    select s.*, w.scanned, w.floor
      from window_ w left join lateral (
        select ${columns} from scan where hit order by id desc limit ${f.limit + 1}
      ) s on true`
  const window = rows[0]
  const hits = rows.filter((r) => r.id !== null)
  const more = hits.length > f.limit
  const page = (more ? hits.slice(0, f.limit) : hits).map(({ scanned: _s, floor: _f, ...row }) => row as ProcessSummary)
  if (more) return { rows: page, next: page[page.length - 1]!.id }
  // The window was full: older rows remain unread, below its oldest.
  return { rows: page, next: window && window.scanned >= SEARCH_SCAN_MAX ? Number(window.floor) : null }
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
 * read the partial index processes_active_idx (sql/018_bounded_reads.sql), the workspace's live rows by id, instead of walking
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
  return sql<{ id: number; status: Status; message: string | null; created_at: string; stack: string | null }[]>`
    select id, status, message, created_at, stack from process_events
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
