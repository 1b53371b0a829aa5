// The shape of every background loop here (the lease sweep, retention): an explicit state and an abortable
// sleep (pg-boss's worker is the model). A pass that throws is logged and counted; consecutive failures back
// the loop off, up to 8× its interval, while the database is unhappy. The loop itself never throws.
import type { Logger } from './log'

export class BackgroundLoop {
  private stopping = false
  private wake: (() => void) | null = null
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
    this.wake?.()
    await this.running
  }

  private async run() {
    while (!this.stopping) {
      try {
        await this.pass()
        this.consecutiveErrors = 0
      } catch (error) {
        this.consecutiveErrors++
        this.onError?.(error)
        this.log.warn(`${this.name} failed`, { error: String(error), consecutive: this.consecutiveErrors })
      }
      await this.sleep(this.intervalMs * Math.min(8, 2 ** this.consecutiveErrors))
    }
  }

  private sleep(ms: number) {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.wake = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }
}
