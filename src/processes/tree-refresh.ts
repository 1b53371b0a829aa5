// The parents' streams. A child's change updates its parent's row in the database, in the child's
// own statement (sql/013_trees.sql), but only the child's state is published by the code that made it. This
// sees every state published on this instance (hub.onPublish: commits, and accepted live progress) and
// re-reads the parents of the children among them, coalesced: at most one read per REFRESH_MS for all dirty
// parents together, so a parent's stream gets at most 1000 / REFRESH_MS updates a second from this instance
// however fast its children report. The first change after a quiet spell is read at once (leading edge), and
// so is a change that may be the parent's last child settling, so `done` is not held back by the throttle.
//
// Progress is aggregated here, not in the children's statements (sql/013_trees.sql says why): each read first
// writes the dirty parents' weighted mean of their committed children (aggregateProgress, one statement), so
// the mean is the same on every instance and survives any crash. The same statement recounts the running
// children, which splits the unfinished (exact in the children's statements) into running and pending: claims
// do not touch their parent (sql/016_tree_claims.sql), so this read is what shows them. A child's live progress reaches its row
// through the write-behind (every PROGRESS_PERSIST_MS); a parent's progress therefore lags its children's live
// progress by at most PROGRESS_PERSIST_MS + REFRESH_MS. No instance needs another's live states.
import type { Sql } from '../db/client'
import type { Logger } from '../ops/log'
import type { ProcessHub } from './hub-rules'
import type { Process } from './model'
import { getProcesses } from './queries/reads'
import { aggregateProgress } from './queries/trees'

/** 120, not 100: with the snapshot and one early read for a settling parent, a stream stays at ≤ 10 updates a second. */
export const REFRESH_MS = 120

const SETTLED = new Set(['completed', 'failed', 'cancelled', 'waiting_review'])

export class TreeRefresher {
  private readonly dirty = new Set<number>()
  /** Per parent read before: its unfinished children then, and the settled child states seen since. */
  private readonly known = new Map<number, { unfinished: number; settledSince: number; version: number }>()
  private timer: Timer | null = null
  private reading: Promise<void> | null = null
  private lastReadAt = 0
  /** A change that may settle a parent arrived: the next read goes at once, even right after another. */
  private urgent = false
  /** Parents read early without their aggregate: the next regular read aggregates them. */
  private readonly unaggregated = new Set<number>()
  private stopped = false
  /** Reads and parents published, for the benchmark and the tests. */
  reads = 0
  published = 0

  constructor(
    private readonly sql: Sql,
    private readonly hub: ProcessHub,
    private readonly log: Logger,
    private readonly intervalMs = REFRESH_MS,
  ) {}

  /** Every state published on this instance (hub.onPublish). */
  observe(states: readonly Process[]) {
    let urgent = false
    for (const state of states) {
      const parentId = state.parent_id
      if (parentId === null || parentId === undefined) continue
      this.dirty.add(parentId)
      if (SETTLED.has(state.status)) {
        const k = this.known.get(parentId)
        if (k && ++k.settledSince >= k.unfinished) urgent = true
      }
    }
    if (this.dirty.size > 0) this.schedule(urgent)
  }

  private schedule(urgent: boolean) {
    if (this.stopped) return
    if (urgent) this.urgent = true
    const wait = urgent ? 0 : Math.max(0, this.lastReadAt + this.intervalMs - Date.now())
    if (this.timer !== null) {
      if (!urgent) return
      clearTimeout(this.timer)
    }
    this.timer = setTimeout(() => {
      this.timer = null
      void this.read()
    }, wait)
    // A read due is no reason to keep a stopping process alive.
    this.timer.unref?.()
  }

  private async read() {
    if (this.reading) {
      await this.reading
      if ((this.dirty.size > 0 || this.unaggregated.size > 0) && this.timer === null) this.schedule(this.urgent)
      return
    }
    if (this.dirty.size === 0 && this.unaggregated.size === 0) return
    const urgent = this.urgent
    this.urgent = false
    const ids = [...this.dirty]
    this.dirty.clear()
    if (!urgent) {
      const seen = new Set(ids)
      for (const id of this.unaggregated) if (!seen.has(id)) ids.push(id)
      this.unaggregated.clear()
    }
    this.lastReadAt = Date.now()
    const run = (async () => {
      try {
        this.reads++
        // Progress first (the parents whose mean moved are changed and returned), then the rest as they are.
        // An early read (a parent may have settled) skips the aggregate: a settled parent's progress is 100 anyway,
        // and the next regular read aggregates the others.
        const moved = urgent ? [] : await aggregateProgress(this.sql, ids)
        if (urgent) for (const id of ids) this.unaggregated.add(id)
        const movedIds = new Set(moved.map((p) => p.id))
        const parents = [
          ...moved,
          ...(await getProcesses(
            this.sql,
            ids.filter((id) => !movedIds.has(id)),
          )),
        ]
        const fresh: Process[] = []
        for (const p of parents) {
          const before = this.known.get(p.id)
          // An early read publishes only what it is for, a parent that changed status (settled, or pending for its
          // finalize); the others wait for the regular read, so no stream gets more than its rate.
          const unfinished = p.children ? p.children.pending + p.children.running : 0
          if (urgent && before && p.status === 'running') {
            this.known.set(p.id, { unfinished, settledSince: 0, version: before.version })
            this.dirty.add(p.id)
            continue
          }
          if (SETTLED.has(p.status)) this.known.delete(p.id)
          else this.known.set(p.id, { unfinished, settledSince: 0, version: p.version })
          if (before && before.version >= p.version) continue
          fresh.push(p)
        }
        if (fresh.length > 0) {
          this.published += fresh.length
          this.hub.publishAll(fresh)
          // A parent whose children ended and that finalizes is pending again: wake a claim for it.
          for (const p of fresh) if (p.status === 'pending') this.hub.work.announce(p.type)
        }
      } catch (error) {
        for (const id of ids) this.dirty.add(id)
        this.log.warn('tree parents not refreshed; retrying', { error: String(error) })
      }
    })()
    this.reading = run
    try {
      await run
    } finally {
      this.reading = null
    }
    if (this.dirty.size > 0 || this.unaggregated.size > 0) this.schedule(this.urgent)
  }

  stop() {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
  }
}
