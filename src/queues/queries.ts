// Runtime SQL for queues: pausing a type (everywhere or in one workspace), per-type rate windows, and the
// per-type figures of GET /queues. The claim statement (src/processes/queries.ts claimStatement) takes both
// rules from here as one fragment (queueRules), and its transaction the pause barrier (claimBarrier).
import type { Sql } from '../db/client'

/** paused_queues.workspace_id of a pause that holds in every workspace (no workspace has id 0). */
export const ALL_WORKSPACES = 0

/**
 * Pausing takes this lock exclusively; every claim transaction takes it shared before its claim statement
 * (claimBarrier). A pause therefore waits for the claims already running, and a claim that starts while the
 * pause commits waits for it and then reads paused_queues in a statement that sees it: once the pause has
 * answered, no instance hands out the type, not even a claim that was in flight.
 */
export const PAUSE_LOCK_KEY = 7_311_000_024

/** A column for the claim's settings statement (claimPlanSettings): the shared side of PAUSE_LOCK_KEY. */
export function claimBarrier(sql: Sql) {
  return sql`, pg_advisory_xact_lock_shared(${PAUSE_LOCK_KEY})`
}

export interface Pause {
  type: string
  /** null: every workspace. */
  workspace_id: number | null
  paused_at: string
}

const toPause = (row: { type: string; workspace_id: number; paused_at: string }): Pause => ({
  type: row.type,
  workspace_id: Number(row.workspace_id) === ALL_WORKSPACES ? null : Number(row.workspace_id),
  paused_at: row.paused_at,
})

/** Pauses a type in one workspace (or every one: null); repeating it keeps the first pause. */
export async function pauseQueue(sql: Sql, type: string, workspaceId: number | null, by: number | null): Promise<Pause> {
  await sql`select pg_advisory_xact_lock(${PAUSE_LOCK_KEY})`
  const [row] = await sql<{ type: string; workspace_id: number; paused_at: string }[]>`
    insert into paused_queues (type, workspace_id, paused_by) values (${type}, ${workspaceId ?? ALL_WORKSPACES}, ${by})
    on conflict (type, workspace_id) do update set type = excluded.type
    returning type, workspace_id, paused_at`
  return toPause(row!)
}

/** Resumes a type in one workspace (or everywhere: null); returns whether it was paused there. */
export async function resumeQueue(sql: Sql, type: string, workspaceId: number | null): Promise<boolean> {
  const rows = await sql`delete from paused_queues where type = ${type} and workspace_id = ${workspaceId ?? ALL_WORKSPACES} returning type`
  return rows.length > 0
}

/** The pauses that hold in a workspace: its own and those of every workspace. */
export async function listPauses(sql: Sql, workspaceId: number): Promise<Pause[]> {
  const rows = await sql<{ type: string; workspace_id: number; paused_at: string }[]>`
    select type, workspace_id, paused_at from paused_queues where workspace_id in (${ALL_WORKSPACES}, ${workspaceId}) order by type, workspace_id`
  return rows.map(toPause)
}

/** Pending processes of a type that a resume makes claimable (over every workspace when null): how many claims to wake. */
export async function countPending(sql: Sql, type: string, workspaceId: number | null): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select count(*)::int as n from (
      select 1 from processes where status = 'pending' and type = ${type} ${workspaceId === null ? sql`` : sql`and workspace_id = ${workspaceId}`} limit 1000
    ) x`
  return row?.n ?? 0
}

// ---------------------------------------------------------------------------------------------
// Rate limits: TYPE_DEFAULTS.<type>.rate = {max, per_ms}, shared by every instance through type_rate_windows.

export interface RateLimit {
  max: number
  per_ms: number
}
export type RateLimits = Record<string, RateLimit>

/** What one claim may take of each rate-limited type, in the window its transaction started in. */
export interface RateBudgets {
  types: string[]
  budgets: number[]
  /** Each type's window (ISO), as computed from the transaction's now(): what spendRate records against. */
  starts: string[]
}

/** The start of now()'s window of `per_ms` (SQL, for one row of l(per_ms)). */
const windowStart = (sql: Sql) => sql`to_timestamp(floor(extract(epoch from now()) * 1000 / l.per_ms) * l.per_ms / 1000)`

/**
 * Locks the rate windows of the limited types this claim could take (all of them when `types` is null) and
 * returns what is left in each: max − used in the current window, max in a new one, 0 when another claim has
 * already opened a later window than this transaction's now() (its processes would start in a window that is
 * spent). The rows stay locked until the claim's transaction ends: racing claims on every instance wait for
 * each other here, in type order (no deadlock), as capped claims do for the cap lock. Null when none applies.
 */
export async function takeRateBudgets(sql: Sql, limits: RateLimits, types: string[] | null): Promise<RateBudgets | null> {
  const names = Object.keys(limits)
    .filter((t) => types === null || types.includes(t))
    .sort()
  if (names.length === 0) return null
  const maxes = names.map((t) => limits[t]!.max)
  const pers = names.map((t) => limits[t]!.per_ms)
  const read = () => sql<{ type: string; start: string; budget: number }[]>`
    select r.type, ${windowStart(sql)} as start,
           case when r.window_start = ${windowStart(sql)} then greatest(l.max - r.used, 0)
                when r.window_start < ${windowStart(sql)} then l.max
                else 0 end as budget
      from type_rate_windows r
      join unnest(${names}::text[], ${maxes}::int[], ${pers}::float8[]) as l(type, max, per_ms) on l.type = r.type
     order by r.type
       for update of r`
  let rows = await read()
  if (rows.length < names.length) {
    // The first claim of a type ever: its row, then the read again (an insert's rows are not visible to the
    // statement that makes them).
    await sql`insert into type_rate_windows (type, window_start, used) select unnest(${names}::text[]), '-infinity', 0 on conflict (type) do nothing`
    rows = await read()
  }
  return { types: rows.map((r) => r.type), budgets: rows.map((r) => r.budget), starts: rows.map((r) => r.start) }
}

/** Records what a claim took of each rate-limited type, in the same transaction (its rows are still locked). */
export async function spendRate(sql: Sql, budgets: RateBudgets, claimedTypes: readonly string[]) {
  const counts = budgets.types.map((t) => claimedTypes.filter((c) => c === t).length)
  if (counts.every((n) => n === 0)) return
  await sql`
    update type_rate_windows r
       set used = case when r.window_start = x.start then r.used + x.n else x.n end, window_start = x.start
      from unnest(${budgets.types}::text[], ${budgets.starts}::timestamptz[], ${counts}::int[]) as x(type, start, n)
     where r.type = x.type and x.n > 0`
}

/**
 * The queue rules in the claim statement (src/processes/queries.ts claimStatement), in one fragment: the body
 * of a CTE over its `candidates` (id, workspace_id, type, priority, run_at). A candidate whose type is paused,
 * everywhere or in its workspace, is dropped (one probe of paused_queues' primary key each); of each
 * rate-limited type only its best `budget` candidates go on to be ranked (budgets from takeRateBudgets).
 */
export function queueRules(sql: Sql, budgets: RateBudgets | null | undefined) {
  const unpaused = sql`
      select * from candidates c
       where not exists (select 1 from paused_queues q where q.type = c.type and q.workspace_id in (${ALL_WORKSPACES}, c.workspace_id))`
  if (!budgets) return unpaused
  return sql`
      select c.id, c.workspace_id, c.type, c.priority, c.run_at
        from (select c.*, row_number() over (partition by c.type order by c.priority desc, c.run_at, c.id) as nth_of_type from (${unpaused}) c) c
        left join unnest(${budgets.types}::text[], ${budgets.budgets}::int[]) as rb(type, budget) on rb.type = c.type
       where rb.budget is null or c.nth_of_type <= rb.budget`
}

// ---------------------------------------------------------------------------------------------
// GET /queues.

export interface QueueCounts {
  type: string
  pending: number
  /** Pending and due (run_at passed): what a claim could take now, pause and rate aside. */
  due: number
  running: number
  /** Seconds since the oldest due pending process came due; null when none is due. */
  oldest_pending_age_s: number | null
  /** Processes of the type that finished (completed, failed, cancelled) in the last minute. */
  finished_last_minute: number
}

/** Per type, the workspace's pending, running and recently finished processes (types with none are absent). */
export async function queueCounts(sql: Sql, workspaceId: number): Promise<QueueCounts[]> {
  const [pending, running, finished] = await Promise.all([
    // processes_claim_idx holds exactly these rows, by (workspace_id, type, …).
    sql<{ type: string; pending: number; due: number; age: number | null }[]>`
      select type, count(*)::int as pending, count(*) filter (where run_at <= now())::int as due,
             extract(epoch from now() - min(run_at) filter (where run_at <= now()))::float8 as age
        from processes where workspace_id = ${workspaceId} and status = 'pending'
       group by type`,
    sql<{ type: string; n: number }[]>`
      select type, count(*)::int as n from processes where workspace_id = ${workspaceId} and status = 'running' group by type`,
    // processes_finished_idx: the last minute's finishes of every workspace, filtered to this one.
    sql<{ type: string; n: number }[]>`
      select type, count(*)::int as n from processes
       where status in ('completed', 'failed', 'cancelled') and finished_at > now() - interval '1 minute' and workspace_id = ${workspaceId}
       group by type`,
  ])
  const byType = new Map<string, QueueCounts>()
  const entry = (type: string) => {
    let q = byType.get(type)
    if (!q) byType.set(type, (q = { type, pending: 0, due: 0, running: 0, oldest_pending_age_s: null, finished_last_minute: 0 }))
    return q
  }
  for (const p of pending)
    Object.assign(entry(p.type), { pending: p.pending, due: p.due, oldest_pending_age_s: p.age === null ? null : Math.round(p.age * 1000) / 1000 })
  for (const r of running) entry(r.type).running = r.n
  for (const f of finished) entry(f.type).finished_last_minute = f.n
  return [...byType.values()]
}
