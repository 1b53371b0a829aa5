// Claims that wait for work, and the lease sweep. Both are small loops with an explicit state and an
// abortable sleep (pg-boss's worker is the model); neither holds a transaction while it waits.
import { SERVER_QUERY_TIMEOUT_MS, type Sql, withDeadline } from '../db/client'
import type { ProcessHub } from '../processes/hub-rules'
import type { Logger } from '../ops/log'
import { BackgroundLoop } from '../ops/loop'
import type { Metrics } from '../ops/metrics'
import type { Process } from '../processes/model'
import { capLock, claimNext, nextRunAt } from '../processes/queries/claims'
import { sweepExpired } from '../processes/queries/failures'
import type { LeaseToken } from '../processes/queries/transitions'
import type { QueuePolicy } from './queue'

export const MAX_WAIT_MS = 30_000

export interface ClaimRequest {
  workerId: string
  types: string[] | null
  /** Up to this many processes at once (1–100). */
  max: number
  waitMs: number
  signal: AbortSignal
  /** The worker token claiming: the lease is bound to it, and its scope limits what it may take. */
  token?: LeaseToken
}

/**
 * Takes up to `max` claimable processes of the given types, waiting up to waitMs for one to appear. It sleeps
 * until the hub announces new or retried work (from this instance or, through Redis, any other) or until the
 * earliest delayed process of its types comes due, then tries again; the database is not polled in a loop.
 * A wake-up goes to one waiting claim per new process (WorkWakeups.wake, src/queues/wakeups.ts); one this claim took but did not use
 * (it returned with what it had found already) is passed on.
 */
export async function claim(sql: Sql, hub: ProcessHub, queue: QueuePolicy, o: ClaimRequest): Promise<Process[]> {
  const deadline = Date.now() + Math.min(o.waitMs, MAX_WAIT_MS)
  for (;;) {
    const taken: string[] = []
    let wake: () => void = () => {}
    // Listen before looking, so work announced between the query and the sleep is not missed.
    const off = hub.work.onWork((type) => {
      if (type !== '*' && o.types && !o.types.includes(type)) return 0
      taken.push(type)
      wake()
      return o.max
    })
    let found: Process[] = []
    try {
      found = await claimUnlessGone(sql, queue, o)
      if (found.length > 0) {
        queue.markServed(found)
        hub.publishAll(found)
        return found
      }
      const left = deadline - Date.now()
      if (left <= 0 || o.signal.aborted) return []
      if (taken.length === 0) {
        const dueAt = earliest(await nextRunAt(sql, o.types), queue.nextRateWindowAt(o.types))
        if (taken.length === 0) {
          const sleepMs = dueAt === null ? left : Math.min(left, Math.max(0, dueAt - Date.now()) + 5)
          await new Promise<void>((resolve) => {
            const timer = setTimeout(done, sleepMs)
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
      }
      if (o.signal.aborted) return []
    } finally {
      off()
      // Woken while it was busy finding what it returns with: that wake-up was for someone else too.
      if (found.length > 0) for (const type of taken) hub.work.wake(type, o.max)
    }
  }
}

const earliest = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.min(a, b))

const GONE = Symbol('the worker went away')

/**
 * One claim attempt, in a transaction that is rolled back if the worker will never hear of its lease: its
 * socket closed while the query ran, or the query outlived the server's query deadline (the worker was told
 * `unavailable`). Otherwise the process would sit running until the lease sweep failed it; rolled back, it
 * stays pending for the next worker. With concurrency caps, claims take the cap lock first (one at a time).
 */
async function claimUnlessGone(sql: Sql, queue: QueuePolicy, o: ClaimRequest): Promise<Process[]> {
  let late = false
  const attempt = sql
    .begin(async (tx) => {
      if (queue.caps) await capLock(tx)
      const processes = await claimNext(tx, {
        workerId: o.workerId,
        types: o.types,
        max: o.max,
        served: queue.turns(),
        caps: queue.caps,
        token: o.token,
        rate: queue.rate,
      })
      if (processes.length > 0 && (o.signal.aborted || late)) throw GONE
      return processes
    })
    .catch((error) => {
      if (error === GONE) return []
      throw error
    })
  return withDeadline(attempt, SERVER_QUERY_TIMEOUT_MS, () => (late = true))
}

/** Fails (or, with attempts left, retries) running processes whose worker went silent for JOB_TIMEOUT_MS. Every instance runs one. */
export class LeaseSweeper {
  private readonly loop: BackgroundLoop

  constructor(
    private readonly sql: Sql,
    private readonly hub: ProcessHub,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly timeoutMs: number,
    intervalMs: number,
    private readonly queue?: QueuePolicy,
  ) {
    this.loop = new BackgroundLoop('lease sweep', log, intervalMs, () => this.sweep())
  }

  start() {
    this.loop.start()
  }

  /** One pass; returns the processes it failed or put back to pending for a retry. */
  async sweep(): Promise<Process[]> {
    const failed = await sweepExpired(this.sql, this.timeoutMs, this.queue?.backoff)
    this.hub.publishAll(failed)
    for (const p of failed) {
      if (p.status === 'pending') this.hub.work.announce(p.type, 1, Date.parse(p.run_at))
      else if (this.queue?.capsAffect(p.type)) this.hub.work.announce(p.type)
    }
    if (failed.length > 0) {
      this.metrics.counters.sweeps_failed_processes += failed.length
      this.log.info('lease sweep failed silent processes', { ids: failed.map((p) => p.id) })
    }
    return failed
  }

  stop() {
    return this.loop.stop()
  }
}
