// The queue's policy, from the config: attempts and backoff per type, concurrency caps, and the fair turns
// between workspaces that this instance's claims take.
import { type Config, typeDefaults } from '../config'
import type { Process } from '../processes/model'
import type { ClaimOptions } from '../processes/queries/claims'
import type { Backoff } from '../processes/queries/failures'
import type { RateLimits } from '../queues/queries'

/** Workspaces this instance remembers serving; one it forgot goes first again, as one never served. */
const MAX_REMEMBERED = 1000

export class QueuePolicy {
  readonly backoff: Backoff
  private readonly maxAttempts = new Map<string, number>()
  private readonly typeCaps: Record<string, number> = {}
  readonly caps: NonNullable<ClaimOptions['caps']> | undefined
  /** TYPE_DEFAULTS.<type>.rate, for the claims (undefined: no type is rate-limited). */
  readonly rate: RateLimits | undefined
  /** workspace → the turn it was last served at; in the order served, oldest first. */
  private readonly served = new Map<number, number>()
  private turn = 0

  constructor(private readonly config: Config) {
    const types = typeDefaults(config)
    const byType: Record<string, [number, number]> = {}
    const rate: RateLimits = {}
    for (const [type, d] of Object.entries(types)) {
      if (d.max_attempts !== undefined) this.maxAttempts.set(type, d.max_attempts)
      if (d.retry_base_ms !== undefined || d.retry_max_ms !== undefined) {
        byType[type] = [d.retry_base_ms ?? config.RETRY_BASE_MS, d.retry_max_ms ?? config.RETRY_MAX_MS]
      }
      if (d.concurrency !== undefined) this.typeCaps[type] = d.concurrency
      if (d.rate !== undefined) rate[type] = d.rate
    }
    this.rate = Object.keys(rate).length > 0 ? rate : undefined
    this.backoff = { baseMs: config.RETRY_BASE_MS, maxMs: config.RETRY_MAX_MS, byType }
    const capped = Object.keys(this.typeCaps).length > 0 || config.WORKSPACE_CONCURRENCY > 0
    this.caps = capped ? { types: this.typeCaps, workspace: config.WORKSPACE_CONCURRENCY } : undefined
  }

  /** A new process's max_attempts: the creator's, else its type's, else DEFAULT_MAX_ATTEMPTS. */
  maxAttemptsFor(type: string, requested?: number): number {
    return requested ?? this.maxAttempts.get(type) ?? this.config.DEFAULT_MAX_ATTEMPTS
  }

  /** Whether finishing a process of this type may make room for a waiting claim (a cap was full). */
  capsAffect(type: string): boolean {
    return this.caps !== undefined && (this.caps.workspace > 0 || type in this.typeCaps)
  }

  /**
   * When the next rate window of these types opens (ms since the epoch), if any of them is rate-limited: a
   * claim that found nothing looks again then, since a spent window is a reason to find nothing that no
   * new work announces.
   */
  nextRateWindowAt(types: string[] | null, nowMs = Date.now()): number | null {
    if (!this.rate) return null
    let next: number | null = null
    for (const [type, { per_ms }] of Object.entries(this.rate)) {
      if (types !== null && !types.includes(type)) continue
      const at = (Math.floor(nowMs / per_ms) + 1) * per_ms
      if (next === null || at < next) next = at
    }
    return next
  }

  /** The turns to hand a claim (ClaimOptions.served). */
  turns(): { workspaceIds: number[]; turns: number[] } {
    return { workspaceIds: [...this.served.keys()], turns: [...this.served.values()] }
  }

  /** Claimed: these processes' workspaces were served now, in this order. */
  markServed(processes: readonly Process[]) {
    for (const p of processes) {
      this.served.delete(p.workspace_id)
      this.served.set(p.workspace_id, ++this.turn)
    }
    while (this.served.size > MAX_REMEMBERED) this.served.delete(this.served.keys().next().value!)
  }
}
