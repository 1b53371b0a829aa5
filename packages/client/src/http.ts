// HTTP plumbing shared by the monitors: their error, the fetch and EventSource they take, URLs, error bodies.
import type { Process } from './shapes.ts'

/** Why monitoring stopped for good: the server refused (401, 403, 404) or the runtime cannot stream. */
export class MonitorError extends Error {
  override readonly name = 'MonitorError'

  constructor(
    /** The HTTP status, or 0 when no response was involved. */
    readonly status: number,
    /** The API's error code (`unauthenticated`, `forbidden`, `not_found`) or `unsupported`. */
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
