// The delivery loop: every instance runs one. It claims due deliveries (queries.ts claimDeliveries: skip
// locked, so instances never send the same one at once, and per endpoint no more than
// WEBHOOK_ENDPOINT_CONCURRENCY in flight over all instances), sends each without waiting for the others
// (sender.ts), and records the outcomes in batches: succeeded, retried after an exponential backoff
// (WEBHOOK_RETRY_BASE_MS × 2^(attempt−1), capped, jittered), or failed once retries would pass
// WEBHOOK_RETRY_WINDOW_MS. A slow endpoint holds only its own slots, and every send has a deadline, so it
// delays no other endpoint, nor the queue (deliveries are written by triggers and sent apart from it).
// Like src/ops/loop.ts: an explicit state, an abortable sleep, errors logged and backed off, never thrown.
import type { Config } from '../config'
import type { Sql } from '../db/client'
import type { Logger } from '../ops/log'
import { type AttemptResult, type Claimed, claimDeliveries, finishAttempts, messageId, pruneDeliveries, reapLeases } from './queries'
import { sendDelivery } from './sender'

const REAP_EVERY_MS = 5000
const PRUNE_EVERY_MS = 60_000
/** A lease outlives the attempt's deadline by this much before another instance takes the delivery over. */
const LEASE_MARGIN_MS = 30_000
const MAX_FINISH_BATCH = 500

export interface DeliveryTotals {
  /** Attempts made from this instance, and how they ended. */
  attempts: number
  succeeded: number
  failedAttempts: number
  /** Claim or finish statements that failed (the database was away). */
  errors: number
}

export class DeliveryLoop {
  private stopping = false
  private running: Promise<void> | null = null
  private wakeSleep: (() => void) | null = null
  /** Woken while busy: the next sleep is skipped. */
  private woken = false
  private inflight = 0
  private readonly sends = new Set<Promise<void>>()
  private readonly abort = new AbortController()
  private results: AttemptResult[] = []
  private flushing: Promise<void> | null = null
  private flushScheduled = false
  /** The last webhook served: the next claim starts after it, so every endpoint gets its turn. */
  private cursor = 0
  private lastReapMs = 0
  private lastPruneMs = 0
  private consecutiveErrors = 0
  readonly totals: DeliveryTotals = { attempts: 0, succeeded: 0, failedAttempts: 0, errors: 0 }

  constructor(
    private readonly sql: Sql,
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  get inFlight() {
    return this.inflight
  }

  start() {
    this.running ??= this.run()
  }

  /** Look for due deliveries now (a redelivery asked here, a send finished). */
  wake() {
    this.woken = true
    this.wakeSleep?.()
  }

  /** Stops claiming, ends the sends in flight (recorded as attempts to make again at once), records what finished. */
  async stop() {
    this.stopping = true
    this.wake()
    this.abort.abort()
    await this.running
    await Promise.all(this.sends)
    await this.flush()
  }

  private async run() {
    const { WEBHOOK_CONCURRENCY: concurrency, WEBHOOK_POLL_MS: pollMs } = this.config
    while (!this.stopping) {
      let sleepMs = pollMs
      try {
        await this.housekeeping()
        const room = concurrency - this.inflight
        if (room > 0) for (const row of await this.claim(room)) this.send(row)
        this.consecutiveErrors = 0
      } catch (error) {
        this.consecutiveErrors++
        this.totals.errors++
        this.log.warn('webhook delivery claim failed', { error: String(error), consecutive: this.consecutiveErrors })
        sleepMs = pollMs * Math.min(8, 2 ** this.consecutiveErrors)
      }
      if (this.stopping) break
      await this.sleep(sleepMs)
    }
  }

  /** Due deliveries, up to `room`, the webhooks after the cursor first, then from the start. */
  private async claim(room: number): Promise<Claimed[]> {
    const o = { endpointMax: this.config.WEBHOOK_ENDPOINT_CONCURRENCY, leaseMs: this.config.WEBHOOK_TIMEOUT_MS + LEASE_MARGIN_MS }
    const rows = await claimDeliveries(this.sql, { ...o, max: room, afterWebhookId: this.cursor })
    if (rows.length < room && this.cursor > 0) rows.push(...(await claimDeliveries(this.sql, { ...o, max: room - rows.length, afterWebhookId: 0 })))
    this.cursor = rows.length > 0 ? Math.max(...rows.map((r) => r.webhook_id)) : 0
    return rows
  }

  private send(row: Claimed) {
    this.inflight++
    this.totals.attempts++
    const at = new Date().toISOString()
    const work = sendDelivery(
      { url: row.url, secret: row.secret, messageId: messageId(row.id), payload: row.payload },
      { timeoutMs: this.config.WEBHOOK_TIMEOUT_MS, allowPrivate: this.config.WEBHOOK_ALLOW_PRIVATE === 'on', signal: this.abort.signal },
    ).then((result) => {
      this.inflight--
      if (result.ok) this.totals.succeeded++
      else this.totals.failedAttempts++
      // Cut short by our own shutdown: due again at once, for another instance.
      const delay = result.ok ? null : this.abort.signal.aborted ? 0 : this.backoffMs(row.attempts)
      this.results.push({
        id: row.id,
        attempt: row.attempts,
        at,
        status: result.status,
        latency_ms: result.latencyMs,
        error: result.error,
        ok: result.ok,
        delay_ms: delay,
      })
      this.scheduleFlush()
    })
    this.sends.add(work)
    void work.finally(() => this.sends.delete(work))
  }

  /** WEBHOOK_RETRY_BASE_MS × 2^(attempt−1), capped at WEBHOOK_RETRY_MAX_MS, jittered to 50–100 %. */
  backoffMs(attempt: number): number {
    const { WEBHOOK_RETRY_BASE_MS: base, WEBHOOK_RETRY_MAX_MS: max } = this.config
    return Math.round(Math.min(max, base * 2 ** Math.max(0, attempt - 1)) * (0.5 + Math.random() / 2))
  }

  private scheduleFlush() {
    if (this.flushScheduled) return
    this.flushScheduled = true
    // The outcomes that finish in this turn go together.
    setImmediate(() => {
      this.flushScheduled = false
      void this.flush()
    })
  }

  /** Records the outcomes so far (one statement per 500), then wakes the loop: their endpoints have room again. */
  private async flush(): Promise<void> {
    if (this.flushing) return this.flushing
    this.flushing = (async () => {
      while (this.results.length > 0) {
        const batch = this.results.splice(0, MAX_FINISH_BATCH)
        try {
          await finishAttempts(this.sql, batch, this.config.WEBHOOK_RETRY_WINDOW_MS)
        } catch (error) {
          // Kept for the next flush; past their lease another instance sends them again (at least once).
          this.results = batch.concat(this.results)
          this.totals.errors++
          this.log.warn('webhook delivery results not recorded yet', { deliveries: batch.length, error: String(error) })
          if (!this.stopping) setTimeout(() => this.scheduleFlush(), this.config.WEBHOOK_POLL_MS * 5)
          return
        }
      }
    })().finally(() => {
      this.flushing = null
    })
    await this.flushing
    this.wake()
  }

  private async housekeeping() {
    const now = Date.now()
    if (now - this.lastReapMs >= REAP_EVERY_MS) {
      this.lastReapMs = now
      const reaped = await reapLeases(this.sql)
      if (reaped > 0) this.log.info('webhook deliveries taken over from a stopped instance', { deliveries: reaped })
    }
    if (now - this.lastPruneMs >= PRUNE_EVERY_MS && this.config.WEBHOOK_RETENTION_DAYS > 0) {
      this.lastPruneMs = now
      await pruneDeliveries(this.sql, this.config.WEBHOOK_RETENTION_DAYS)
    }
  }

  private sleep(ms: number) {
    if (this.woken) {
      this.woken = false
      return Promise.resolve()
    }
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.woken = false
        this.wakeSleep = null
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.wakeSleep = done
    })
  }
}
