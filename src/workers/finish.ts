// Group commit of workers' terminal frames. complete/review and fail frames (from any socket) that arrive in
// the same event-loop turn, or while the batch before them is in flight, go to Postgres together: one statement
// for all their completes and one for all their fails (each row with its own owner and status guard, and its
// event), then — in the same
// transaction — the claim-next they carry (`complete {…, claim: {wait_ms: 0}}`), one claim statement per
// socket for all that socket's frames whose change applied. A busy worker therefore costs one transaction per
// batch instead of a statement plus a claim transaction per job. Nothing is acked before the commit; what is
// refused (a racing cancel won, a stale attempt) is explained to its frame alone by the caller.
import { SERVER_QUERY_TIMEOUT_MS, type Sql, withDeadline } from '../db/client'
import { isRetryableConflict } from '../errors'
import type { ProcessHub } from '../processes/hub-rules'
import type { Process } from '../processes/model'
import { capLock, claimNext } from '../processes/queries/claims'
import { type CompleteWrite, completeProcesses } from '../processes/queries/completions'
import { type FailWrite, failProcesses } from '../processes/queries/failures'
import type { LeaseToken } from '../processes/queries/transitions'
import type { QueuePolicy } from './queue'

/** At most this many frames per statement; more wait for the next batch. */
const MAX_BATCH = 500

/**
 * How often a batch rolled back by a deadlock is run again before its frames are refused. Its statements lock
 * rows in id order, but a batch holds its completes' rows while its fails' statement waits, and the
 * write-behind's statement locks running rows too: Postgres then rolls one of them back, and nothing of it
 * committed.
 */
const CONFLICT_RETRIES = 5

export interface FinishClaim {
  /** The socket's own key: one claim statement per socket (and types), so each has its own abort signal. */
  key: string
  workerId: string
  types: string[] | null
  max: number
  token: LeaseToken
  signal: AbortSignal
}

export interface FinishOutcome {
  /** The committed process; null when the frame's guard found no row (the caller explains why). */
  changed: Process | null
  /** What the claim-next took (null: not claimed here — the change did not apply, or the socket went away). */
  claimed: Process[] | null
}

/** A terminal frame: a complete (or review), or a fail. */
export type FinishWrite = ({ op: 'complete' } & CompleteWrite) | ({ op: 'fail' } & FailWrite)

interface Entry {
  write: FinishWrite
  claim?: FinishClaim
  resolve: (outcome: FinishOutcome) => void
  reject: (error: unknown) => void
}

class Gone extends Error {
  constructor(readonly keys: Set<string>) {
    super('worker went away')
  }
}

export class FinishBatcher {
  private pending: Entry[] = []
  private running = false
  private scheduled = false
  /** Statements and frames, for the metrics and the tests. */
  batches = 0
  frames = 0
  /** Batches Postgres rolled back to break a deadlock, and that were run again. */
  conflicts = 0

  constructor(
    private readonly sql: Sql,
    private readonly hub: ProcessHub,
    private readonly queue: QueuePolicy,
  ) {}

  submit(write: FinishWrite, claim?: FinishClaim): Promise<FinishOutcome> {
    return new Promise((resolve, reject) => {
      this.pending.push({ write, claim, resolve, reject })
      this.kick()
    })
  }

  private kick() {
    if (this.running || this.scheduled) return
    this.scheduled = true
    // The rest of this turn's frames (one socket read holds many) join the batch.
    setImmediate(() => {
      this.scheduled = false
      void this.drain()
    })
  }

  private async drain() {
    if (this.running) return
    this.running = true
    try {
      while (this.pending.length > 0) {
        // Each process once per statement; a second frame about it waits for the next batch.
        const batch: Entry[] = []
        const ids = new Set<number>()
        const rest: Entry[] = []
        for (const entry of this.pending) {
          if (batch.length < MAX_BATCH && !ids.has(entry.write.id)) {
            ids.add(entry.write.id)
            batch.push(entry)
          } else rest.push(entry)
        }
        this.pending = rest
        await this.flush(batch)
      }
    } finally {
      this.running = false
    }
  }

  private async flush(batch: Entry[]) {
    this.batches++
    this.frames += batch.length
    const noClaim = new Set<string>()
    let result: { changed: Process[]; claimed: Map<string, Process[]> }
    let conflicts = 0
    for (;;) {
      try {
        result = await this.transaction(batch, noClaim)
        break
      } catch (error) {
        if (error instanceof Gone) {
          // A socket closed while its claim ran: roll back (its processes stay pending) and do the rest again.
          for (const key of error.keys) noClaim.add(key)
          continue
        }
        if (isRetryableConflict(error) && conflicts++ < CONFLICT_RETRIES) {
          this.conflicts++
          continue
        }
        for (const entry of batch) entry.reject(error)
        return
      }
    }
    const { changed, claimed } = result
    this.hub.publishAll(changed)
    const all = [...claimed.values()].flat()
    if (all.length > 0) {
      this.queue.markServed(all)
      this.hub.publishAll(all)
    }
    const byId = new Map(changed.map((p) => [p.id, p]))
    for (const entry of batch) {
      const process = byId.get(entry.write.id) ?? null
      let taken: Process[] | null = null
      const mine = process && entry.claim ? claimed.get(entry.claim.key) : undefined
      if (mine) taken = mine.splice(0, entry.claim!.max)
      entry.resolve({ changed: process, claimed: taken })
    }
  }

  private async transaction(batch: Entry[], noClaim: Set<string>) {
    let late = false
    const work = this.sql.begin(async (tx) => {
      const completes: CompleteWrite[] = []
      const fails: FailWrite[] = []
      for (const { write } of batch) {
        const { op, ...row } = write
        if (op === 'complete') completes.push(row as CompleteWrite)
        else fails.push(row as FailWrite)
      }
      const changed = [...(await completeProcesses(tx, completes)), ...(await failProcesses(tx, fails, this.queue.backoff))]
      const claimed = new Map<string, Process[]>()
      const applied = new Set(changed.map((p) => p.id))
      // Per socket: one claim for all its frames whose change applied.
      const groups = new Map<string, FinishClaim>()
      for (const { write, claim } of batch) {
        if (!claim || !applied.has(write.id) || noClaim.has(claim.key) || claim.signal.aborted) continue
        const group = groups.get(claim.key)
        if (group) group.max += claim.max
        else groups.set(claim.key, { ...claim })
      }
      if (groups.size > 0 && this.queue.caps) await capLock(tx)
      for (const [key, g] of groups) {
        claimed.set(
          key,
          await claimNext(tx, {
            workerId: g.workerId,
            types: g.types,
            max: g.max,
            served: this.queue.turns(),
            caps: this.queue.caps,
            token: g.token,
            rate: this.queue.rate,
          }),
        )
      }
      const gone = new Set([...groups].filter(([key, g]) => g.signal.aborted && (claimed.get(key)?.length ?? 0) > 0).map(([key]) => key))
      if (gone.size > 0) throw new Gone(gone)
      // Past the server's query deadline its frames were told `unavailable`: nothing of it may commit.
      if (late) throw new Error('finish batch outlived the query deadline')
      return { changed, claimed }
    })
    return withDeadline(work, SERVER_QUERY_TIMEOUT_MS, () => (late = true))
  }
}
