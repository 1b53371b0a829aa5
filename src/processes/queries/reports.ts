// What a running worker reports without changing the status: live state written behind (progress, message,
// the lease's heartbeat), log lines, and the takeover of a worker's leases at its hello.
import type { Sql } from '../../db/client'
import { LIVE_VERSION_JUMP } from '../live'
import type { Process } from '../model'
import { toProcess } from './rows'
import { holderGuard, type HolderVersion, ownerGuard } from './transitions'

/** A lease holder's newest live state of one process, as the write-behind writes it. */
export interface LiveWrite {
  id: number
  progress: number
  message: string | null
  /** The live state's version and time, so the row agrees with what streams were sent. */
  version: number
  updated_at: string
  /** The lease: a write of a lease that ended or moved (another worker, attempt or live_base) changes nothing. */
  worker_id: string
  attempt: number
  base: number
  /** Renew the lease's heartbeat_at too. */
  beat: boolean
  /** Write result_summary too (an update changed it since the last write): most writes leave the jsonb alone. */
  result?: boolean
  result_summary?: unknown
}

/**
 * Many processes' live states in one statement; returns the ids it wrote (the others' leases ended or moved).
 * heartbeat_at is renewed only where `beat` says: it is indexed (the sweep's index), and a write that leaves it
 * alone can be a HOT update (no index entry written). `p.id = any(ids)` beside the join gives the planner the
 * row count: with the join alone it estimated 100 rows from the record set and merged on worker_id, reading
 * every running row of that worker (one worker id holding 5,000 leases: 3.9 ms a statement, not 0.5 ms).
 */
export async function writeLive(sql: Sql, writes: LiveWrite[]): Promise<number[]> {
  if (writes.length === 0) return []
  const rows = await liveStatement(sql, writes)
  return rows.map((r) => r.id)
}

/**
 * writeLive's statement, unawaited (a test EXPLAINs it). It finds each row by its lease (worker, attempt,
 * live_base, still running) and writes the state only if it is newer than the row's: a log line or a terminal
 * frame of the holder may have committed a newer one while this write was on its way. Such a row is still
 * returned (its lease holds), only not changed.
 */
export function liveStatement(sql: Sql, writes: LiveWrite[]) {
  return sql<{ id: number }[]>`
    update processes p
       set progress = case when x.version > p.version then x.progress else p.progress end,
           message = case when x.version > p.version then x.message else p.message end,
           updated_at = case when x.version > p.version then x.updated_at else p.updated_at end,
           result_summary = case when x.result and x.version > p.version then x.result_summary else p.result_summary end,
           version = greatest(p.version, x.version),
           heartbeat_at = case when x.beat then now() else p.heartbeat_at end
      from jsonb_to_recordset(${JSON.stringify(writes)}::text::jsonb)
           as x(id bigint, progress int, message text, version bigint, updated_at timestamptz, worker_id text, attempt int, base bigint, beat boolean, result boolean, result_summary jsonb)
     where p.id = x.id and p.id = any(${writes.map((w) => w.id)}::bigint[])
       and p.status = 'running' and p.worker_id = x.worker_id and p.attempts = x.attempt and p.live_base = x.base
    returning p.id`
}

/** The running processes leased to a worker id, and the worker token each lease was taken under. */
export async function leasesOf(sql: Sql, workerId: string): Promise<{ id: number; worker_token_id: number | null }[]> {
  return sql<{ id: number; worker_token_id: number | null }[]>`
    select id, worker_token_id from processes where status = 'running' and worker_id = ${workerId} order by id`
}

/**
 * A worker's hello on this instance: these running processes of it become this instance's leases. live_base
 * moves past anything their previous holder (another instance, or this one before a restart) may have shown
 * (src/processes/live.ts); version and content stay as they are, so nothing is published for it.
 */
export async function takeOverLeases(sql: Sql, workerId: string, tokenId: number, ids: number[]): Promise<{ state: Process; base: number }[]> {
  if (ids.length === 0) return []
  const rows = await sql`
    update processes
       set live_base = greatest(version, live_base) + ${LIVE_VERSION_JUMP}, heartbeat_at = now()
     where id = any(${ids}::bigint[]) and status = 'running' and worker_id = ${workerId}
       and (worker_token_id is null or worker_token_id = ${tokenId})
    returning *`
  return rows.map((row) => ({ state: toProcess(row), base: Number(row.live_base) })).sort((a, b) => a.state.id - b.state.id)
}

/**
 * A worker's log line: an event with the status unchanged, and the process's latest message. From the lease
 * holder it carries the live progress and result too (so it supersedes what the write-behind has queued).
 */
export async function appendLog(
  sql: Sql,
  id: number,
  o: {
    workerId: string
    attempt: number | undefined
    message: string
    tokenId?: number
    holder?: HolderVersion & { progress: number; result_summary: unknown }
    maxEvents?: number
  },
): Promise<Process | null> {
  // Log events per process are capped (a worker could append without end); 0 = no cap.
  const capped = o.maxEvents ? sql`and log_events < ${o.maxEvents}` : sql``
  const version = o.holder ? sql`greatest(version, ${o.holder.version}) + 1` : sql`greatest(version, live_base) + ${LIVE_VERSION_JUMP}`
  const [row] = await sql`
    with p as (
      update processes
         set message = ${o.message}, version = ${version}, updated_at = now(), heartbeat_at = now(), log_events = log_events + 1
             ${o.holder ? sql`, progress = ${o.holder.progress}, result_summary = ${o.holder.result_summary === null ? null : JSON.stringify(o.holder.result_summary)}::text::jsonb` : sql``}
       where id = ${id} and status = 'running' ${ownerGuard(sql, o.workerId, o.attempt, o.tokenId)} ${holderGuard(sql, o.holder)} ${capped}
      returning *
    ), e as (
      insert into process_events (process_id, status, message) select id, status, ${o.message} from p
    )
    select * from p`
  return row ? toProcess(row) : null
}

/** Whether a process has reached its cap of log events (appendLog's maxEvents). */
export async function logEventsFull(sql: Sql, id: number, maxEvents: number): Promise<boolean> {
  if (!maxEvents) return false
  const [row] = await sql<{ full: boolean }[]>`select log_events >= ${maxEvents} as full from processes where id = ${id}`
  return row?.full === true
}
