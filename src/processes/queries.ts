// Runtime SQL for processes: verb-first functions taking the handle first, so each also runs inside a transaction.
// The transition functions here are the only code that writes `processes.status`.
import type { Row, Sql } from '../db/client'
import type { Process, ProcessSummary } from './model'
import { sourcesOf, type Status } from './states'

/**
 * heartbeat_at is lease bookkeeping, not part of the process: it changes without a new version; worker_token_id
 * (which token holds the lease) is not for API clients either.
 */
export function toProcess(row: Row): Process {
  const { heartbeat_at: _, worker_token_id: __, ...process } = row
  return process as Process
}

export async function getProcesses(sql: Sql, ids: number[]): Promise<Process[]> {
  if (ids.length === 0) return []
  const rows = await sql`select * from processes where id = any(${ids}::bigint[])`
  return rows.map(toProcess)
}

export interface ProcessText extends ProcessVersion {
  /** The process's JSON as the API shows it (sql/002_process_json.sql). */
  json: string
}

export async function getProcessTexts(sql: Sql, ids: number[]): Promise<ProcessText[]> {
  if (ids.length === 0) return []
  return sql<ProcessText[]>`select id, workspace_id, version, json from process_json where id = any(${ids}::bigint[])`
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
  before?: number
  limit: number
}

/** Newest first by id; fetches one extra row to know whether another page follows. */
export async function listProcesses(sql: Sql, f: ListFilter): Promise<{ rows: ProcessSummary[]; more: boolean }> {
  const rows = await sql<ProcessSummary[]>`
    select id, workspace_id, type, status, progress, message, error, attempts, version, worker_id,
           created_by, created_at, updated_at, started_at, finished_at
      from processes
     where workspace_id = ${f.workspaceId}
       ${f.statuses ? sql`and status = any(${f.statuses}::text[])` : sql``}
       ${f.type ? sql`and type = ${f.type}` : sql``}
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
  /** Keyset: only ids above this one (0 for the first page). */
  after: number
  limit: number
}

/** A page of the processes a workspace stream starts with: everything not final that matches, by id. */
export async function listActive(sql: Sql, f: ActiveFilter): Promise<Process[]> {
  const rows = await sql`
    select * from processes
     where workspace_id = ${f.workspaceId}
       and id > ${f.after}
       and status in ('pending', 'running', 'failed', 'waiting_review')
       ${f.statuses ? sql`and status = any(${f.statuses}::text[])` : sql``}
       ${f.type ? sql`and type = ${f.type}` : sql``}
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

export async function insertProcess(sql: Sql, p: { workspaceId: number; type: string; metadata: object; createdBy: number | null }): Promise<Process> {
  const [row] = await sql`
    with p as (
      insert into processes (workspace_id, type, metadata, created_by, message)
      values (${p.workspaceId}, ${p.type}, ${JSON.stringify(p.metadata)}::text::jsonb, ${p.createdBy}, 'Queued')
      returning *
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p`
  return toProcess(row!)
}

// ---------------------------------------------------------------------------------------------
// Transitions. Each is one statement: the guarded update (status = any(allowed) — a racing
// transition finds no row and loses cleanly), the version bump, and the event, together.

export interface Transition {
  to: Status
  /** The statuses this operation starts from; each must be allowed by the state machine. */
  from: readonly Status[]
  message: string | null
  /** Extra assignments, starting with a comma. */
  set?: PromiseLike<unknown>
  /** Extra conditions, starting with `and`. */
  guard?: PromiseLike<unknown>
}

export async function transitionProcess(sql: Sql, id: number, tr: Transition): Promise<Process | null> {
  const from = sourcesOf(tr.to, tr.from)
  const [row] = await sql`
    with p as (
      update processes
         set status = ${tr.to}, message = ${tr.message}, version = version + 1, updated_at = now()
             ${tr.set ?? sql``}
       where id = ${id} and status = any(${from}::text[]) ${tr.guard ?? sql``}
      returning *
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p`
  return row ? toProcess(row) : null
}

/** The transitions users ask for over REST, each guarded by workspace visibility. */
export function userTransition(sql: Sql, action: 'cancel' | 'retry' | 'approve' | 'discard', workspaceIds: number[], note?: string): Transition {
  const guard = sql`and workspace_id = any(${workspaceIds}::bigint[])`
  switch (action) {
    case 'cancel':
      return { to: 'cancelled', from: ['pending', 'running'], message: note ?? 'Cancelled', guard, set: sql`, finished_at = now()` }
    case 'retry':
      return {
        to: 'pending',
        from: ['failed'],
        message: note ?? 'Retry requested',
        guard,
        set: sql`, progress = 0, error = null, result_summary = null, started_at = null, finished_at = null,
                 worker_id = null, worker_token_id = null, heartbeat_at = null`,
      }
    case 'approve':
      return { to: 'completed', from: ['waiting_review'], message: note ?? 'Approved', guard, set: sql`, finished_at = now()` }
    case 'discard':
      return { to: 'cancelled', from: ['waiting_review'], message: note ?? 'Discarded', guard, set: sql`, finished_at = now()` }
  }
}

/** Why a guarded statement found no row: the current state, if the process is visible at all. */
export async function findState(sql: Sql, id: number) {
  const [row] = await sql<{ status: Status; worker_id: string | null; attempts: number; workspace_id: number; type: string; worker_token_id: number | null }[]>`
    select status, worker_id, attempts, workspace_id, type, worker_token_id from processes where id = ${id}`
  return row ?? null
}

// ---------------------------------------------------------------------------------------------
// Worker side.

/** The worker token a lease is taken under, and its scope (null: any workspace / type). */
export interface LeaseToken {
  tokenId: number
  workspaceIds: number[] | null
  types: string[] | null
}

/** A scoped worker token sees only its workspaces and types. */
export function scopeGuard(sql: Sql, token: LeaseToken | undefined) {
  if (!token) return sql``
  return sql`${token.workspaceIds ? sql`and workspace_id = any(${token.workspaceIds}::bigint[])` : sql``}
             ${token.types ? sql`and type = any(${token.types}::text[])` : sql``}`
}

export async function claimNext(sql: Sql, workerId: string, types: string[] | null, token?: LeaseToken): Promise<Process | null> {
  const [row] = await sql`
    with next as (
      select id from processes
       where status = 'pending' ${types ? sql`and type = any(${types}::text[])` : sql``} ${scopeGuard(sql, token)}
       order by id
       limit 1
       for update skip locked
    ), p as (
      update processes p
         set status = 'running', worker_id = ${workerId}, worker_token_id = ${token?.tokenId ?? null}, attempts = attempts + 1, progress = 0,
             message = 'Started', started_at = now(), heartbeat_at = now(), updated_at = now(),
             version = version + 1
        from next
       where p.id = next.id and p.status = 'pending'
      returning p.*
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p`
  return row ? toProcess(row) : null
}

/**
 * Owner guard for worker frames: the lease holder, under the worker token that took the lease (a lease taken
 * before leases were bound to tokens has none), and the current attempt when the frame names one.
 */
export function ownerGuard(sql: Sql, workerId: string, attempt: number | undefined, tokenId?: number) {
  const token = tokenId === undefined ? sql`` : sql`and (worker_token_id is null or worker_token_id = ${tokenId})`
  return attempt === undefined
    ? sql`and worker_id = ${workerId} ${token}`
    : sql`and worker_id = ${workerId} and attempts = ${attempt} ${token}`
}

export function workerTransition(sql: Sql, op: 'start' | 'complete' | 'review' | 'fail', workerId: string, attempt: number | undefined, extra: { result_summary?: unknown; error?: string } = {}, token?: LeaseToken): Transition {
  switch (op) {
    case 'start':
      // A pending process has no lease to fence yet: start opens the next attempt.
      return {
        to: 'running',
        from: ['pending'],
        message: 'Started',
        set: sql`, worker_id = ${workerId}, worker_token_id = ${token?.tokenId ?? null}, attempts = attempts + 1, progress = 0, started_at = now(), heartbeat_at = now()`,
        guard: scopeGuard(sql, token),
      }
    case 'complete':
    case 'review': {
      const summary = extra.result_summary === undefined ? null : JSON.stringify(extra.result_summary)
      return {
        to: op === 'complete' ? 'completed' : 'waiting_review',
        from: ['running'],
        message: op === 'complete' ? 'Completed' : 'Waiting for review',
        set: sql`, progress = 100, result_summary = ${summary}::text::jsonb, finished_at = now()`,
        guard: ownerGuard(sql, workerId, attempt, token?.tokenId),
      }
    }
    case 'fail':
      return {
        to: 'failed',
        from: ['running'],
        message: extra.error ?? 'Failed',
        set: sql`, error = ${extra.error ?? 'failed'}, finished_at = now()`,
        guard: ownerGuard(sql, workerId, attempt, token?.tokenId),
      }
  }
}

export interface ProgressWrite {
  id: number
  progress: number
  message: string | null
  worker_id: string
  attempt: number | null
  /** The worker token sending it: it must be the one holding the lease (null: not checked). */
  worker_token_id?: number | null
}

/** One statement for many processes' coalesced progress; returns the rows it changed. */
export async function writeProgress(sql: Sql, writes: ProgressWrite[]): Promise<Process[]> {
  const rows = await sql`
    update processes p
       set progress = x.progress, message = coalesce(x.message, p.message), version = p.version + 1,
           updated_at = now(), heartbeat_at = now()
      from jsonb_to_recordset(${JSON.stringify(writes)}::text::jsonb)
           as x(id bigint, progress int, message text, worker_id text, attempt int, worker_token_id bigint)
     where p.id = x.id and p.status = 'running' and p.worker_id = x.worker_id
       and (x.attempt is null or p.attempts = x.attempt)
       and (x.worker_token_id is null or p.worker_token_id is null or p.worker_token_id = x.worker_token_id)
    returning p.*`
  return rows.map(toProcess)
}

export async function touchHeartbeat(sql: Sql, id: number, workerId: string, attempt: number | undefined, tokenId?: number): Promise<boolean> {
  const rows = await sql`
    update processes set heartbeat_at = now()
     where id = ${id} and status = 'running' ${ownerGuard(sql, workerId, attempt, tokenId)}
    returning id`
  return rows.length > 0
}

/** A worker's log line: an event with the status unchanged, and the process's latest message. */
export async function appendLog(sql: Sql, id: number, workerId: string, attempt: number | undefined, message: string, tokenId?: number): Promise<Process | null> {
  const [row] = await sql`
    with p as (
      update processes set message = ${message}, version = version + 1, updated_at = now(), heartbeat_at = now()
       where id = ${id} and status = 'running' ${ownerGuard(sql, workerId, attempt, tokenId)}
      returning *
    ), e as (
      insert into process_events (process_id, status, message) select id, status, ${message} from p
    )
    select * from p`
  return row ? toProcess(row) : null
}

/** Fails every running process whose lease went silent; safe on every instance at once (skip locked + guard). */
export async function sweepExpired(sql: Sql, timeoutMs: number): Promise<Process[]> {
  const rows = await sql`
    with expired as (
      select id from processes
       where status = 'running' and heartbeat_at < now() - ${timeoutMs} * interval '1 millisecond'
       order by heartbeat_at
       limit 500
       for update skip locked
    ), p as (
      update processes p
         set status = 'failed', error = 'timed out', message = 'timed out', finished_at = now(),
             updated_at = now(), version = p.version + 1
        from expired
       where p.id = expired.id and p.status = 'running'
      returning p.*
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p`
  return rows.map(toProcess)
}
