// Point look-ups by id made close together go to the database as one `id = any(...)` query (DataLoader's
// idea). Through postgres.js on Bun a query costs far more than a row: `npm run bench -- rest` measured ~115 µs
// of server CPU per single-row select (most of it socket writes and reads), so under load one query per batch
// instead of one per request is what lets GET /processes/{id} outrun a bare one-select-per-request server.
//
// A look-up is never answered by a query sent before it was asked for: it waits for the next batch, which
// starts after it arrived, so a read made after a committed change always sees that change.
interface Waiter<V> {
  resolve: (row: V | null) => void
  reject: (error: unknown) => void
}

export class Batcher<V extends { id: number }> {
  private waiting = new Map<number, Waiter<V>[]>()
  private scheduled = false
  private inFlight = 0

  constructor(
    private readonly fetchRows: (ids: number[]) => PromiseLike<V[]>,
    /**
     * Batches in flight at once. While they are out, new look-ups queue for the next one, so batches grow
     * with the load by themselves; under light load a look-up goes out on the next turn of the event loop.
     */
    private readonly maxInFlight = 2,
    private readonly maxBatch = 1000,
  ) {}

  /** The row with this id, or null when there is none. */
  load(id: number): Promise<V | null> {
    return new Promise<V | null>((resolve, reject) => {
      const waiters = this.waiting.get(id)
      if (waiters) waiters.push({ resolve, reject })
      else this.waiting.set(id, [{ resolve, reject }])
      this.schedule()
    })
  }

  private schedule() {
    if (this.scheduled || this.inFlight >= this.maxInFlight) return
    this.scheduled = true
    // After this turn's I/O: every request that arrived in it joins the same batch.
    setImmediate(this.run)
  }

  private readonly run = () => {
    this.scheduled = false
    if (this.waiting.size === 0) return
    const batch = this.take()
    this.inFlight++
    Promise.resolve(this.fetchRows([...batch.keys()]))
      .then(
        (rows) => {
          for (const row of rows) {
            for (const waiter of batch.get(row.id) ?? []) waiter.resolve(row)
            batch.delete(row.id)
          }
          for (const waiters of batch.values()) for (const waiter of waiters) waiter.resolve(null)
        },
        (error) => {
          for (const waiters of batch.values()) for (const waiter of waiters) waiter.reject(error)
        },
      )
      .finally(() => {
        this.inFlight--
        if (this.waiting.size > 0) this.schedule()
      })
  }

  /** Up to maxBatch ids, oldest first; the rest wait for the next batch. */
  private take(): Map<number, Waiter<V>[]> {
    if (this.waiting.size <= this.maxBatch) {
      const all = this.waiting
      this.waiting = new Map()
      return all
    }
    const batch = new Map<number, Waiter<V>[]>()
    for (const [id, waiters] of this.waiting) {
      if (batch.size === this.maxBatch) break
      batch.set(id, waiters)
      this.waiting.delete(id)
    }
    return batch
  }
}
