// Claims that wait for work, and the lease sweep. Both are small loops with an explicit state and an
// abortable sleep (pg-boss's worker is the model); neither holds a transaction while it waits.
import { SERVER_QUERY_TIMEOUT_MS, type Sql, withDeadline } from '../db/client'
import type { Hub } from '../hub/hub'
import type { Logger } from '../ops/log'
import type { Metrics } from '../ops/metrics'
import type { Process } from '../processes/model'
import { claimNext, type LeaseToken, sweepExpired } from '../processes/queries'

export const MAX_WAIT_MS = 30_000

/**
 * Takes the oldest pending process of the given types, waiting up to waitMs for one to appear.
 * It sleeps until the hub announces new or retried work (from this instance or, through Redis, any other),
 * then tries again; the database is not polled in a loop.
 */
export async function claim(
  sql: Sql,
  hub: Hub,
  o: { workerId: string; types: string[] | null; waitMs: number; signal: AbortSignal; token?: LeaseToken },
): Promise<Process | null> {
  const deadline = Date.now() + Math.min(o.waitMs, MAX_WAIT_MS)
  for (;;) {
    let woken = false
    let wake: () => void = () => {
      woken = true
    }
    // Listen before looking, so work announced between the query and the sleep is not missed.
    const off = hub.onWork((type) => {
      if (type === '*' || !o.types || o.types.includes(type)) wake()
    })
    try {
      const process = await claimUnlessGone(sql, o)
      if (process) {
        hub.publish(process)
        return process
      }
      const left = deadline - Date.now()
      if (left <= 0 || o.signal.aborted) return null
      if (!woken) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, left)
          const abort = () => done()
          o.signal.addEventListener('abort', abort, { once: true })
          function done() {
            clearTimeout(timer)
            o.signal.removeEventListener('abort', abort)
            resolve()
          }
          wake = done
        })
      }
      if (o.signal.aborted) return null
    } finally {
      off()
    }
  }
}

const GONE = Symbol('the worker went away')

/**
 * One claim attempt, in a transaction that is rolled back if the worker will never hear of its lease: its
 * socket closed while the query ran, or the query outlived the server's query deadline (the worker was told
 * `unavailable`). Otherwise the process would sit running until the lease sweep failed it; rolled back, it
 * stays pending for the next worker.
 */
async function claimUnlessGone(sql: Sql, o: { workerId: string; types: string[] | null; signal: AbortSignal; token?: LeaseToken }): Promise<Process | null> {
  let late = false
  const attempt = sql
    .begin(async (tx) => {
      const process = await claimNext(tx, o.workerId, o.types, o.token)
      if (process && (o.signal.aborted || late)) throw GONE
      return process
    })
    .catch((error) => {
      if (error === GONE) return null
      throw error
    })
  return withDeadline(attempt, SERVER_QUERY_TIMEOUT_MS, () => (late = true))
}

/** Fails running processes whose worker went silent for JOB_TIMEOUT_MS. Every instance runs one. */
export class LeaseSweeper {
  private stopping = false
  private wake: (() => void) | null = null
  private loop: Promise<void> | null = null
  private consecutiveErrors = 0

  constructor(
    private readonly sql: Sql,
    private readonly hub: Hub,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly timeoutMs: number,
    private readonly intervalMs: number,
  ) {}

  start() {
    this.loop ??= this.run()
  }

  /** One pass; returns the processes it failed. */
  async sweep(): Promise<Process[]> {
    const failed = await sweepExpired(this.sql, this.timeoutMs)
    this.hub.publishAll(failed)
    if (failed.length > 0) {
      this.metrics.counters.sweeps_failed_processes += failed.length
      this.log.info('lease sweep failed silent processes', { ids: failed.map((p) => p.id) })
    }
    return failed
  }

  private async run() {
    while (!this.stopping) {
      try {
        await this.sweep()
        this.consecutiveErrors = 0
      } catch (error) {
        this.consecutiveErrors++
        this.log.warn('lease sweep failed', { error: String(error), consecutive: this.consecutiveErrors })
      }
      // Back off while the database is unhappy: up to 8× the interval.
      await this.sleep(this.intervalMs * Math.min(8, 2 ** this.consecutiveErrors))
    }
  }

  private sleep(ms: number) {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.wake = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }

  async stop() {
    this.stopping = true
    this.wake?.()
    await this.loop
  }
}
