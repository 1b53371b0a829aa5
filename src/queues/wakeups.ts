// Wake-ups of waiting claims: "count processes of a type are claimable (now, or at atMs)". They go to this
// instance's waiting claims and, as the hub's `work` signal, to every other instance's; a claim sleeps on
// them instead of polling the database (src/workers/leases.ts).
import type { Hub } from '../hub/hub'

/** A waiting claim: how many processes of `type` it takes from a wake-up (0 when not its type). */
export type WorkListener = (type: string) => number

/** The hub signal the wake-ups travel on (Redis channel `work`): `<type> <count> [<atMs>]`. */
export const WORK_SIGNAL = 'work'

export class WorkWakeups {
  /** Waiting claims, oldest first; each takes a wake-up meant for its types and says how many it can take. */
  private readonly listeners = new Set<WorkListener>()
  /** Wake-ups for work due later (a delayed process, a retry's backoff): one timer per due time. */
  private readonly dueTimers = new Map<number, { timer: Timer; wakes: Map<string, number> }>()

  constructor(private readonly hub: Pick<Hub, 'broadcast' | 'onSignal'>) {
    hub.onSignal(WORK_SIGNAL, (payload) => {
      // null: the link to the other instances came back, and what it carried meanwhile is lost: look again.
      if (payload === null) return this.wake('*')
      const [type, count, at] = payload.split(' ')
      if (!type) return
      const n = Math.max(1, Number(count) || 1)
      if (at !== undefined && Number(at) > Date.now()) this.wakeAt(type, n, Number(at))
      else this.wake(type, n)
    })
  }

  /**
   * `count` new or retried processes of a type (due at `atMs`, or now): wake that many waiting claims here and,
   * through the hub, on every instance — not every waiting claim, which would cost a transaction each for one
   * process (50 waiting claims: 50 transactions, 49 of them empty).
   */
  announce(type: string, count = 1, atMs?: number) {
    if (atMs !== undefined && atMs > Date.now()) this.wakeAt(type, count, atMs)
    else this.wake(type, count)
    this.hub.broadcast(WORK_SIGNAL, `${type} ${count}${atMs === undefined ? '' : ` ${atMs}`}`)
  }

  /**
   * Wakes waiting claims for `count` processes of `type`, oldest claim first: a claim that can take several
   * (`max`) counts for that many. `*` (after a Redis outage) wakes every waiting claim.
   */
  wake(type: string, count = 1) {
    let left = type === '*' ? Infinity : count
    for (const listener of this.listeners) {
      if (left <= 0) break
      const taken = listener(type)
      if (taken > 0) {
        this.listeners.delete(listener)
        left -= taken
      }
    }
  }

  /** Work due later: a timer on its due time (shared by everything due then) wakes claims when it comes. */
  private wakeAt(type: string, count: number, atMs: number) {
    let due = this.dueTimers.get(atMs)
    if (!due) {
      const wakes = new Map<string, number>()
      const timer = setTimeout(
        () => {
          this.dueTimers.delete(atMs)
          for (const [t, n] of wakes) this.wake(t, n)
        },
        Math.max(0, atMs - Date.now()) + 5,
      ) // a few ms late rather than early: the row must be due when claimed
      timer.unref?.()
      this.dueTimers.set(atMs, (due = { timer, wakes }))
    }
    due.wakes.set(type, (due.wakes.get(type) ?? 0) + count)
  }

  /** Listens for work: the listener answers how many processes it takes from a wake-up (0: not its type). */
  onWork(listener: WorkListener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  get waiting(): number {
    return this.listeners.size
  }

  close() {
    for (const due of this.dueTimers.values()) clearTimeout(due.timer)
    this.dueTimers.clear()
  }
}
