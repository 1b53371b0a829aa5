// Waiting in tests and benchmark scripts: one abortable sleep, one deadline (waitFor polls a condition, within
// bounds a promise). Deadlines here end a failing run; they are not speed expectations.

/** Resolves after `ms`, or at once when `signal` aborts (never rejects); the timer is cleared either way. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
  })
}

export interface WaitOptions {
  /** How often to check again (default 20 ms). */
  pollMs?: number
  /** Called before each pause with a function that ends the pause early (e.g. when a frame arrives). */
  wake?: (resume: () => void) => void
}

/** Resolves once `check` holds; throws "timed out waiting for <what>" after `timeoutMs`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  what: string | (() => string) = 'condition',
  o: WaitOptions = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`)
    const woken = new AbortController()
    o.wake?.(() => woken.abort())
    await sleep(Math.min(o.pollMs ?? 20, Math.max(0, deadline - Date.now()) + 1), woken.signal)
  }
}

/** `work`'s value, or `otherwise` if it has not settled within `ms` (work itself is not cancelled). */
export async function within<T, U>(work: PromiseLike<T>, ms: number, otherwise: U): Promise<T | U> {
  const timeUp = new AbortController()
  try {
    return await Promise.race([work, sleep(ms, timeUp.signal).then(() => otherwise)])
  } finally {
    timeUp.abort()
  }
}
