// HTTP plumbing shared by the monitors: their error, the fetch and EventSource they take, URLs, error bodies.
import type { Process } from './shapes.ts'

/** Why monitoring stopped for good: the server refused (401, 403, 404) or the runtime cannot stream. */
export class MonitorError extends Error {
  override readonly name = 'MonitorError'

  constructor(
    /** The HTTP status, or 0 when no response was involved. */
    readonly status: number,
    /**
     * The API's error code (`unauthenticated`, `forbidden`, `not_found`), `unsupported`, or `cors`: in a browser,
     * the server answers but not to this page's origin (it is not in the server's CORS_ORIGINS).
     */
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>

/** The part of the standard `EventSource` used here; the `eventsource` npm package fits too. */
export interface EventSourceLike {
  addEventListener(type: string, listener: (event: MessageEvent) => void): void
  close(): void
}
export type EventSourceConstructor = new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike

export const FATAL_STATUSES = new Set([401, 403, 404])

export const FATAL_CODES: Record<number, string> = { 401: 'unauthenticated', 403: 'forbidden', 404: 'not_found' }

// Called through a closure: a browser's `fetch` throws "Illegal invocation" when
// invoked as a method of some other object.
export const globalFetch: FetchLike = (input, init) => globalThis.fetch(input, init)

export function globalEventSource(): EventSourceConstructor | undefined {
  return (globalThis as { EventSource?: EventSourceConstructor }).EventSource
}

export function bearer(token: string | undefined): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {}
}

export function trimBase(baseUrl: string): string {
  return baseUrl.replace(/\/+$/, '')
}

export function withQuery(url: string, params: Record<string, string | undefined>): string {
  const query = new URLSearchParams()
  for (const [key, value] of Object.entries(params)) if (value !== undefined) query.set(key, value)
  const text = query.toString()
  if (!text) return url
  return `${url}${url.includes('?') ? '&' : '?'}${text}`
}

export function isEventStream(response: Response): boolean {
  return (response.headers.get('Content-Type') ?? '').toLowerCase().startsWith('text/event-stream')
}

/** Drop a body we will not read (frees the connection); false, for `return discard(...)` in pollers. */
export async function discard(response: Response): Promise<false> {
  await response.body?.cancel().catch(() => {})
  return false
}

export async function errorFrom(response: Response): Promise<MonitorError> {
  let code = FATAL_CODES[response.status] ?? 'http_error'
  let message = `HTTP ${response.status}`
  try {
    const body = (await response.json()) as { error?: { code?: unknown; message?: unknown } }
    if (typeof body.error?.code === 'string') code = body.error.code
    if (typeof body.error?.message === 'string') message = body.error.message
  } catch {
    // Not the API's error body (a proxy's page, say): keep the status-derived code.
  }
  return new MonitorError(response.status, code, message)
}

/** Accept only what looks like a process: ignore a malformed frame rather than break the feed. */
export function parseProcess(text: string): Process | null {
  try {
    const value = JSON.parse(text) as Partial<Process> | null
    return value && typeof value.id === 'number' && typeof value.version === 'number' ? (value as Process) : null
  } catch {
    return null
  }
}

/** Network failures in a row, each shown by a probe to be a CORS refusal, before monitoring stops with `cors`. */
export const CORS_REFUSALS_TO_STOP = 3

/**
 * A page's fetch to another origin that the server does not allow fails with a bare TypeError, exactly as an
 * unreachable server does: the page sees no status and no header. A `no-cors` request to the same URL tells the
 * two apart (it gets an opaque answer when the server is up). Refused that many times in a row, a request
 * rejects with `MonitorError(0, 'cors')`, which stops the monitor; any answer resets the count. Outside a
 * browser (no `location`) there is no CORS, and the fetch is returned as it is.
 */
export function corsAware(fetchImpl: FetchLike): FetchLike {
  const page = (globalThis as { location?: { origin?: string; href?: string } }).location
  if (!page?.origin || page.origin === 'null') return fetchImpl
  let refusals = 0
  return async (input, init) => {
    try {
      const response = await fetchImpl(input, init)
      refusals = 0
      return response
    } catch (error) {
      if (!(error instanceof TypeError) || init?.signal?.aborted) throw error
      const target = new URL(input, page.href)
      if (target.origin === page.origin || !(await answersWithoutCors(fetchImpl, target.href))) throw error
      if (++refusals < CORS_REFUSALS_TO_STOP) throw error
      throw new MonitorError(
        0,
        'cors',
        `${target.origin} answers, but not to this page's origin ${page.origin} (CORS): add ${page.origin} to the server's CORS_ORIGINS`,
      )
    }
  }
}

/** True when the server answers a `no-cors` request (opaque: nothing is read, the stream is not kept open). */
async function answersWithoutCors(fetchImpl: FetchLike, url: string): Promise<boolean> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), 5000)
  try {
    await fetchImpl(url, { mode: 'no-cors', signal: controller.signal })
    return true
  } catch {
    return false
  } finally {
    clearTimeout(timer)
    controller.abort()
  }
}
