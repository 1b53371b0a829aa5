// Transitions users and workers ask for. Each is one statement: the guarded update (status = any(allowed): a
// racing transition finds no row and loses cleanly), the version bump, and the event, together.
// With claims.ts, failures.ts and completions.ts these are the only code that writes `processes.status`.
import type { Sql } from '../../db/client'
import { LIVE_VERSION_JUMP } from '../live'
import type { Process } from '../model'
import { edge, sourcesOf, type Status } from '../states'
import { toProcess } from './rows'

/**
 * Every operation's edge, from the state table (states.ts): an edge the table does not have throws when this
 * module loads. Status writes and their guards take `to` and `from` from here. Reads that must match a
 * partial index (`where status = 'pending'` / `'running'`, sql/001_init.sql, sql/003_queue.sql) name the
 * status as a literal, as the planner matches a partial index only against a constant.
 */
export const EDGES = {
  cancel: edge(['pending', 'running'], 'cancelled'),
  retry: edge(['failed'], 'pending'),
  approve: edge(['waiting_review'], 'completed'),
  discard: edge(['waiting_review'], 'cancelled'),
  claim: edge(['pending'], 'running'),
  complete: edge(['running'], 'completed'),
  review: edge(['running'], 'waiting_review'),
  fail: edge(['running'], 'failed'),
  /** The queue's retry after a fail or a lease time-out with attempts left. */
  retryLater: edge(['running'], 'pending'),
} as const

export interface Transition {
  to: Status
  /** The statuses this operation starts from; each must be allowed by the state machine. */
  from: readonly Status[]
  message: string | null
  /** Extra assignments, starting with a comma. */
  set?: PromiseLike<unknown>
  /** Extra conditions, starting with `and`. */
  guard?: PromiseLike<unknown>
  /** Made by the lease holder from its live state (src/processes/live.ts); absent for everyone else. */
  holder?: HolderVersion
}

/** The lease holder's newest state: the version its commit follows, and the live_base its lease began at. */
export interface HolderVersion {
  version: number
  base: number
}

/**
 * The version a commit gives its row (src/processes/live.ts): the holder's next after its live state, guarded
 * by its live_base; anyone else's next past whatever a holder of a running process may have shown.
 */
export function nextVersion(sql: Sql, holder: HolderVersion | undefined) {
  return holder
    ? sql`greatest(version, ${holder.version}) + 1`
    : sql`case when status = 'running' then greatest(version, live_base) + ${LIVE_VERSION_JUMP} else version + 1 end`
}

/** The holder's commit applies only while its lease is the one the row holds (a takeover moves live_base). */
export function holderGuard(sql: Sql, holder: HolderVersion | undefined) {
  return holder ? sql`and live_base = ${holder.base}` : sql``
}

export async function transitionProcess(sql: Sql, id: number, tr: Transition): Promise<Process | null> {
  const from = sourcesOf(tr.to, tr.from)
  const [row] = await sql`
    with p as (
      update processes
         set status = ${tr.to}, message = ${tr.message}, version = ${nextVersion(sql, tr.holder)}, updated_at = now()
             ${tr.set ?? sql``}
       where id = ${id} and status = any(${from}::text[]) ${tr.guard ?? sql``} ${holderGuard(sql, tr.holder)}
      returning *
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p`
  return row ? toProcess(row) : null
}

/**
 * One transition applied to many processes in one statement (a bulk action's batch, src/processes/bulk.ts):
 * the same guard, version bump and event as transitionProcess, per row. Returns the rows it changed.
 */
export async function transitionProcesses(sql: Sql, ids: number[], tr: Transition): Promise<Process[]> {
  if (ids.length === 0) return []
  const from = sourcesOf(tr.to, tr.from)
  const rows = await sql`
    with p as (
      update processes
         set status = ${tr.to}, message = ${tr.message}, version = ${nextVersion(sql, tr.holder)}, updated_at = now()
             ${tr.set ?? sql``}
       where id = any(${ids}::bigint[]) and status = any(${from}::text[]) ${tr.guard ?? sql``} ${holderGuard(sql, tr.holder)}
      returning *
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p order by id desc`
  return rows.map(toProcess)
}

/**
 * Run now: a pending process due later (a delay, a retry's backoff) becomes due at once. Not a status change:
 * run_at, a new version and an event. Null when the process is not pending with a run_at ahead (or not in
 * these workspaces).
 */
export async function runNow(sql: Sql, id: number, workspaceIds: number[]): Promise<Process | null> {
  const [row] = await sql`
    with p as (
      update processes set run_at = now(), version = version + 1, updated_at = now()
       where id = ${id} and status = 'pending' and run_at > now() and workspace_id = any(${workspaceIds}::bigint[])
      returning *
    ), e as (
      insert into process_events (process_id, status, message) select id, status, 'Run now' from p
    )
    select * from p`
  return row ? toProcess(row) : null
}

/** The transitions users ask for over REST, each guarded by workspace visibility. */
export function userTransition(sql: Sql, action: 'cancel' | 'retry' | 'approve' | 'discard', workspaceIds: number[], note?: string): Transition {
  const guard = sql`and workspace_id = any(${workspaceIds}::bigint[])`
  switch (action) {
    case 'cancel':
      return { ...EDGES.cancel, message: note ?? 'Cancelled', guard, set: sql`, finished_at = now()` }
    case 'retry':
      return {
        ...EDGES.retry,
        message: note ?? 'Retry requested',
        guard,
        set: sql`, progress = 0, error = null, error_stack = null, result_summary = null, started_at = null, finished_at = null,
                 worker_id = null, worker_token_id = null, heartbeat_at = null, run_at = now()`,
      }
    case 'approve':
      return { ...EDGES.approve, message: note ?? 'Approved', guard, set: sql`, finished_at = now()` }
    case 'discard':
      return { ...EDGES.discard, message: note ?? 'Discarded', guard, set: sql`, finished_at = now()` }
  }
}

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

/**
 * Owner guard for worker frames: the lease holder, under the worker token that took the lease (a lease taken
 * before leases were bound to tokens has none), and the current attempt when the frame names one.
 */
export function ownerGuard(sql: Sql, workerId: string, attempt: number | undefined, tokenId?: number) {
  const token = tokenId === undefined ? sql`` : sql`and (worker_token_id is null or worker_token_id = ${tokenId})`
  return attempt === undefined ? sql`and worker_id = ${workerId} ${token}` : sql`and worker_id = ${workerId} and attempts = ${attempt} ${token}`
}

export function workerTransition(
  sql: Sql,
  op: 'start' | 'complete' | 'review' | 'fail',
  workerId: string,
  attempt: number | undefined,
  extra: { result_summary?: unknown; error?: string } = {},
  token?: LeaseToken,
): Transition {
  switch (op) {
    case 'start':
      // A pending process has no lease to fence yet: start opens the next attempt, and its live states count on
      // from the version it commits (live_base, src/processes/live.ts).
      return {
        ...EDGES.claim,
        message: 'Started',
        set: sql`, worker_id = ${workerId}, worker_token_id = ${token?.tokenId ?? null}, attempts = attempts + 1, progress = 0, started_at = now(), heartbeat_at = now(),
                 live_base = version + 1`,
        // Not before its run_at (a delayed process, a retry's backoff): claim would not take it either.
        guard: sql`${scopeGuard(sql, token)} and run_at <= now()`,
      }
    case 'complete':
    case 'review': {
      const summary = extra.result_summary === undefined ? null : JSON.stringify(extra.result_summary)
      return {
        ...(op === 'complete' ? EDGES.complete : EDGES.review),
        message: op === 'complete' ? 'Completed' : 'Waiting for review',
        set: sql`, progress = 100, result_summary = ${summary}::text::jsonb, finished_at = now()`,
        guard: ownerGuard(sql, workerId, attempt, token?.tokenId),
      }
    }
    case 'fail':
      return {
        ...EDGES.fail,
        message: extra.error ?? 'Failed',
        set: sql`, error = ${extra.error ?? 'failed'}, finished_at = now()`,
        guard: ownerGuard(sql, workerId, attempt, token?.tokenId),
      }
  }
}
