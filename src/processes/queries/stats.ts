// The figures GET /processes/stats and /metrics show, computed in SQL from the processes themselves
// (created_at, started_at, finished_at).
import type { Sql } from '../../db/client'
import type { DepthRow } from '../../ops/metrics'
import { viewCondition } from './filters'
import { STATUSES } from '../states'

/** Non-final processes by type and status, all workspaces: the Prometheus queue-depth gauge. */
export async function queueDepth(sql: Sql): Promise<DepthRow[]> {
  return sql<DepthRow[]>`
    select type, status, count(*)::int as count
      from processes
     where status in ('pending', 'running', 'waiting_review')
     group by type, status`
}

export interface StatsBucket {
  start: string
  created: number
  completed: number
  failed: number
  cancelled: number
  wait_p50_s: number | null
  wait_p95_s: number | null
  run_p50_s: number | null
  run_p95_s: number | null
}

/**
 * Every (type, status) of a workspace with its count: the tabs' counts and the type filter's choices. Each
 * status reads at most `maxRows` + 1 rows of the index (sql/018_bounded_reads.sql: an index-only scan of (workspace, status) with
 * the type beside it), so a workspace's history costs at most that per status; a status with more is
 * `truncated` (its counts are then lower bounds), the others stay exact.
 */
export async function countByTypeAndStatus(sql: Sql, workspaceId: number, maxRows: number, tags?: string[]) {
  const rows = await sql<{ type: string; status: string; count: number }[]>`
    select r.type, s.status, count(*)::int as count
      from unnest(${STATUSES as unknown as string[]}::text[]) as s(status)
     cross join lateral (
       select p.type from processes p
        where p.workspace_id = ${workspaceId} and p.status = s.status ${tagged(sql, tags)}
        limit ${maxRows + 1}
     ) r
     group by r.type, s.status
     order by r.type, s.status`
  const perStatus = new Map<string, number>()
  for (const row of rows) perStatus.set(row.status, (perStatus.get(row.status) ?? 0) + row.count)
  return { counts: [...rows], truncated: [...perStatus.values()].some((n) => n > maxRows) }
}

/**
 * The views' counts (queries/filters.ts): each a count over its own partial index (sql/017_console.sql), so
 * what the tab says and what `GET /processes?view=` lists are one predicate.
 */
export async function countViews(sql: Sql, workspaceId: number, tags?: string[]) {
  const [row] = await sql<{ scheduled: number; retrying: number; dead: number }[]>`
    select (select count(*)::int from processes where workspace_id = ${workspaceId} ${viewCondition(sql, 'scheduled')} ${tagged(sql, tags)}) as scheduled,
           (select count(*)::int from processes where workspace_id = ${workspaceId} ${viewCondition(sql, 'retrying')} ${tagged(sql, tags)}) as retrying,
           (select count(*)::int from processes where workspace_id = ${workspaceId} ${viewCondition(sql, 'dead')} ${tagged(sql, tags)}) as dead`
  return row!
}

/**
 * Per bucket of the window: processes created, finished by outcome, and the median and 95th percentile of
 * their wait (created → started, for those started in the bucket) and run time (started → finished, for those
 * finished in it). Buckets are aligned to the epoch, so two calls a second apart draw the same bars.
 */
/** `?tag=`: processes carrying every one of these tags (the GIN index). */
function tagged(sql: Sql, tags: string[] | undefined) {
  return tags ? sql`and tags @> ${tags}::text[]` : sql``
}

export async function timeBuckets(
  sql: Sql,
  workspaceId: number,
  windowS: number,
  bucketS: number,
  maxRows: number,
  tags?: string[],
): Promise<{ buckets: StatsBucket[]; truncated: boolean }> {
  // One pass per figure, each grouped by bucket number: 50,000 processes in the last hour answer in tens of
  // milliseconds (a correlated subquery per bucket took 1.7 s there). Each pass is a range of one workspace's
  // index by time (sql/018_bounded_reads.sql; `since` is a scalar subquery, so the planner can use it as the range's start) and
  // reads the newest `maxRows` + 1 rows at most: a 200,000-process workspace's 7 days read the whole table
  // twice before (810 ms). Past the cap the oldest buckets are short, and `truncated` says so.
  const rows = await sql<(Omit<StatsBucket, 'start'> & { start: Date | string; created_rows: number; started_rows: number; finished_rows: number })[]>`
    with bounds as (
      select to_timestamp(floor(extract(epoch from now()) / ${bucketS}) * ${bucketS} - ${windowS} + ${bucketS}) as since
    ), created as (
      select floor(extract(epoch from p.created_at - (select since from bounds)) / ${bucketS})::int as n, count(*)::int as created
        from (select created_at from processes
               where workspace_id = ${workspaceId} and created_at >= (select since from bounds) ${tagged(sql, tags)}
               order by created_at desc limit ${maxRows + 1}) p
       group by 1
    ), started as (
      select floor(extract(epoch from p.started_at - (select since from bounds)) / ${bucketS})::int as n,
             count(*)::int as started_rows,
             percentile_cont(0.5) within group (order by extract(epoch from p.started_at - p.created_at)) as wait_p50_s,
             percentile_cont(0.95) within group (order by extract(epoch from p.started_at - p.created_at)) as wait_p95_s
        from (select created_at, started_at from processes
               where workspace_id = ${workspaceId} and started_at >= (select since from bounds) and started_at is not null ${tagged(sql, tags)}
               order by started_at desc limit ${maxRows + 1}) p
       group by 1
    ), finished as (
      select floor(extract(epoch from p.finished_at - (select since from bounds)) / ${bucketS})::int as n,
             count(*) filter (where p.status = 'completed')::int as completed,
             count(*) filter (where p.status = 'failed')::int as failed,
             count(*) filter (where p.status = 'cancelled')::int as cancelled,
             percentile_cont(0.5) within group (order by extract(epoch from p.finished_at - p.started_at)) filter (where p.started_at is not null) as run_p50_s,
             percentile_cont(0.95) within group (order by extract(epoch from p.finished_at - p.started_at)) filter (where p.started_at is not null) as run_p95_s
        from (select status, started_at, finished_at from processes
               where workspace_id = ${workspaceId} and finished_at >= (select since from bounds)
                 and status in ('completed', 'failed', 'cancelled') ${tagged(sql, tags)}
               order by finished_at desc limit ${maxRows + 1}) p
       group by 1
    )
    select b.since + make_interval(secs => g.n * ${bucketS}) as start,
           coalesce(c.created, 0) as created,
           coalesce(f.completed, 0) as completed, coalesce(f.failed, 0) as failed, coalesce(f.cancelled, 0) as cancelled,
           s.wait_p50_s, s.wait_p95_s, f.run_p50_s, f.run_p95_s,
           (select coalesce(sum(created), 0)::int from created) as created_rows,
           (select coalesce(sum(started_rows), 0)::int from started) as started_rows,
           (select coalesce(sum(completed + failed + cancelled), 0)::int from finished) as finished_rows
      from bounds b
     cross join generate_series(0, ${Math.round(windowS / bucketS) - 1}) as g(n)
      left join created c on c.n = g.n
      left join started s on s.n = g.n
      left join finished f on f.n = g.n
     order by g.n`
  const seconds = (v: unknown) => (v === null || v === undefined ? null : Math.round(Number(v) * 1000) / 1000)
  const first = rows[0]
  const truncated = first !== undefined && Math.max(first.created_rows, first.started_rows, first.finished_rows) > maxRows
  const buckets = rows.map((r) => ({
    start: new Date(r.start).toISOString(),
    created: r.created,
    completed: r.completed,
    failed: r.failed,
    cancelled: r.cancelled,
    wait_p50_s: seconds(r.wait_p50_s),
    wait_p95_s: seconds(r.wait_p95_s),
    run_p50_s: seconds(r.run_p50_s),
    run_p95_s: seconds(r.run_p95_s),
  }))
  return { buckets, truncated }
}
