// Rate limits: token buckets per credential and per workspace, in this instance's memory. With N
// instances behind a balancer a client gets up to N times the rate; what they protect is each instance's
// event loop and the shared database from one caller (README "Limits").
import { HttpError } from '../errors'

interface Bucket {
  tokens: number
  at: number
}

// Buckets idle long enough to be full again are dropped when the map grows past this (a flood of keys).
const MAX_BUCKETS = 100_000

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>()

  /** `perSecond` 0 = no limit. */
  constructor(
    private readonly perSecond: number,
    private readonly capacity: number,
  ) {}

  /** Takes one request's worth; returns 0 if allowed, else the seconds until one is (Retry-After). */
  take(key: string, now = performance.now()): number {
    if (this.perSecond === 0) return 0
    let bucket = this.buckets.get(key)
    if (!bucket) {
      if (this.buckets.size >= MAX_BUCKETS) this.prune(now)
      this.buckets.set(key, (bucket = { tokens: this.capacity, at: now }))
    } else {
      bucket.tokens = Math.min(this.capacity, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond)
      bucket.at = now
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1
      return 0
    }
    return Math.max(1, Math.ceil((1 - bucket.tokens) / this.perSecond))
  }

  /** What take would answer, without taking: 0 while a request's worth is left, else the seconds until one is. */
  peek(key: string, now = performance.now()): number {
    if (this.perSecond === 0) return 0
    const bucket = this.buckets.get(key)
    if (!bucket) return 0
    const tokens = Math.min(this.capacity, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond)
    return tokens >= 1 ? 0 : Math.max(1, Math.ceil((1 - tokens) / this.perSecond))
  }

  private prune(now: number) {
    const fullAfterMs = (this.capacity / this.perSecond) * 1000
    for (const [key, bucket] of this.buckets) if (now - bucket.at >= fullAfterMs) this.buckets.delete(key)
    if (this.buckets.size >= MAX_BUCKETS) this.buckets.clear()
  }
}

export function rateLimited(retryAfterS: number, what: string) {
  return new HttpError(429, 'rate_limited', `Too many requests for this ${what}; retry after ${retryAfterS} s`, undefined, {
    'Retry-After': String(retryAfterS),
  })
}
