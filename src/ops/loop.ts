// The shape of every background loop here (the lease sweep, retention): an explicit state and an abortable
// sleep (pg-boss's worker is the model). A pass that throws is logged and counted; consecutive failures back
// the loop off, up to 8× its interval, while the database is unhappy. The loop itself never throws. A pass
// may return `{sleepMs}`, how long to sleep before the next (at most the interval: the tick loop sleeps until
// the next tick), and wake() cuts a sleep short.
import type { Logger } from './log'

export class BackgroundLoop {
  private stopping = false
  private wake_: (() => void) | null = null
  private running: Promise<void> | null = null
  private consecutiveErrors = 0

  constructor(
    private readonly name: string,
    private readonly log: Logger,
    private readonly intervalMs: number,
    private readonly pass: () => Promise<unknown>,
    private readonly onError?: (error: unknown) => void,
  ) {}

  start() {
    this.running ??= this.run()
  }

  /** Ends the sleep at once and waits for a pass in progress. */
  async stop() {
    this.stopping = true
    this.wake_?.()
    await this.running
  }

  private async run() {
    while (!this.stopping) {
      let sleepMs = this.intervalMs
      try {
        const asked = (await this.pass()) as { sleepMs?: unknown } | null | undefined
        if (typeof asked?.sleepMs === 'number') sleepMs = Math.max(0, Math.min(asked.sleepMs, this.intervalMs))
        this.consecutiveErrors = 0
      } catch (error) {
        this.consecutiveErrors++
        this.onError?.(error)
        this.log.warn(`${this.name} failed`, { error: String(error), consecutive: this.consecutiveErrors })
        sleepMs = this.intervalMs * Math.min(8, 2 ** this.consecutiveErrors)
      }
      if (this.stopping) break
      await this.sleep(sleepMs)
    }
  }

  /** Ends the current sleep (if any): the next pass starts at once. */
  wake() {
    this.wake_?.()
  }

  private sleep(ms: number) {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.wake_ = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }
}
