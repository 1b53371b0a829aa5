// The write-behind of live output (README: Live output). Accepted chunks are acked and fanned out at once;
// this appends them to process_output afterwards: every OUTPUT_FLUSH_MS, all queued chunks of every process in
// one statement, one statement at a time — never a commit per chunk, and at most one statement per interval
// however many workers write. A terminal frame waits for its process's chunks first (drained), so a finished
// process's output is all in the table. A crash of this instance loses at most the interval's chunks.
import type { Sql } from '../db/client'
import type { Logger } from '../ops/log'
import type { Metrics } from '../ops/metrics'
import { insertOutput, type OutputRow } from '../processes/queries/output'

/**
 * At most this many chunks per statement; more go in the next. One statement at a time: a statement of N rows
 * taking T ms writes N/T rows per ms, so a large cap lets a slow database catch up (bench output, 200 streams
 * on a busy 2-core machine: 5,000-row statements every ~150 ms fell behind 33,000 chunks/s).
 */
const MAX_ROWS = 20_000
/** Chunks waiting for their write, at most: past it `output` frames are refused (rate_limited) until it drains. */
export const MAX_QUEUED_CHUNKS = 200_000

export class OutputWriter {
  private queue: OutputRow[] = []
  private timer: Timer | null = null
  private writing: Promise<void> | null = null
  private stopped = false
  private failures = 0
  /** Chunks queued or being written, per process; and who waits for a process's to be written. */
  private readonly inHand = new Map<number, number>()
  private readonly waiters = new Map<number, Array<() => void>>()
  /** Statements and chunks written, for the metrics and the benchmark. */
  statements = 0
  rows = 0

  constructor(
    private readonly sql: Sql,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly flushMs: number,
  ) {}

  push(row: OutputRow) {
    this.queue.push(row)
    this.inHand.set(row.process_id, (this.inHand.get(row.process_id) ?? 0) + 1)
    this.poke()
  }

  /** The write-behind is this far behind (the database is slow or away): refuse new chunks for now. */
  get full() {
    return this.queue.length >= MAX_QUEUED_CHUNKS
  }

  get queued() {
    return this.queue.length
  }

  private poke() {
    if (this.timer !== null || this.writing !== null || this.stopped) return
    this.timer = setTimeout(() => {
      this.timer = null
      void this.tick()
    }, this.flushMs)
  }

  private async tick() {
    const started = Date.now()
    await this.writeOnce()
    // The next statement no sooner than an interval after this one began.
    if (this.queue.length > 0 && !this.stopped) {
      const wait = Math.max(0, this.flushMs - (Date.now() - started))
      this.timer = setTimeout(() => {
        this.timer = null
        void this.tick()
      }, wait)
    }
  }

  private async writeOnce() {
    if (this.queue.length === 0) return
    const rows = this.queue.splice(0, MAX_ROWS)
    const run = (async () => {
      this.statements++
      this.metrics.counters.output_statements++
      try {
        await insertOutput(this.sql, rows)
        this.failures = 0
        this.rows += rows.length
        this.metrics.counters.output_chunks_written += rows.length
        this.settle(rows)
      } catch (error) {
        this.failures++
        if (this.failures === 1 || this.failures % 100 === 0)
          this.log.warn('live output not written; retrying', { error: String(error), failures: this.failures })
        // Shutting down: given up. Otherwise back to the front, in order, for the next statement.
        if (this.stopped) this.settle(rows)
        else {
          this.queue = rows.concat(this.queue)
          await Bun.sleep(Math.min(1000, 50 * this.failures))
        }
      }
    })()
    this.writing = run
    try {
      await run
    } finally {
      this.writing = null
    }
  }

  private settle(rows: readonly OutputRow[]) {
    for (const row of rows) {
      const n = (this.inHand.get(row.process_id) ?? 1) - 1
      if (n > 0) {
        this.inHand.set(row.process_id, n)
        continue
      }
      this.inHand.delete(row.process_id)
      const waiting = this.waiters.get(row.process_id)
      if (waiting) {
        this.waiters.delete(row.process_id)
        for (const resolve of waiting) resolve()
      }
    }
  }

  /** Resolves once every chunk of this process accepted so far is written (or given up on at shutdown). */
  drained(processId: number): Promise<void> {
    if (!this.inHand.has(processId)) return Promise.resolve()
    return new Promise((resolve) => {
      const list = this.waiters.get(processId)
      if (list) list.push(resolve)
      else this.waiters.set(processId, [resolve])
    })
  }

  /** Shutdown: what is queued is written (one attempt per statement), then no more ticks. */
  async stop() {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    while (this.writing) await this.writing
    while (this.queue.length > 0) await this.writeOnce()
  }
}
