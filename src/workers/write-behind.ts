// The write-behind of live state (README: Worker protocol, "Live state"). Accepted progress is acked and
// fanned out at once; this writes it to Postgres afterwards, newest wins: at most once per PROGRESS_PERSIST_MS
// per process, every due process in one statement, one statement at a time. Postgres's work for progress
// then grows with running processes ÷ interval, not with the rate workers send at. A crash of this instance
// loses at most the interval's states (never a status change, a result, an event or an acked terminal frame:
// those commit before their ack). A lease whose write finds its row moved on (ended, or taken over by another
// instance) is let go.
import type { Sql } from '../db/client'
import type { Logger } from '../ops/log'
import type { Metrics } from '../ops/metrics'
import { type LiveWrite, writeLive } from '../processes/queries/reports'
import type { HeldLeases, Lease } from './held'

export class LiveWriter {
  private timer: Timer | null = null
  private writing: Promise<void> | null = null
  private stopped = false
  private failures = 0
  /** Statements and rows written, for the metrics and the benchmarks. */
  statements = 0
  rows = 0

  constructor(
    private readonly sql: Sql,
    private readonly held: HeldLeases,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    /** PROGRESS_PERSIST_MS: at most one write per process per interval. */
    private readonly intervalMs: number,
    /** A lease's heartbeat_at is renewed at most this often (it is indexed: most writes leave it alone). */
    private readonly beatMs: number,
    /** Told of leases whose row moved on, and of states that waited for their write (LIVE_LEAD_MAX). */
    private readonly on: { lost(lease: Lease): void; publishable(): void },
  ) {}

  /** How often the writer looks for due leases: a fraction of the interval, so a due one waits little. */
  private get tickMs() {
    return Math.max(5, Math.min(Math.floor(this.intervalMs / 4), this.beatMs, 250))
  }

  /** Something became dirty: make sure a tick is coming. */
  poke() {
    if (this.timer !== null || this.stopped) return
    this.timer = setTimeout(() => {
      this.timer = null
      void this.tick()
    }, this.tickMs)
  }

  private async tick() {
    if (this.writing) {
      await this.writing
    }
    await this.write(this.held.takeDue(Date.now(), this.intervalMs, this.beatMs))
    if (this.held.dirtyCount > 0) this.poke()
  }

  /** Writes these leases' states now (a worker's last socket closed; shutdown). */
  async flush(ids?: ReadonlySet<number>) {
    while (this.writing) await this.writing
    await this.write(this.held.takeDue(Date.now(), 0, 0, ids))
  }

  private async write(due: { lease: Lease; write: LiveWrite }[]) {
    if (due.length === 0) return
    const run = (async () => {
      this.statements++
      this.metrics.counters.progress_statements++
      try {
        const written = new Set(
          await writeLive(
            this.sql,
            due.map((d) => d.write),
          ),
        )
        this.failures = 0
        this.rows += written.size
        this.metrics.counters.progress_writes += written.size
        let publishable = false
        for (const { lease, write } of due) {
          if (written.has(lease.id)) publishable = this.held.wrote(lease, write.version) || publishable
          else if (this.held.get(lease.id) === lease) this.on.lost(lease)
        }
        if (publishable) this.on.publishable()
      } catch (error) {
        this.failures++
        for (const { lease, write } of due) if (this.held.get(lease.id) === lease) this.held.unwritten(lease, write.beat, write.result === true)
        if (this.failures === 1 || this.failures % 100 === 0)
          this.log.warn('live state not written; retrying', { error: String(error), failures: this.failures })
        // Back off while the database is away: one attempt per interval at most.
        await Bun.sleep(Math.min(1000, Math.max(this.tickMs, this.intervalMs)))
      }
    })()
    this.writing = run
    try {
      await run
    } finally {
      if (this.writing === run) this.writing = null
    }
  }

  /** Shutdown: what is dirty is written (one attempt), then no more ticks. */
  async stop() {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    while (this.writing) await this.writing
    await this.write(this.held.takeDue(Date.now(), 0, 0)).catch(() => {})
  }
}
