// Runtime SQL for processes: verb-first functions taking the handle first, so each also runs inside a transaction.
// The transition functions here are the only code that writes `processes.status`.
import type { Row, Sql } from '../db/client'
import { claimBarrier, queueRules, type RateBudgets, type RateLimits, spendRate, takeRateBudgets } from '../queues/queries'
import type { Process, ProcessSummary } from './model'
import { edge, NOT_FINAL, sourcesOf, type Status } from './states'

/**
 * A row as the API shows it, in the API's one key order (the same as sql/003_queue.sql's process_json, so
 * POST, GET and the streams send byte-identical JSON). Not listed, as not part of the process: heartbeat_at
 * (lease bookkeeping: it changes without a new version) and worker_token_id (which token holds the lease).
 */
export function toProcess(row: Row): Process {
  return {
    id: row.id,
    workspace_id: row.workspace_id,
    type: row.type,
    status: row.status,
    progress: row.progress,
    message: row.message,
    error: row.error,
    attempts: row.attempts,
    version: row.version,
    worker_id: row.worker_id,
    created_by: row.created_by,
    created_at: row.created_at,
    updated_at: row.updated_at,
    started_at: row.started_at,
    finished_at: row.finished_at,
    priority: row.priority,
    run_at: row.run_at,
    max_attempts: row.max_attempts,
    metadata: row.metadata,
    result_summary: row.result_summary,
  }
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
           created_by, created_at, updated_at, started_at, finished_at, priority, run_at, max_attempts
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

/** A page of the processes a workspace stream starts with: everything not final (states.ts) that matches, by id. */
export async function listActive(sql: Sql, f: ActiveFilter): Promise<Process[]> {
  const rows = await sql`
    select * from processes
     where workspace_id = ${f.workspaceId}
       and id > ${f.after}
       and status = any(${NOT_FINAL}::text[])
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

/** A new process's queue fields, resolved (defaults applied): run_at as a time, or a delay from the database's now(). */
export interface NewProcess {
  type: string
  metadata: object
  priority: number
  max_attempts: number
  run_at: string | null
  delay_ms: number | null
  /** While a process with this key is pending or running in the workspace, none other is made (src/processes/unique.ts). */
  unique_key?: string | null
}

export async function insertProcess(
  sql: Sql,
  p: { workspaceId: number; createdBy: number | null; type: string; metadata: object } & Partial<NewProcess>,
): Promise<Process> {
  const item: NewProcess = { priority: 0, max_attempts: 1, run_at: null, delay_ms: null, ...p }
  const [process] = await insertProcesses(sql, { workspaceId: p.workspaceId, createdBy: p.createdBy, items: [item] })
  return process!
}

/** The partial unique index of sql/010_queues.sql, as an insert's conflict target (its predicate, word for word). */
function uniqueKeyConflict(sql: Sql) {
  return sql`on conflict (workspace_id, unique_key) where unique_key is not null and status in ('pending', 'running') do nothing`
}

/**
 * Many processes in one statement, with their events; returned in the order given (ids ascend with it). An
 * item whose unique_key is held by a pending or running process of the workspace (or by an earlier item) is
 * not inserted and not returned: src/processes/unique.ts finds what holds it.
 */
export async function insertProcesses(sql: Sql, o: { workspaceId: number; createdBy: number | null; items: NewProcess[] }): Promise<Process[]> {
  return (await insertProcessRows(sql, o)).map(toProcess)
}

/** insertProcesses's rows as stored (with unique_key, which the API's process does not show). */
export async function insertProcessRows(sql: Sql, o: { workspaceId: number; createdBy: number | null; items: NewProcess[] }): Promise<Row[]> {
  const items = o.items.map(({ type, metadata, priority, max_attempts, run_at, delay_ms, unique_key }) => ({
    type,
    metadata,
    priority,
    max_attempts,
    run_at,
    delay_ms,
    unique_key: unique_key ?? null,
  }))
  const keyed = items.some((i) => i.unique_key !== null)
  return sql`
    with x as (
      select * from rows from (
               jsonb_to_recordset(${JSON.stringify(items)}::text::jsonb)
               as (type text, metadata jsonb, priority int, max_attempts int, run_at timestamptz, delay_ms bigint, unique_key text)
             ) with ordinality as x(type, metadata, priority, max_attempts, run_at, delay_ms, unique_key, n)
    ), p as (
      insert into processes (workspace_id, type, metadata, created_by, message, priority, max_attempts, run_at, unique_key)
      select ${o.workspaceId}, x.type, x.metadata, ${o.createdBy}, 'Queued', x.priority, x.max_attempts,
             coalesce(x.run_at, now() + coalesce(x.delay_ms, 0) * interval '1 millisecond'), x.unique_key
        from x
       order by x.n
      ${keyed ? uniqueKeyConflict(sql) : sql``}
      returning *
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p order by id`
}

// ---------------------------------------------------------------------------------------------
// Transitions. Each is one statement: the guarded update (status = any(allowed) — a racing
// transition finds no row and loses cleanly), the version bump, and the event, together.

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
      return { ...EDGES.cancel, message: note ?? 'Cancelled', guard, set: sql`, finished_at = now()` }
    case 'retry':
      return {
        ...EDGES.retry,
        message: note ?? 'Retry requested',
        guard,
        set: sql`, progress = 0, error = null, result_summary = null, started_at = null, finished_at = null,
                 worker_id = null, worker_token_id = null, heartbeat_at = null, run_at = now()`,
      }
    case 'approve':
      return { ...EDGES.approve, message: note ?? 'Approved', guard, set: sql`, finished_at = now()` }
    case 'discard':
      return { ...EDGES.discard, message: note ?? 'Discarded', guard, set: sql`, finished_at = now()` }
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
    with recursive lanes as (
      -- 'pending': EDGES.claim.from, as a literal for processes_claim_idx (see EDGES).
      (select workspace_id, type from processes where status = 'pending' order by workspace_id, type limit 1)
      union all
      select n.workspace_id, n.type
        from lanes l cross join lateral (
          select workspace_id, type from processes
           where status = 'pending' and (workspace_id, type) > (l.workspace_id, l.type)
           order by workspace_id, type
           limit 1
        ) n
    ), candidates as (
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
             finished_at = null, version = version + 1
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
 */
function failOrRetrySet(sql: Sql, error: string) {
  return sql`
         status = case when d.retry then ${EDGES.retryLater.to}::text else ${EDGES.fail.to}::text end,
         error = ${error},
         message = case when d.retry
                        then 'retry ' || (p.attempts + 1) || ' of ' || p.max_attempts || ' at '
                             || to_char(d.at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || ': ' || ${error}
                        else ${error} end,
         run_at = case when d.retry then d.at else p.run_at end,
         finished_at = case when d.retry then null else now() end,
         heartbeat_at = case when d.retry then null else p.heartbeat_at end,
         updated_at = now(), version = p.version + 1`
}

/** The statuses a fail (or a time-out) may leave: those both its outcomes, failed and the retry's pending, allow. */
const FAIL_FROM: readonly Status[] = EDGES.fail.from.filter((s) => EDGES.retryLater.from.includes(s))

export async function failProcess(
  sql: Sql,
  id: number,
  o: { workerId: string; attempt: number | undefined; error: string; backoff: Backoff; tokenId?: number },
): Promise<Process | null> {
  const [row] = await sql`
    with d as (
      select p.id, p.attempts < p.max_attempts as retry, now() + ${backoffMs(sql, o.backoff)} * interval '1 millisecond' as at
        from processes p where p.id = ${id}
    ), p as (
      update processes p set ${failOrRetrySet(sql, o.error)}
        from d
       where p.id = d.id and p.status = any(${FAIL_FROM}::text[]) ${ownerGuard(sql, o.workerId, o.attempt, o.tokenId)}
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
      // A pending process has no lease to fence yet: start opens the next attempt.
      return {
        ...EDGES.claim,
        message: 'Started',
        set: sql`, worker_id = ${workerId}, worker_token_id = ${token?.tokenId ?? null}, attempts = attempts + 1, progress = 0, started_at = now(), heartbeat_at = now()`,
        guard: scopeGuard(sql, token),
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

export interface ProgressWrite {
  id: number
  progress: number
  message: string | null
  worker_id: string
  attempt: number | null
  /** The worker token sending it: it must be the one holding the lease (null: not checked). */
  worker_token_id?: number | null
}

/**
 * One statement for many processes' coalesced progress; returns the rows it changed. The lease's heartbeat_at
 * is renewed only when older than heartbeatSlackMs: heartbeat_at is indexed (the sweep's index), so a write
 * that leaves it alone can be a HOT update (no index entry written), which most progress writes are.
 */
export async function writeProgress(sql: Sql, writes: ProgressWrite[], heartbeatSlackMs = 0): Promise<Process[]> {
  const rows = await progressStatement(sql, writes, heartbeatSlackMs)
  return rows.map(toProcess)
}

/**
 * writeProgress's statement, unawaited (a test EXPLAINs it). `p.id = any(ids)` beside the join gives the
 * planner the row count: with the join alone it estimated 100 rows from the record set and merged on
 * worker_id, reading every running row of that worker (one worker id holding 5,000 leases: 3.9 ms a statement
 * instead of 0.5 ms).
 */
export function progressStatement(sql: Sql, writes: ProgressWrite[], heartbeatSlackMs = 0) {
  return sql`
    update processes p
       set progress = x.progress, message = coalesce(x.message, p.message), version = p.version + 1,
           updated_at = now(),
           heartbeat_at = case when p.heartbeat_at > now() - ${heartbeatSlackMs} * interval '1 millisecond' then p.heartbeat_at else now() end
      from jsonb_to_recordset(${JSON.stringify(writes)}::text::jsonb)
           as x(id bigint, progress int, message text, worker_id text, attempt int, worker_token_id bigint)
     where p.id = x.id and p.id = any(${writes.map((w) => w.id)}::bigint[])
       and p.status = 'running' and p.worker_id = x.worker_id
       and (x.attempt is null or p.attempts = x.attempt)
       and (x.worker_token_id is null or p.worker_token_id is null or p.worker_token_id = x.worker_token_id)
    returning p.*`
}

export async function touchHeartbeat(sql: Sql, id: number, workerId: string, attempt: number | undefined, tokenId?: number): Promise<boolean> {
  const rows = await sql`
    update processes set heartbeat_at = now()
     where id = ${id} and status = 'running' ${ownerGuard(sql, workerId, attempt, tokenId)}
    returning id`
  return rows.length > 0
}

/** A worker's log line: an event with the status unchanged, and the process's latest message. */
export async function appendLog(
  sql: Sql,
  id: number,
  workerId: string,
  attempt: number | undefined,
  message: string,
  tokenId?: number,
): Promise<Process | null> {
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
      update processes p set ${failOrRetrySet(sql, 'timed out')}
        from d
       where p.id = d.id and p.status = any(${FAIL_FROM}::text[])
      returning p.*
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p`
  return rows.map(toProcess)
}

export interface CompleteWrite {
  id: number
  worker_id: string
  /** The fencing attempt the frame names (null: not checked). */
  attempt: number | null
  /** The worker token sending it: it must be the one holding the lease (null: not checked). */
  worker_token_id: number | null
  /** waiting_review instead of completed. */
  review: boolean
  /** Absent: null. */
  result_summary?: unknown
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
             version = p.version + 1, updated_at = now(),
             progress = 100, result_summary = x.result_summary, finished_at = now()
        from jsonb_to_recordset(${JSON.stringify(writes)}::text::jsonb)
             as x(id bigint, worker_id text, attempt int, worker_token_id bigint, review boolean, result_summary jsonb)
       where p.id = x.id and p.id = any(${writes.map((w) => w.id)}::bigint[])
         and p.status = any(case when x.review then ${EDGES.review.from}::text[] else ${EDGES.complete.from}::text[] end)
         and p.worker_id = x.worker_id
         and (x.attempt is null or p.attempts = x.attempt)
         and (x.worker_token_id is null or p.worker_token_id is null or p.worker_token_id = x.worker_token_id)
      returning p.*
    ), e as (
      insert into process_events (process_id, status, message) select id, status, message from p
    )
    select * from p`
}
