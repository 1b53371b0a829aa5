// Coalesced progress writes. Per process, a frame is written at once when nothing of that process is queued
// or in flight; what arrives while its write is in flight waits, at most one write per PROGRESS_FLUSH_MS
// carrying the newest frame; all due processes go out in one statement (group commit across processes), at
// most maxInFlight statements at a time, each for processes none of the others carries (so two writes of one
// process can never commit out of order). A frame is acked when the
// write that carries it commits; only then is the state published.
import type { Sql } from '../db/client'
import type { ProcessHub } from '../processes/hub-rules'
import type { Metrics } from '../ops/metrics'
import type { Process } from '../processes/model'
import { type ProgressWrite, writeProgress } from '../processes/queries/reports'

export type ProgressOutcome = { ok: true; process: Process } | { ok: false; error: unknown }
type Waiter = (outcome: ProgressOutcome) => void

interface Slot {
  write: ProgressWrite
  waiters: Waiter[]
  dueAt: number
}

export class ProgressCoalescer {
  private readonly queued = new Map<number, Slot>()
  private readonly lastWriteAt = new Map<number, number>()
  /** Processes whose progress the statement in flight carries. */
  private readonly inFlight = new Set<number>()
  private timer: Timer | null = null
  private timerAt = Infinity
  /** The statements in flight (at most maxInFlight). */
  private readonly active = new Set<Promise<void>>()

  constructor(
    private readonly sql: Sql,
    private readonly hub: ProcessHub,
    private readonly metrics: Metrics,
    private readonly flushMs: number,
    /** A write renews the lease's heartbeat only when it is older than this (see writeProgress). */
    private readonly heartbeatSlackMs = 0,
    /** Statements in flight at once, each for other processes (one process's writes never overlap). */
    private readonly maxInFlight = 2,
    /**
     * PROGRESS_SYNC_COMMIT=off (Postgres only): progress statements commit without waiting for the WAL flush
     * (`set local synchronous_commit = off`). Acks still follow the commit, and the state is visible to every
     * reader at once; a crash of Postgres itself may lose the last ~0.6 s of progress (never a status change,
     * which commits synchronously as before). Measured in bench queue: see README.
     */
    private readonly asyncCommit = false,
  ) {}

  /**
   * Resolves with the committed process (this frame or a newer one of the same worker), or the reason it was refused.
   * `queued` is called once the frame is in the queue: from then on, a flushNow of its process writes it.
   */
  submit(write: ProgressWrite, queued?: () => void): Promise<ProgressOutcome> {
    this.metrics.counters.progress_frames++
    return new Promise((resolve) => {
      const now = Date.now()
      const slot = this.queued.get(write.id)
      if (slot && slot.write.worker_id === write.worker_id && slot.write.worker_token_id === write.worker_token_id && slot.write.attempt === write.attempt) {
        // Newest wins; a frame without a message keeps the one already queued.
        slot.write = { ...write, message: write.message ?? slot.write.message }
        slot.waiters.push(resolve)
        queued?.()
        return
      }
      if (slot) {
        // A different sender for the same process: let the queued one go first, then queue this.
        const resubmit = () => this.submit(write, queued).then(resolve)
        void this.flushNow(write.id).then(resubmit, resubmit)
        return
      }
      // Nothing of this process in flight (nor queued, above): written at once, so a worker that awaits each
      // update does not wait out a flush interval per call (5 awaited updates cost ~400 ms per job before).
      // What arrives while its write is in flight is coalesced, at most one write per PROGRESS_FLUSH_MS.
      const dueAt = this.inFlight.has(write.id) ? Math.max(now, (this.lastWriteAt.get(write.id) ?? 0) + this.flushMs) : now
      this.queued.set(write.id, { write, waiters: [resolve], dueAt })
      queued?.()
      this.schedule(dueAt)
    })
  }

  /** Writes whatever is queued for a process now: a status change must not be overtaken by older progress. */
  async flushNow(id: number) {
    // Nothing of this process pending: no reason to wait for other processes' writes (a slow database
    // would otherwise make a status change wait out their timeout before its own).
    while (this.queued.has(id) || this.inFlight.has(id)) {
      const slot = this.queued.get(id)
      if (slot) slot.dueAt = 0
      this.pump()
      await Promise.all(this.active)
    }
  }

  /** Writes everything queued (shutdown). */
  async flushAll() {
    for (let round = 0; round < 3 && (this.queued.size > 0 || this.active.size > 0); round++) {
      for (const slot of this.queued.values()) slot.dueAt = 0
      this.pump()
      await Promise.all(this.active)
    }
  }

  get queuedCount() {
    return this.queued.size
  }

  private schedule(at: number) {
    if (at >= this.timerAt) return
    if (this.timer) clearTimeout(this.timer)
    this.timerAt = at
    // A timer even when due now: this turn's other frames join it, and the statement's state fan-out
    // (Hub.publishAll afterReplies, setImmediate) then runs after the acks in the same loop iteration.
    this.timer = setTimeout(
      () => {
        this.timer = null
        this.timerAt = Infinity
        this.pump()
      },
      Math.max(0, at - Date.now()),
    )
  }

  /** Starts statements for what is due, up to maxInFlight at once, each for processes none in flight carries. */
  private pump() {
    while (this.active.size < this.maxInFlight) {
      const due = this.takeDue()
      if (due.length === 0) break
      const write = this.flushDue(due).finally(() => {
        this.active.delete(write)
        this.pump()
        let next = Infinity
        for (const s of this.queued.values()) if (s.dueAt < next) next = s.dueAt
        if (Number.isFinite(next)) this.schedule(next)
      })
      this.active.add(write)
    }
  }

  private takeDue(): Slot[] {
    const now = Date.now()
    const due: Slot[] = []
    for (const [id, slot] of this.queued) {
      if (slot.dueAt <= now && !this.inFlight.has(id)) {
        due.push(slot)
        this.queued.delete(id)
        this.lastWriteAt.set(id, now)
      }
    }
    if (due.length > 0) this.forgetOld(now)
    return due
  }

  private async flushDue(due: Slot[]) {
    this.metrics.counters.progress_statements++
    let committed: Process[]
    for (const slot of due) this.inFlight.add(slot.write.id)
    try {
      const writes = due.map((s) => s.write)
      committed = this.asyncCommit
        ? await this.sql.begin(async (tx) => {
            await tx`set local synchronous_commit = off`
            return writeProgress(tx, writes, this.heartbeatSlackMs)
          })
        : await writeProgress(this.sql, writes, this.heartbeatSlackMs)
    } catch (error) {
      for (const slot of due) for (const waiter of slot.waiters) waiter({ ok: false, error })
      return
    } finally {
      for (const slot of due) this.inFlight.delete(slot.write.id)
    }
    this.metrics.counters.progress_writes += committed.length
    // All of them at once: to Redis now (two pipelines for the statement, the process channels first); the
    // local fan-out after the acks below.
    this.hub.publishAll(committed, { afterReplies: true })
    const byId = new Map(committed.map((p) => [p.id, p]))
    for (const slot of due) {
      const process = byId.get(slot.write.id)
      const outcome: ProgressOutcome = process ? { ok: true, process } : { ok: false, error: null }
      for (const waiter of slot.waiters) waiter(outcome)
    }
  }

  /** lastWriteAt only matters within one flush interval; drop the rest so the map stays small. */
  private forgetOld(now: number) {
    if (this.lastWriteAt.size < 10_000) return
    for (const [id, at] of this.lastWriteAt) if (now - at > this.flushMs) this.lastWriteAt.delete(id)
  }
}
