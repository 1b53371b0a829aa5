// Runtime SQL for schedules: the rows users manage, and the statements of one tick-loop pass.
import type { Row, Sql } from '../db/client'
import type { CatchUp } from './ticks'

export interface ScheduleRow {
  id: number
  workspace_id: number
  type: string
  cron: string
  timezone: string
  metadata: Record<string, unknown>
  priority: number
  max_attempts: number | null
  overlap: 'skip' | 'allow'
  catch_up: CatchUp
  enabled: boolean
  created_by: number | null
  created_at: string
  updated_at: string
  last_tick_at: string
  next_tick_at: string | null
  last_process_id: number | null
}

export interface NewSchedule {
  workspace_id: number
  type: string
  cron: string
  timezone: string
  metadata: object
  priority: number
  max_attempts: number | null
  overlap: 'skip' | 'allow'
  catch_up: CatchUp
  enabled: boolean
  created_by: number | null
}

/** The database's clock: ticks are compared with it, so instances with skewed clocks agree on what is due. */
export async function databaseNow(sql: Sql): Promise<number> {
  const [row] = await sql<{ now: string }[]>`select clock_timestamp() as now`
  return Date.parse(row!.now)
}

export async function insertSchedule(sql: Sql, s: NewSchedule, nowMs: number, nextTickMs: number | null): Promise<ScheduleRow> {
  const [row] = await sql<ScheduleRow[]>`
    insert into schedules (workspace_id, type, cron, timezone, metadata, priority, max_attempts, overlap, catch_up, enabled, created_by,
                           last_tick_at, next_tick_at)
    values (${s.workspace_id}, ${s.type}, ${s.cron}, ${s.timezone}, ${JSON.stringify(s.metadata)}::text::jsonb, ${s.priority}, ${s.max_attempts},
            ${s.overlap}, ${s.catch_up}, ${s.enabled}, ${s.created_by}, ${new Date(nowMs).toISOString()}, ${iso(nextTickMs)})
    returning *`
  return row!
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

export async function getSchedule(sql: Sql, id: number, workspaceIds: number[]): Promise<ScheduleRow | null> {
  const [row] = await sql<ScheduleRow[]>`select * from schedules where id = ${id} and workspace_id = any(${workspaceIds}::bigint[])`
  return row ?? null
}

/** For an update: the row locked, so the tick loop does not handle it meanwhile. */
export async function lockSchedule(sql: Sql, id: number, workspaceIds: number[]): Promise<ScheduleRow | null> {
  const [row] = await sql<ScheduleRow[]>`select * from schedules where id = ${id} and workspace_id = any(${workspaceIds}::bigint[]) for update`
  return row ?? null
}

export async function listSchedules(sql: Sql, workspaceId: number, limit: number, before?: number): Promise<ScheduleRow[]> {
  return sql<ScheduleRow[]>`
    select * from schedules where workspace_id = ${workspaceId} ${before ? sql`and id < ${before}` : sql``}
     order by id desc limit ${limit}`
}

export type ScheduleChanges = Partial<Omit<NewSchedule, 'workspace_id' | 'created_by'>> & { last_tick_at?: string; next_tick_at?: string | null }

export async function updateSchedule(sql: Sql, id: number, c: ScheduleChanges): Promise<ScheduleRow> {
  const given = (value: unknown) => value !== undefined
  const [row] = await sql<ScheduleRow[]>`
    update schedules set updated_at = now()
           ${given(c.type) ? sql`, type = ${c.type!}` : sql``}
           ${given(c.cron) ? sql`, cron = ${c.cron!}` : sql``}
           ${given(c.timezone) ? sql`, timezone = ${c.timezone!}` : sql``}
           ${given(c.metadata) ? sql`, metadata = ${JSON.stringify(c.metadata)}::text::jsonb` : sql``}
           ${given(c.priority) ? sql`, priority = ${c.priority!}` : sql``}
           ${given(c.max_attempts) ? sql`, max_attempts = ${c.max_attempts!}` : sql``}
           ${given(c.overlap) ? sql`, overlap = ${c.overlap!}` : sql``}
           ${given(c.catch_up) ? sql`, catch_up = ${c.catch_up!}` : sql``}
           ${given(c.enabled) ? sql`, enabled = ${c.enabled!}` : sql``}
           ${given(c.last_tick_at) ? sql`, last_tick_at = ${c.last_tick_at!}` : sql``}
           ${given(c.next_tick_at) ? sql`, next_tick_at = ${c.next_tick_at!}` : sql``}
     where id = ${id}
    returning *`
  return row!
}

export async function deleteSchedule(sql: Sql, id: number, workspaceIds: number[]): Promise<boolean> {
  const rows = await sql`delete from schedules where id = ${id} and workspace_id = any(${workspaceIds}::bigint[]) returning id`
  return rows.length > 0
}

export async function listRuns(sql: Sql, scheduleId: number, limit: number, before?: string) {
  return sql<{ tick: string; process_id: number | null; skipped: 'overlap' | 'quota' | null; quota: string | null; created_at: string }[]>`
    select tick, process_id, skipped, skipped_quota as quota, created_at from schedule_runs
     where schedule_id = ${scheduleId} ${before ? sql`and tick < ${before}` : sql``}
     order by tick desc limit ${limit}`
}

// ---------------------------------------------------------------------------------------------
// The tick loop.

/**
 * The next due schedule nobody else is handling, locked for this transaction (skip locked: another instance
 * handling one moves on to the next). `except`: schedules this pass already failed on.
 */
export async function lockDueSchedule(sql: Sql, nowMs: number, except: number[]): Promise<ScheduleRow | null> {
  const [row] = await sql<ScheduleRow[]>`
    select * from schedules
     where enabled and next_tick_at <= ${new Date(nowMs).toISOString()} and id <> all(${except}::bigint[])
     order by next_tick_at
     limit 1
       for update skip locked`
  return row ?? null
}

/** Whether a process is still pending or running (overlap `skip`). */
export async function isActive(sql: Sql, processId: number): Promise<boolean> {
  const [row] = await sql<{ status: string }[]>`select status from processes where id = ${processId}`
  return row?.status === 'pending' || row?.status === 'running'
}

/**
 * Claims ticks for runs: one schedule_runs row per tick, unless the tick has one already (its primary key is
 * the rule that a tick makes one process, whatever happens to the row locks); returns the ticks it got.
 */
export async function insertRuns(sql: Sql, scheduleId: number, ticks: number[], skipped: 'overlap' | null): Promise<number[]> {
  if (ticks.length === 0) return []
  const rows = await sql<{ tick: string }[]>`
    insert into schedule_runs (schedule_id, tick, skipped)
    select ${scheduleId}, unnest(${ticks.map((t) => new Date(t).toISOString())}::timestamptz[]), ${skipped}
    on conflict do nothing
    returning tick`
  return rows.map((r) => Date.parse(r.tick))
}

/** Ticks claimed for runs that their workspace's quotas refused: skipped, with the quota that refused each. */
export async function skipRunsForQuota(sql: Sql, scheduleId: number, ticks: number[], quotas: string[]) {
  if (ticks.length === 0) return
  await sql`
    update schedule_runs r set skipped = 'quota', skipped_quota = x.quota
      from unnest(${ticks.map((t) => new Date(t).toISOString())}::timestamptz[], ${quotas}::text[]) as x(tick, quota)
     where r.schedule_id = ${scheduleId} and r.tick = x.tick`
}

export async function setRunProcesses(sql: Sql, scheduleId: number, ticks: number[], processIds: number[]) {
  if (ticks.length === 0) return
  await sql`
    update schedule_runs r set process_id = x.process_id
      from unnest(${ticks.map((t) => new Date(t).toISOString())}::timestamptz[], ${processIds}::bigint[]) as x(tick, process_id)
     where r.schedule_id = ${scheduleId} and r.tick = x.tick`
}

export async function advanceSchedule(sql: Sql, id: number, lastTickMs: number, nextTickMs: number | null, lastProcessId: number | null) {
  await sql`
    update schedules set last_tick_at = ${new Date(lastTickMs).toISOString()}, next_tick_at = ${iso(nextTickMs)},
           last_process_id = coalesce(${lastProcessId}::bigint, last_process_id)
     where id = ${id}`
}

/** Milliseconds until the next enabled schedule is due (by the database's clock); null when there is none. */
export async function msToNextTick(sql: Sql): Promise<number | null> {
  const [row] = await sql<{ ms: number | null }[]>`
    select extract(epoch from min(next_tick_at) - clock_timestamp())::float8 * 1000 as ms from schedules where enabled`
  return row?.ms ?? null
}

/** Runs older than the given days, of every schedule (a bounded batch; schedule_runs_tick_idx). */
export async function pruneRuns(sql: Sql, days: number): Promise<number> {
  const rows = await sql<Row[]>`
    delete from schedule_runs r
     using (select schedule_id, tick from schedule_runs where tick < now() - ${days} * interval '1 day' order by tick limit 5000) old
     where r.schedule_id = old.schedule_id and r.tick = old.tick
    returning 1`
  return rows.length
}
