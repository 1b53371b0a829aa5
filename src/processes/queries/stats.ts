// The figures GET /processes/stats and /metrics show, computed in SQL from the processes themselves
// (created_at, started_at, finished_at).
import type { Sql } from '../../db/client'
import type { DepthRow } from '../../ops/metrics'
import { viewCondition } from './filters'

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

/** Every (type, status) of a workspace with its count: the tabs' counts and the type filter's choices. */
export async function countByTypeAndStatus(sql: Sql, workspaceId: number, tags?: string[]) {
  return sql<{ type: string; status: string; count: number }[]>`
    select type, status, count(*)::int as count
      from processes
     where workspace_id = ${workspaceId} ${tagged(sql, tags)}
     group by type, status
     order by type, status`
}

/**
 * The views' counts (queries/filters.ts): each a count over its own partial index (sql/016_console.sql), so
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

export async function timeBuckets(sql: Sql, workspaceId: number, windowS: number, bucketS: number, tags?: string[]): Promise<StatsBucket[]> {
  // One pass per figure, each grouped by bucket number: 50,000 processes in the last hour answer in tens of
  // milliseconds (a correlated subquery per bucket took 1.7 s there).
  const rows = await sql<(Omit<StatsBucket, 'start'> & { start: Date | string })[]>`
    with bounds as (
      select to_timestamp(floor(extract(epoch from now()) / ${bucketS}) * ${bucketS} - ${windowS} + ${bucketS}) as since
    ), created as (
      select floor(extract(epoch from p.created_at - b.since) / ${bucketS})::int as n, count(*)::int as created
        from processes p, bounds b
       where p.workspace_id = ${workspaceId} and p.created_at >= b.since ${tagged(sql, tags)}
       group by 1
    ), started as (
      select floor(extract(epoch from p.started_at - b.since) / ${bucketS})::int as n,
             percentile_cont(0.5) within group (order by extract(epoch from p.started_at - p.created_at)) as wait_p50_s,
             percentile_cont(0.95) within group (order by extract(epoch from p.started_at - p.created_at)) as wait_p95_s
        from processes p, bounds b
       where p.workspace_id = ${workspaceId} and p.started_at >= b.since ${tagged(sql, tags)}
       group by 1
    ), finished as (
      select floor(extract(epoch from p.finished_at - b.since) / ${bucketS})::int as n,
             count(*) filter (where p.status = 'completed')::int as completed,
             count(*) filter (where p.status = 'failed')::int as failed,
             count(*) filter (where p.status = 'cancelled')::int as cancelled,
             percentile_cont(0.5) within group (order by extract(epoch from p.finished_at - p.started_at)) filter (where p.started_at is not null) as run_p50_s,
             percentile_cont(0.95) within group (order by extract(epoch from p.finished_at - p.started_at)) filter (where p.started_at is not null) as run_p95_s
        from processes p, bounds b
       where p.workspace_id = ${workspaceId} and p.finished_at >= b.since and p.status in ('completed', 'failed', 'cancelled') ${tagged(sql, tags)}
       group by 1
    )
    select b.since + make_interval(secs => g.n * ${bucketS}) as start,
           coalesce(c.created, 0) as created,
           coalesce(f.completed, 0) as completed, coalesce(f.failed, 0) as failed, coalesce(f.cancelled, 0) as cancelled,
           s.wait_p50_s, s.wait_p95_s, f.run_p50_s, f.run_p95_s
      from bounds b
     cross join generate_series(0, ${Math.round(windowS / bucketS) - 1}) as g(n)
      left join created c on c.n = g.n
      left join started s on s.n = g.n
      left join finished f on f.n = g.n
     order by g.n`
  const seconds = (v: unknown) => (v === null || v === undefined ? null : Math.round(Number(v) * 1000) / 1000)
  return rows.map((r) => ({
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
}
