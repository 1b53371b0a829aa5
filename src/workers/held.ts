// The leases this instance holds, with each process's live state (src/processes/live.ts): the newest state
// accepted from its worker, whether the hub has it yet, and how much of it the database has. Frames about a
// held process are fenced here, in memory: no database read on the way to an ack.
import { LIVE_LEAD_MAX, type LiveView } from '../processes/live'
import type { Process } from '../processes/model'
import type { LiveWrite } from '../processes/queries/reports'

/** What a live frame changes: progress (progress), result_summary (update), the message (either). */
export interface LiveChange {
  progress?: number
  message?: string | null
  result_summary?: Process['result_summary']
}

export interface Lease {
  readonly id: number
  readonly workerId: string
  readonly tokenId: number
  /** The attempt the lease was taken with: frames naming another are refused (fencing). */
  readonly attempt: number
  /** The row's live_base for this lease: the holder's writes are guarded by it. */
  readonly base: number
  /** The newest state: committed, or accepted and not yet written. */
  state: Process
  /** Whether `state` went to the hub (a new accepted state after it takes the next version). */
  published: boolean
  /** The highest version the database is known to hold. */
  written: number
  /** When a write of this lease last went out (ms): at most one per PROGRESS_PERSIST_MS. */
  writtenAt: number
  /** When the row's heartbeat_at was last renewed (ms), and whether a frame since asks for it again. */
  beatAt: number
  beatDue: boolean
  /** An update changed result_summary since the last write took it (most writes leave the jsonb alone). */
  resultDirty: boolean
  /** Live output: the last seq and the bytes so far, read from the table at the lease's first chunk (null before). */
  output: { seq: number; bytes: number } | null
  /** That read, while it is on its way. */
  outputLoad: Promise<{ seq: number; bytes: number }> | null
  /**
   * Another instance took the lease over (a hello of the same worker there): frames here are no longer
   * accepted, but a change that ends it is still passed to the worker's sockets here (it may listen on both).
   */
  moved: boolean
}

/** The version a holder's next change follows: its newest state's, or its live_base after a takeover. */
export const holderVersion = (lease: Lease) => Math.max(lease.state.version, lease.base)

/** Whether a state may be shown before its write: within LIVE_LEAD_MAX of what the row holds (its version or live_base). */
const withinLead = (lease: Lease) => lease.state.version - Math.max(lease.written, lease.base) <= LIVE_LEAD_MAX

export class HeldLeases implements LiveView {
  private readonly leases = new Map<number, Lease>()
  /** Held processes whose state the database does not have yet, or whose heartbeat is due. */
  private readonly dirty = new Set<number>()
  /** Held processes whose newest accepted state has not gone to the hub yet. */
  private readonly unpublished = new Set<number>()

  get size() {
    return this.leases.size
  }

  get(id: number): Lease | undefined {
    return this.leases.get(id)
  }

  newest(id: number): Process | undefined {
    const lease = this.leases.get(id)
    return lease && !lease.moved ? lease.state : undefined
  }

  /** The lease moved to another instance: it is kept only to pass on the change that ends it. */
  moved(lease: Lease) {
    lease.moved = true
    this.dirty.delete(lease.id)
    this.unpublished.delete(lease.id)
  }

  /** Takes (or renews) the lease of a committed running state: its claim, start or a takeover. */
  hold(state: Process, o: { workerId: string; tokenId: number; base: number }): Lease {
    const now = Date.now()
    const lease: Lease = {
      id: state.id,
      workerId: o.workerId,
      tokenId: o.tokenId,
      attempt: state.attempts,
      base: o.base,
      state,
      published: true,
      written: state.version,
      writtenAt: now,
      beatAt: now,
      beatDue: false,
      resultDirty: false,
      output: null,
      outputLoad: null,
      moved: false,
    }
    this.leases.set(state.id, lease)
    this.dirty.delete(state.id)
    this.unpublished.delete(state.id)
    return lease
  }

  release(id: number): Lease | undefined {
    const lease = this.leases.get(id)
    if (!lease) return undefined
    this.leases.delete(id)
    this.dirty.delete(id)
    this.unpublished.delete(id)
    return lease
  }

  ofWorker(workerId: string): Lease[] {
    const out: Lease[] = []
    for (const lease of this.leases.values()) if (lease.workerId === workerId) out.push(lease)
    return out
  }

  /**
   * An accepted live state: progress, message or a live result (an update's merged result_summary) as the
   * worker sent them. A state already handed to the hub is never changed: the new one is a new object with the
   * next version; one not handed yet (this turn's) is replaced under the same version, so a burst in one turn
   * is one state on the streams.
   */
  accept(lease: Lease, change: LiveChange): Process {
    const before = lease.state
    if (change.result_summary !== undefined) lease.resultDirty = true
    const state: Process = {
      ...before,
      progress: change.progress ?? before.progress,
      message: change.message ?? before.message,
      result_summary: change.result_summary === undefined ? before.result_summary : change.result_summary,
      // After a takeover, past the old holder's reach (live_base); otherwise the next version.
      version: lease.published ? holderVersion(lease) + 1 : before.version,
      updated_at: new Date().toISOString(),
    }
    lease.state = state
    lease.published = false
    lease.beatDue = true
    this.dirty.add(lease.id)
    // Past LIVE_LEAD_MAX ahead of the row, a state waits for its write before it is shown (the database is slow
    // or away); the write-behind hands it on once written.
    if (withinLead(lease)) this.unpublished.add(lease.id)
    return state
  }

  /** A heartbeat: the row's heartbeat_at is renewed by the write-behind (at most once per beat interval). */
  beat(lease: Lease) {
    lease.beatDue = true
    this.dirty.add(lease.id)
  }

  /** A commit by the holder (a log line, a terminal frame): the row now holds this state. */
  committed(lease: Lease, state: Process) {
    lease.state = state
    lease.published = true
    lease.written = Math.max(lease.written, state.version)
    lease.beatAt = Date.now()
    lease.beatDue = false
    lease.resultDirty = false
    this.dirty.delete(lease.id)
    this.unpublished.delete(lease.id)
  }

  /** The accepted states not yet handed to the hub; they count as handed from now on. */
  takeUnpublished(): Process[] {
    if (this.unpublished.size === 0) return []
    const states: Process[] = []
    for (const id of this.unpublished) {
      const lease = this.leases.get(id)
      if (!lease || lease.published) continue
      lease.published = true
      states.push(lease.state)
    }
    this.unpublished.clear()
    return states
  }

  /**
   * What the write-behind writes now: every dirty lease (of `only`, when given) whose last write is at least
   * `intervalMs` old, and every one whose heartbeat is due after `beatMs` (with both 0: all of them).
   */
  takeDue(now: number, intervalMs: number, beatMs: number, only?: ReadonlySet<number>): { lease: Lease; write: LiveWrite }[] {
    const due: { lease: Lease; write: LiveWrite }[] = []
    for (const id of only ?? this.dirty) {
      const lease = this.leases.get(id)
      if (!lease || lease.moved) {
        this.dirty.delete(id)
        continue
      }
      const stateDue = lease.state.version > lease.written && now - lease.writtenAt >= intervalMs
      const beat = lease.beatDue && now - lease.beatAt >= beatMs
      if (!stateDue && !beat) continue
      const s = lease.state
      const result = stateDue && lease.resultDirty
      due.push({
        lease,
        write: {
          id,
          progress: s.progress,
          message: s.message,
          // A heartbeat alone renews the lease and leaves the state to its own interval: a version the row
          // has already changes nothing (see liveStatement).
          version: stateDue ? s.version : lease.written,
          updated_at: s.updated_at,
          worker_id: lease.workerId,
          attempt: lease.attempt,
          base: lease.base,
          beat,
          result,
          ...(result ? { result_summary: s.result_summary } : {}),
        },
      })
      if (stateDue) lease.writtenAt = now
      if (result) lease.resultDirty = false
      if (beat) {
        lease.beatAt = now
        lease.beatDue = false
      }
      // Still dirty: a state left to its interval, or a heartbeat not due yet.
      if (!(lease.state.version > lease.written && !stateDue) && !lease.beatDue) this.dirty.delete(id)
    }
    return due
  }

  /** A write went in: the row holds `version`; a state that waited for it (LIVE_LEAD_MAX) may now be shown. */
  wrote(lease: Lease, version: number): boolean {
    lease.written = Math.max(lease.written, version)
    if (lease.state.version > lease.written) this.dirty.add(lease.id)
    if (!lease.published && withinLead(lease)) {
      this.unpublished.add(lease.id)
      return true
    }
    return false
  }

  /** A write failed: what it carried is dirty again (its heartbeat and result too). */
  unwritten(lease: Lease, beat: boolean, result = false) {
    if (beat) lease.beatDue = true
    if (result) lease.resultDirty = true
    lease.writtenAt = 0
    this.dirty.add(lease.id)
  }

  get dirtyCount() {
    return this.dirty.size
  }
}
