// Workers' complete (and review) frames, many in one statement (the group commit of src/workers/finish.ts).
import type { Sql } from '../../db/client'
import { LIVE_VERSION_JUMP } from '../live'
import type { Process } from '../model'
import { toProcess } from './rows'
import { EDGES } from './transitions'

export interface CompleteWrite {
  id: number
  worker_id: string
  /** The fencing attempt the frame names (null: not checked). */
  attempt: number | null
  /** The worker token sending it: it must be the one holding the lease (null: not checked). */
  worker_token_id: number | null
  /** waiting_review instead of completed. */
  review: boolean
  /** Absent: the row's (a live result written behind stays; a complete clears nothing). */
  result_summary?: unknown
  /** From the lease holder's live state (src/processes/live.ts): the version its commit follows, and its live_base. Null: not the holder. */
  version: number | null
  base: number | null
}

/**
 * Many workers' complete (or review) frames in one statement, each with its own owner guard (worker, token,
 * attempt) and status guard, and one event per changed row; returns the rows it changed. A process named twice
 * is changed once: callers send each id once per statement.
 */
export async function completeProcesses(sql: Sql, writes: CompleteWrite[]): Promise<Process[]> {
  if (writes.length === 0) return []
  const rows = await completeStatement(sql, writes)
  return rows.map(toProcess)
}

/** completeProcesses's statement, unawaited (a test EXPLAINs it); `p.id = any(ids)` as in progressStatement. */
export function completeStatement(sql: Sql, writes: CompleteWrite[]) {
  return sql`
    with p as (
      update processes p
         set status = case when x.review then ${EDGES.review.to}::text else ${EDGES.complete.to}::text end,
             message = case when x.review then 'Waiting for review' else 'Completed' end,
             version = case when x.version is not null then greatest(p.version, x.version) + 1
                            else greatest(p.version, p.live_base) + ${LIVE_VERSION_JUMP} end,
             updated_at = now(), progress = 100, result_summary = coalesce(x.result_summary, p.result_summary), finished_at = now()
        from jsonb_to_recordset(${JSON.stringify(writes)}::text::jsonb)
             as x(id bigint, worker_id text, attempt int, worker_token_id bigint, review boolean, result_summary jsonb, version bigint, base bigint)
       where p.id = x.id and p.id = any(${writes.map((w) => w.id)}::bigint[])
         and p.status = any(case when x.review then ${EDGES.review.from}::text[] else ${EDGES.complete.from}::text[] end)
         and p.worker_id = x.worker_id
         and (x.attempt is null or p.attempts = x.attempt)
         and (x.worker_token_id is null or p.worker_token_id is null or p.worker_token_id = x.worker_token_id)
         and (x.base is null or p.live_base = x.base)
      returning p.*
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p`
}
