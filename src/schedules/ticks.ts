// When a schedule's ticks fall, in its time zone: croner (a maintained cron library with seconds and time
// zones) does the calendar; this file decides what a pass of the tick loop does with the ticks that are due.
//
// DST, as croner defines it: a fixed-time expression (seconds, minutes and hours each one value, like
// `30 2 * * *`) whose time falls in a spring-forward gap runs at the first valid time after the gap, and runs
// once when a fall-back repeats its time; any other expression (`0 * * * *`, `*/15 * * * *`) is an interval
// and keeps its interval in real time: times inside the gap do not exist, and a repeated hour runs twice.
import { Cron } from 'croner'

/** At most this many ticks of one schedule are handled per pass under catch_up `all` (the rest next pass). */
export const CATCH_UP_BATCH = 100

/** How many upcoming ticks are read to check a schedule's frequency against SCHEDULE_MIN_INTERVAL_MS. */
const FREQUENCY_SAMPLE = 100

export type CatchUp = 'none' | 'latest' | 'all'

const cache = new Map<string, Cron>()

/** The cron of an expression in a time zone (validated first by scheduleProblem); kept for the next pass. */
export function cronOf(expression: string, timezone: string): Cron {
  const key = `${timezone}\u0000${expression}`
  let cron = cache.get(key)
  if (!cron) {
    cron = new Cron(expression, { timezone, paused: true })
    if (cache.size > 10_000) cache.clear()
    cache.set(key, cron)
  }
  return cron
}

export function isTimeZone(timezone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone })
    return true
  } catch {
    return false
  }
}

/**
 * What is wrong with an expression and time zone, as a 422 names it (`path` in the body), or null: not a
 * cron expression, an unknown time zone, no tick ever (30 February), or ticks closer than minIntervalMs.
 */
export function scheduleProblem(expression: string, timezone: string, minIntervalMs: number, nowMs = Date.now()): { path: string; message: string } | null {
  if (!isTimeZone(timezone))
    return { path: '/timezone', message: `unknown time zone ${JSON.stringify(timezone)} (expected an IANA name such as Europe/Berlin or UTC)` }
  let cron: Cron
  try {
    cron = new Cron(expression, { timezone, paused: true })
  } catch (error) {
    return { path: '/cron', message: `not a valid cron expression: ${error instanceof Error ? error.message : String(error)}` }
  }
  const runs = cron.nextRuns(FREQUENCY_SAMPLE, new Date(nowMs))
  if (runs.length === 0) return { path: '/cron', message: 'this expression has no upcoming tick' }
  let gap = Number.POSITIVE_INFINITY
  for (let i = 1; i < runs.length; i++) gap = Math.min(gap, runs[i]!.getTime() - runs[i - 1]!.getTime())
  if (gap < minIntervalMs) {
    return { path: '/cron', message: `ticks ${gap} ms apart; schedules may tick at most once per ${minIntervalMs} ms (SCHEDULE_MIN_INTERVAL_MS)` }
  }
  return null
}

/** The next `n` ticks after a moment (ms since the epoch). */
export function nextTicks(expression: string, timezone: string, afterMs: number, n: number): number[] {
  return cronOf(expression, timezone)
    .nextRuns(n, new Date(afterMs))
    .map((d) => d.getTime())
}

export interface TickPlan {
  /** The ticks to run (each gets a process, or an overlap skip), oldest first. */
  run: number[]
  /** The last tick handled: run or passed over (catch_up none/latest), or lastTickMs when none was due. */
  lastTickMs: number
  /** The first tick after lastTickMs: when the schedule is next due (may be now, when `all` has more). */
  nextTickMs: number | null
}

/**
 * What a pass at `nowMs` does with a schedule whose last handled tick is lastTickMs. The ticks due are those
 * after lastTickMs up to now; the newest of them is on time when it is at most graceMs old, and the older
 * ones were missed (the instances were down, or the schedule was blocked). catch_up:
 * - `none`: runs the newest tick if it is on time, and nothing that was missed;
 * - `latest`: runs the newest tick, on time or not, once (the missed ones before it are passed over);
 * - `all`: runs every due tick, oldest first, CATCH_UP_BATCH per pass.
 */
export function planTicks(s: { cron: string; timezone: string; catch_up: CatchUp; lastTickMs: number }, nowMs: number, graceMs: number): TickPlan {
  const cron = cronOf(s.cron, s.timezone)
  const after = (ms: number) => cron.nextRun(new Date(ms))?.getTime() ?? null
  if (s.catch_up === 'all') {
    const run: number[] = []
    let at = after(s.lastTickMs)
    while (at !== null && at <= nowMs && run.length < CATCH_UP_BATCH) {
      run.push(at)
      at = after(at)
    }
    const lastTickMs = run.length > 0 ? run[run.length - 1]! : s.lastTickMs
    return { run, lastTickMs, nextTickMs: at }
  }
  // The newest tick at or before now (croner's previousRuns counts a tick earlier in the reference's second).
  const newest = cron.previousRuns(1, new Date(nowMs + 1))[0]?.getTime() ?? null
  if (newest === null || newest <= s.lastTickMs) return { run: [], lastTickMs: s.lastTickMs, nextTickMs: after(s.lastTickMs) }
  const onTime = nowMs - newest <= graceMs
  const run = s.catch_up === 'latest' || onTime ? [newest] : []
  return { run, lastTickMs: newest, nextTickMs: after(newest) }
}
