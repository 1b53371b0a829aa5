// A worker's fail and the lease sweep's time-out: failed, or back to pending after a backoff while attempts remain.
import type { Sql } from '../../db/client'
import { LIVE_VERSION_JUMP } from '../live'
import type { Process } from '../model'
import type { Status } from '../states'
import { toProcess } from './rows'
import { EDGES } from './transitions'

/** Retry backoff per type: base × 2^(attempt−1), capped, then jittered to 50–100 % (sql, in ms, for row p). */
export interface Backoff {
  baseMs: number
  maxMs: number
  /** Per type: [baseMs, maxMs]. */
  byType: Record<string, [number, number]>
}

function backoffMs(sql: Sql, b: Backoff) {
  const byType = JSON.stringify(b.byType)
  return sql`(least(coalesce((${byType}::text::jsonb -> p.type ->> 1)::float8, ${b.maxMs}),
                    coalesce((${byType}::text::jsonb -> p.type ->> 0)::float8, ${b.baseMs}) * power(2, greatest(p.attempts - 1, 0)))
              * (0.5 + random() / 2))`
}

/**
 * A worker's fail, or the sweep's time-out: with attempts left (attempts < max_attempts), back to pending
 * with run_at after a backoff (an extension of the state machine: running → pending, "retry 2 of 5 at …");
 * otherwise failed. The worker id stays on the row until the next claim: the lease holder hears that its
 * lease ended (leaseEnded, src/processes/hub-rules.ts), and its late frames are refused by the attempt and the status.
 * `error` and `version` are SQL: per row of the statement (d.error, d.version) or a constant.
 */
function failOrRetrySet(sql: Sql, error: PromiseLike<unknown>, version: PromiseLike<unknown>, progress = sql`p.progress`, stack = sql`null`) {
  return sql`
         status = case when d.retry then ${EDGES.retryLater.to}::text else ${EDGES.fail.to}::text end,
         error = ${error},
         error_stack = ${stack},
         message = case when d.retry
                        then 'retry ' || (p.attempts + 1) || ' of ' || p.max_attempts || ' at '
                             || to_char(d.at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || ': ' || ${error}
                        else ${error} end,
         progress = ${progress},
         run_at = case when d.retry then d.at else p.run_at end,
         finished_at = case when d.retry then null else now() end,
         heartbeat_at = case when d.retry then null else p.heartbeat_at end,
         updated_at = now(), version = ${version}`
}

/** The statuses a fail (or a time-out) may leave: those both its outcomes, failed and the retry's pending, allow. */
const FAIL_FROM: readonly Status[] = EDGES.fail.from.filter((s) => EDGES.retryLater.from.includes(s))

export interface FailWrite {
  id: number
  worker_id: string
  /** The fencing attempt the frame names (null: not checked). */
  attempt: number | null
  /** The worker token sending it: it must be the one holding the lease (null: not checked). */
  worker_token_id: number | null
  error: string
  /** The worker's stack for this error (storableStack), or null. */
  stack?: string | null
  /**
   * From the lease holder's live state (src/processes/live.ts): the version its commit follows, its live_base,
   * and the progress it carries (the last accepted, which the fail keeps). Null: not the holder.
   */
  version: number | null
  base: number | null
  progress: number | null
  /** The holder's live result_summary (update frames), written with the fail when `result`. */
  result?: boolean
  result_summary?: unknown
}

/**
 * Many workers' fail frames in one statement (the group commit of src/workers/finish.ts), each with its own
 * owner guard and status guard and one event per changed row; returns the rows it changed. Each id once.
 */
export async function failProcesses(sql: Sql, writes: FailWrite[], backoff: Backoff): Promise<Process[]> {
  if (writes.length === 0) return []
  const rows = await sql`
    with x as (
      select * from jsonb_to_recordset(${JSON.stringify(writes)}::text::jsonb)
        as x(id bigint, worker_id text, attempt int, worker_token_id bigint, error text, stack text, version bigint, base bigint, progress int,
              result boolean, result_summary jsonb)
    ), d as (
      select p.id, x.error, x.stack, x.progress, x.result, x.result_summary, p.attempts < p.max_attempts as retry,
             now() + ${backoffMs(sql, backoff)} * interval '1 millisecond' as at,
             case when x.version is not null then greatest(p.version, x.version) + 1
                  else greatest(p.version, p.live_base) + ${LIVE_VERSION_JUMP} end as version
        from processes p join x on x.id = p.id
       where p.id = any(${writes.map((w) => w.id)}::bigint[])
         and p.status = any(${FAIL_FROM}::text[])
         and p.worker_id = x.worker_id
         and (x.attempt is null or p.attempts = x.attempt)
         and (x.worker_token_id is null or p.worker_token_id is null or p.worker_token_id = x.worker_token_id)
         and (x.base is null or p.live_base = x.base)
    ), p as (
      update processes p set ${failOrRetrySet(sql, sql`d.error`, sql`d.version`, sql`coalesce(d.progress, p.progress)`, sql`d.stack`)},
             result_summary = case when d.result then d.result_summary else p.result_summary end
        from d
       where p.id = d.id and p.status = any(${FAIL_FROM}::text[])
      returning p.*
    ), e as (
      insert into process_events (process_id, status, message, stack) select id, status, message, error_stack from p
    )
    select * from p`
  return rows.map(toProcess)
}

/**
 * Every running process whose lease went silent: retried when attempts remain (as a worker's fail), else
 * failed with "timed out". Safe on every instance at once (skip locked + the status guard).
 */
export async function sweepExpired(sql: Sql, timeoutMs: number, backoff: Backoff = { baseMs: 1000, maxMs: 3_600_000, byType: {} }): Promise<Process[]> {
  const rows = await sql`
    with d as (
      select p.id, p.attempts < p.max_attempts as retry, now() + ${backoffMs(sql, backoff)} * interval '1 millisecond' as at
        from processes p
       -- 'running': FAIL_FROM, as a literal for processes_running_idx (see EDGES).
       where p.status = 'running' and p.heartbeat_at < now() - ${timeoutMs} * interval '1 millisecond'
       order by p.heartbeat_at
       limit 500
       for update skip locked
    ), p as (
      update processes p set ${failOrRetrySet(sql, sql`'timed out'`, sql`greatest(p.version, p.live_base) + ${LIVE_VERSION_JUMP}`)}
        from d
       where p.id = d.id and p.status = any(${FAIL_FROM}::text[])
      returning p.*
    ), e as (
      insert into process_events (process_id, status, message, stack) select id, status, message, error_stack from p
    )
    select * from p`
  return rows.map(toProcess)
}
