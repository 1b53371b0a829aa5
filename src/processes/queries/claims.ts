// Claims: pending → running for a worker, in queue order and fair turns, within caps; and when the next
// delayed process comes due.
import type { Sql } from '../../db/client'
import { claimBarrier, queueRules, type RateBudgets, type RateLimits, spendRate, takeRateBudgets } from '../../queues/queries'
import type { Process } from '../model'
import { toProcess } from './rows'
import { EDGES, type LeaseToken } from './transitions'

export interface ClaimOptions {
  workerId: string
  /** Only these types; every type when null. */
  types: string[] | null
  /** At most this many processes (1–100). */
  max: number
  /**
   * Fair turns across workspaces: how recently this instance served each workspace (a higher number is more
   * recent; a workspace not listed has never been served and goes first). See src/workers/queue.ts.
   */
  served?: { workspaceIds: number[]; turns: number[] }
  /** Concurrency caps; the caller holds the cap lock (capLock) in the same transaction. */
  caps?: { types: Record<string, number>; workspace: number }
  /** The worker token the lease is taken under (recorded on the row), and its scope. */
  token?: LeaseToken
  /** Per-type rate limits (TYPE_DEFAULTS.<type>.rate), shared by every instance (src/queues/queries.ts). */
  rate?: RateLimits
  /** What this claim may take of each rate-limited type (set by claimNext from `rate`). */
  budgets?: RateBudgets | null
}

/** Serialises capped claims, so two claims cannot both see room for the last slot under a cap. */
export const CAP_LOCK_KEY = 7_311_000_011

/**
 * Claims up to `max` claimable processes (pending, run_at due), best first. The index processes_claim_idx
 * holds pending rows only, by (workspace, type, priority desc, run_at, id): the lanes with pending work are
 * found by a skip scan over it (one probe per lane), and each lane gives its best `max` rows, locked with
 * skip locked — so the cost grows with the number of lanes, never with finished history or a backlog's
 * size. The lanes' rows are then taken in turns: every workspace's best first (the one served least
 * recently first), then every workspace's second, and so on; within a workspace, priority desc, run_at, id.
 */
export async function claimNext(sql: Sql, o: ClaimOptions): Promise<Process[]> {
  await claimPlanSettings(sql)
  const budgets = o.rate ? await takeRateBudgets(sql, o.rate, o.types) : null
  const rows = await claimStatement(sql, { ...o, budgets })
  if (budgets)
    await spendRate(
      sql,
      budgets,
      rows.map((r) => r.type),
    )
  return rows.map(toProcess)
}

/**
 * The claim must walk processes_claim_idx whatever the statistics say. Right after a bulk create, before
 * analyze has run (autovacuum's comes once per naptime), the planner took 50,000 new pending rows for one and
 * read them all through processes_pending_run_at_idx and a sort: 655 ms a claim instead of 0.8 ms. Without
 * sorts to choose, the index's own order is the plan; and that index can no longer serve a claim at all
 * (sql/008_claim_plan.sql). Local to the caller's transaction, as every claim is
 * (outside one it does nothing).
 */
export function claimPlanSettings(sql: Sql) {
  // jit off with it: a disabled sort still costs 10^10 in the planner's sums, far past jit_above_cost, and
  // compiling the statement took ~370 ms.
  // claimBarrier: a pause waits for claims in flight, and claims after it see it (src/queues/queries.ts).
  return sql`select set_config('enable_sort', 'off', true), set_config('jit', 'off', true)${claimBarrier(sql)}`
}

/** claimNext's statement, unawaited: a test EXPLAINs it (tests/processes/queue.test.ts). */
export function claimStatement(sql: Sql, o: ClaimOptions) {
  const served = o.served ?? { workspaceIds: [], turns: [] }
  const caps = o.caps && (Object.keys(o.caps.types).length > 0 || o.caps.workspace > 0) ? o.caps : null
  const cappedTypes = caps ? Object.keys(caps.types) : []
  const typeCaps = caps ? cappedTypes.map((t) => caps.types[t]!) : []
  return sql`
    with recursive ${lanesOf(sql, o)}, candidates as (
      select c.*
        from lanes l cross join lateral (
          select id, workspace_id, type, priority, run_at from processes p
           where p.status = 'pending' and p.workspace_id = l.workspace_id and p.type = l.type and p.run_at <= now()
           order by p.priority desc, p.run_at, p.id
           limit ${o.max}
           for update skip locked
        ) c
       where true ${o.types ? sql`and l.type = any(${o.types}::text[])` : sql``}
             ${o.token?.workspaceIds ? sql`and l.workspace_id = any(${o.token.workspaceIds}::bigint[])` : sql``}
             ${o.token?.types ? sql`and l.type = any(${o.token.types}::text[])` : sql``}
    ), allowed as (
      ${queueRules(sql, o.budgets)}
    ), ranked as (
      select c.id, c.workspace_id, c.type,
             row_number() over (order by c.turn, coalesce(s.turn, 0), c.priority desc, c.run_at, c.id) as rank
        from (select *, row_number() over (partition by workspace_id order by priority desc, run_at, id) as turn from allowed) c
        left join unnest(${served.workspaceIds}::bigint[], ${served.turns}::bigint[]) as s(workspace_id, turn) using (workspace_id)
    ), next as (
      ${
        caps
          ? sql`
      select r.id, r.rank from (
        select r.*,
               row_number() over (partition by r.type order by r.rank) as nth_of_type,
               row_number() over (partition by r.workspace_id order by r.rank) as nth_of_workspace
          from ranked r
      ) r
      left join unnest(${cappedTypes}::text[], ${typeCaps}::int[]) as tc(type, cap) using (type)
      left join lateral (
        select count(*) as n from processes q where q.status = 'running' and q.type = r.type and tc.cap is not null
      ) tr on true
      left join lateral (
        select count(*) as n from processes q where q.status = 'running' and q.workspace_id = r.workspace_id and ${caps.workspace} > 0
      ) wr on true
      where (tc.cap is null or r.nth_of_type <= tc.cap - tr.n)
        and (${caps.workspace} = 0 or r.nth_of_workspace <= ${caps.workspace} - wr.n)
      order by r.rank
      limit ${o.max}`
          : sql`
      select id, rank from ranked order by rank limit ${o.max}`
      }
    ), p as (
      update processes p
         set status = ${EDGES.claim.to}, worker_id = ${o.workerId}, worker_token_id = ${o.token?.tokenId ?? null},
             attempts = attempts + 1, progress = 0,
             message = 'Started', started_at = now(), heartbeat_at = now(), updated_at = now(),
             finished_at = null, version = version + 1, live_base = version + 1
       -- By primary key: an array, not a join, and the status guard as 'is true', which no partial index
       -- on pending rows can be proven from (with stale statistics the planner chose one and read every
       -- pending row). The rows are pending and locked by this statement's own 'for update' anyway.
       where p.id = any(array(select id from next)) and (p.status = any(${EDGES.claim.from}::text[])) is true
      returning p.*
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select p.*, next.rank from p join next using (id) order by next.rank`
}

/** What a claim may take: the claim's types within its token's, and its token's workspaces (null: any). */
export function claimScope(o: Pick<ClaimOptions, 'types' | 'token'>): { types: string[] | null; workspaceIds: number[] | null } {
  const asked = o.types
  const allowed = o.token?.types ?? null
  const types = asked && allowed ? asked.filter((t) => allowed.includes(t)) : (asked ?? allowed)
  return { types, workspaceIds: o.token?.workspaceIds ?? null }
}

/**
 * The `lanes` CTE: the (workspace, type) pairs the claim looks into, only those it may take. A
 * walk of every pending lane cost a claim by a worker scoped to workspace B 107 ms once workspace A had 20,000
 * pending types. So: with both its workspaces and its types known, the lanes are their pairs (one index probe
 * each, empty or not); with only workspaces, a skip scan over the types of those workspaces; with only types,
 * a skip scan over the workspaces with pending work (one probe each, however many types they hold), paired
 * with the types; with neither (an unscoped worker claiming any type), the walk of every pending lane.
 * 'pending' is EDGES.claim.from, as a literal for processes_claim_idx (see EDGES).
 */
function lanesOf(sql: Sql, o: ClaimOptions) {
  const { types, workspaceIds } = claimScope(o)
  if (types && workspaceIds)
    return sql`lanes as (
      select w.workspace_id, t.type from unnest(${workspaceIds}::bigint[]) as w(workspace_id) cross join unnest(${types}::text[]) as t(type)
    )`
  if (workspaceIds)
    return sql`lanes as (
      (select w.workspace_id, f.type
         from unnest(${workspaceIds}::bigint[]) as w(workspace_id) cross join lateral (
           select type from processes where status = 'pending' and workspace_id = w.workspace_id order by type limit 1
         ) f)
      union all
      select l.workspace_id, n.type
        from lanes l cross join lateral (
          select type from processes
           where status = 'pending' and workspace_id = l.workspace_id and type > l.type
           order by type
           limit 1
        ) n
    )`
  if (types)
    return sql`spaces as (
      (select workspace_id from processes where status = 'pending' order by workspace_id limit 1)
      union all
      select n.workspace_id
        from spaces s cross join lateral (
          select workspace_id from processes
           where status = 'pending' and workspace_id > s.workspace_id
           order by workspace_id
           limit 1
        ) n
    ), lanes as (
      select s.workspace_id, t.type from spaces s cross join unnest(${types}::text[]) as t(type)
    )`
  return sql`lanes as (
      (select workspace_id, type from processes where status = 'pending' order by workspace_id, type limit 1)
      union all
      select n.workspace_id, n.type
        from lanes l cross join lateral (
          select workspace_id, type from processes
           where status = 'pending' and (workspace_id, type) > (l.workspace_id, l.type)
           order by workspace_id, type
           limit 1
        ) n
    )`
}

/** Takes the cap lock for the rest of the transaction (see CAP_LOCK_KEY). */
export async function capLock(sql: Sql) {
  await sql`select pg_advisory_xact_lock(${CAP_LOCK_KEY})`
}

/**
 * When the next pending process of these types comes due, if any is waiting for its run_at. One that came
 * due in the last second counts too: a claim that looked a moment before it was due (timers fire up to a
 * millisecond early) looks again at once instead of sleeping out its wait.
 */
export async function nextRunAt(sql: Sql, types: string[] | null): Promise<number | null> {
  // `run_at > '-infinity'`: the predicate of processes_pending_run_at_idx, which only this and the oldest
  // pending age state (sql/008_claim_plan.sql).
  const [row] = await sql<{ at: string | null }[]>`
    select min(run_at) as at from processes
     where status = 'pending' and run_at > '-infinity' and run_at > now() - interval '1 second' ${types ? sql`and type = any(${types}::text[])` : sql``}`
  return row?.at ? Date.parse(row.at) : null
}
