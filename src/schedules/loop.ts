// The tick loop: every instance runs one. A pass takes the due schedules one at a time, each in its own
// transaction with its row locked (`for update skip locked`: an instance handling a schedule is never waited
// for, the others take the next one), creates the processes of its due ticks (ticks.ts decides which), and
// moves the schedule's last tick on — all in that transaction. A tick therefore makes at most one process
// however many instances run, and schedule_runs' primary key on (schedule_id, tick) holds the rule on its own.
// Time is the database's clock, so instances with skewed clocks agree on what is due. No leader is elected.
import type { Config } from '../config'
import type { Sql } from '../db/client'
import type { Logger } from '../ops/log'
import { BackgroundLoop } from '../ops/loop'
import type { ProcessHub } from '../processes/hub-rules'
import type { Process } from '../processes/model'
import { insertProcesses, type NewProcess } from '../processes/queries/create'
import { admit, quotasOf } from '../processes/quotas'
import type { QueuePolicy } from '../workers/queue'
import {
  advanceSchedule,
  databaseNow,
  insertRuns,
  isActive,
  lockDueSchedule,
  msToNextTick,
  pruneRuns,
  type ScheduleRow,
  setRunProcesses,
  skipRunsForQuota,
} from './queries'
import { planTicks } from './ticks'

/** At most this many schedules per pass: a pass ends, and the next starts at once, so stop() is not held up. */
const MAX_PER_PASS = 500
const PRUNE_EVERY_MS = 60_000
/** A schedule refused by a quota is logged at most once per this (each refused tick is a run row and a count). */
const QUOTA_LOG_EVERY_MS = 60_000

export interface ScheduleLoopServices {
  sql: Sql
  hub: ProcessHub
  log: Logger
  queue: QueuePolicy
  config: Config
}

export class ScheduleLoop {
  private readonly loop: BackgroundLoop
  private lastPruneMs = 0
  /** Ticks that made a process, and ticks skipped for overlap, on this instance (metrics). */
  ticksRun = 0
  ticksSkipped = 0
  /** Ticks skipped because their workspace was at a quota (WORKSPACE_MAX_PENDING and the rest), on this instance. */
  ticksSkippedQuota = 0
  private readonly quotaLoggedAt = new Map<number, number>()

  constructor(private readonly s: ScheduleLoopServices) {
    this.loop = new BackgroundLoop('schedule ticks', s.log, s.config.SCHEDULE_POLL_MS, () => this.pass())
  }

  start() {
    this.loop.start()
  }

  stop() {
    return this.loop.stop()
  }

  /** A schedule was created or changed here: look again now rather than at the next poll. */
  wake() {
    this.loop.wake()
  }

  /**
   * Handles every due schedule; returns how long to sleep (until the next tick). `nowMs` replaces the
   * database's clock (tests: a DST switch, an outage).
   */
  async pass(nowMs?: number): Promise<{ sleepMs: number; handled: number }> {
    const failed: number[] = []
    let handled = 0
    while (handled < MAX_PER_PASS) {
      let current: ScheduleRow | null = null
      let created: Process[] = []
      try {
        const done = await this.s.sql.begin(async (tx) => {
          const now = nowMs ?? (await databaseNow(tx))
          const row = await lockDueSchedule(tx, now, failed)
          if (!row) return false
          current = row
          created = await this.fire(tx, row, now)
          return true
        })
        if (!done) break
      } catch (error) {
        // One schedule failing (its transaction is rolled back) must not hold up the others: skipped this pass.
        if (current === null) throw error
        const failedRow = current as ScheduleRow
        failed.push(failedRow.id)
        this.s.log.warn('schedule tick failed', { schedule_id: failedRow.id, error: String(error) })
        continue
      }
      handled++
      if (created.length > 0) {
        this.s.hub.publishAll(created)
        this.s.hub.work.announce(created[0]!.type, created.length)
      }
    }
    if (nowMs === undefined && Date.now() - this.lastPruneMs > PRUNE_EVERY_MS && this.s.config.RETENTION_DAYS > 0) {
      this.lastPruneMs = Date.now()
      await pruneRuns(this.s.sql, this.s.config.RETENTION_DAYS)
    }
    if (handled === MAX_PER_PASS) return { sleepMs: 0, handled }
    const ms = nowMs === undefined ? await msToNextTick(this.s.sql) : null
    // A little past the tick, so the database's clock has reached it too.
    return { sleepMs: ms === null ? this.s.config.SCHEDULE_POLL_MS : Math.max(0, ms) + 2, handled }
  }

  /** The due ticks of one locked schedule: their runs, processes, and the schedule's next tick. */
  private async fire(tx: Sql, row: ScheduleRow, nowMs: number): Promise<Process[]> {
    const plan = planTicks(
      { cron: row.cron, timezone: row.timezone, catch_up: row.catch_up, lastTickMs: Date.parse(row.last_tick_at) },
      nowMs,
      this.s.config.SCHEDULE_GRACE_MS,
    )
    let runTicks: number[] = []
    if (plan.run.length > 0) {
      if (row.overlap === 'skip') {
        // While the last run is pending or running, a tick is skipped; of several due at once only the first
        // can run (its own process is pending when the next comes).
        const busy = row.last_process_id !== null && (await isActive(tx, row.last_process_id))
        const [first, ...rest] = plan.run
        const skipped = busy ? plan.run : rest
        if (!busy) runTicks = await insertRuns(tx, row.id, [first!], null)
        this.ticksSkipped += (await insertRuns(tx, row.id, skipped, 'overlap')).length
      } else runTicks = await insertRuns(tx, row.id, plan.run, null)
    }
    const wanted: NewProcess[] = runTicks.map((tick) => ({
      type: row.type,
      // What the worker needs to know of its run: which schedule, and which tick (graphile-worker's `_cron`).
      metadata: { ...row.metadata, _schedule: { id: row.id, tick: new Date(tick).toISOString() } },
      priority: row.priority,
      max_attempts: row.max_attempts ?? this.s.queue.maxAttemptsFor(row.type),
      run_at: null,
      delay_ms: null,
    }))
    // Ticks are creates like any other: past a workspace quota a tick makes no process, and its run says
    // which quota (under the quota's lock, so ticks and API creates racing on several instances agree).
    const verdicts = await admit(
      tx,
      quotasOf(this.s.config),
      wanted.map((item) => ({ workspaceId: row.workspace_id, type: item.type, metadata: item.metadata })),
    )
    const items = wanted.filter((_, i) => verdicts[i] === null)
    const admittedTicks = runTicks.filter((_, i) => verdicts[i] === null)
    const refused = runTicks.flatMap((tick, i) => {
      const quota = (verdicts[i]?.details as { quota?: string } | undefined)?.quota
      return verdicts[i] ? [{ tick, quota: quota ?? 'unknown' }] : []
    })
    if (refused.length > 0) {
      await skipRunsForQuota(
        tx,
        row.id,
        refused.map((r) => r.tick),
        refused.map((r) => r.quota),
      )
      this.ticksSkippedQuota += refused.length
      this.logQuotaSkip(row, refused[0]!.quota, refused.length)
    }
    const created = items.length > 0 ? await insertProcesses(tx, { workspaceId: row.workspace_id, createdBy: row.created_by, items }) : []
    await setRunProcesses(
      tx,
      row.id,
      admittedTicks,
      created.map((p) => p.id),
    )
    // Never due again at once with nothing to do (a calendar that disagreed with itself would spin the loop).
    const next = plan.run.length === 0 && plan.nextTickMs !== null && plan.nextTickMs <= nowMs ? nowMs + 1000 : plan.nextTickMs
    await advanceSchedule(tx, row.id, plan.lastTickMs, next, created.at(-1)?.id ?? null)
    this.ticksRun += created.length
    return created
  }

  private logQuotaSkip(row: ScheduleRow, quota: string, ticks: number) {
    const now = Date.now()
    if (now - (this.quotaLoggedAt.get(row.id) ?? 0) < QUOTA_LOG_EVERY_MS) return
    if (this.quotaLoggedAt.size >= 10_000) this.quotaLoggedAt.clear()
    this.quotaLoggedAt.set(row.id, now)
    this.s.log.warn('schedule tick skipped: workspace at a quota', { schedule_id: row.id, workspace_id: row.workspace_id, quota, ticks })
  }
}
