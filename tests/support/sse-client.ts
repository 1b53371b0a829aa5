// SSE clients for the tests: a standard EventSource (the `eventsource` package, WHATWG-compliant) with the
// bearer token added, recording everything it receives; and a reader of raw SSE responses.
import { EventSource } from 'eventsource'
import { within } from './wait'

export interface StreamLog {
  messages: Array<{ at: number; id: string; data: any }>
  done: Array<{ at: number; id: string; data: any }>
  /** Versions in the order they arrived, `done` included. */
  versions: number[]
  opens: number
  errors: number
  /** The Last-Event-ID sent on each (re)connect, as the server saw it. */
  lastEventIds: Array<string | null>
  /** How many messages had arrived when each (re)connect was sent (beside lastEventIds). */
  messagesBefore: number[]
  source: EventSource
}

export interface StreamOptions {
  /** Sent on the first connect only (the EventSource sends its own on reconnects). */
  lastEventId?: string
  /** Told every response's status (the fault scenarios count 5xx). */
  onResponse?: (url: string, status: number) => void
}

/**
 * An EventSource with the bearer token. `url` may be a function: each (re)connect goes where it says then,
 * with Last-Event-ID, as through a load balancer when an instance goes away. Closed on `done`.
 */
export function openStream(url: string | (() => string), token: string, o: StreamOptions = {}): StreamLog {
  const target = typeof url === 'string' ? () => url : url
  const log = { messages: [], done: [], versions: [], opens: 0, errors: 0, lastEventIds: [], messagesBefore: [] } as unknown as StreamLog
  const source = new EventSource(target(), {
    fetch: async (_input, init) => {
      const headers: Record<string, string> = { ...(init?.headers as Record<string, string>), authorization: `Bearer ${token}` }
      if (o.lastEventId && log.opens === 0) headers['last-event-id'] = o.lastEventId
      log.lastEventIds.push(headers['Last-Event-ID'] ?? headers['last-event-id'] ?? null)
      log.messagesBefore.push(log.messages.length)
      const to = target()
      const response = await fetch(to, { ...init, headers })
      o.onResponse?.(to, response.status)
      return response
    },
  })
  source.onopen = () => log.opens++
  source.onerror = () => log.errors++
  source.onmessage = (event) => {
    const data = JSON.parse(event.data)
    log.messages.push({ at: Date.now(), id: event.lastEventId, data })
    log.versions.push(data.version)
  }
  source.addEventListener('done', (event) => {
    const e = event as MessageEvent
    const data = JSON.parse(e.data)
    log.done.push({ at: Date.now(), id: e.lastEventId, data })
    log.versions.push(data.version)
    source.close()
  })
  log.source = source
  return log
}

/** openStream as `{ source, received }`. */
export function openEventSource(url: string, token: string, o: StreamOptions = {}) {
  const received = openStream(url, token, o)
  return { source: received.source, received }
}

/** Versions on one stream strictly increase and none is sent twice (README: The SSE stream). */
export function versionsIncrease(log: StreamLog): boolean {
  return log.versions.every((v, i) => i === 0 || v > log.versions[i - 1]!)
}

/** Reads a raw SSE response into frames (for what EventSource hides: comments, retry lines, the end). */
export async function readFrames(response: Response, o: { untilDone?: boolean; maxMs?: number } = {}) {
  const reader = response.body!.getReader()
  const decoder = new TextDecoder()
  let text = ''
  const deadline = Date.now() + (o.maxMs ?? 30_000)
  let ended = false
  for (;;) {
    const left = deadline - Date.now()
    if (left <= 0) break
    const result = await within(reader.read(), left, null)
    if (result === null) break
    if (result.done) {
      ended = true
      break
    }
    text += decoder.decode(result.value, { stream: true })
    if (o.untilDone && text.includes('event: done')) {
      // Read on to see the server end the response.
    }
  }
  if (!ended) await reader.cancel().catch(() => {})
  const frames = text
    .split('\n\n')
    .filter((f) => f.length > 0)
    .map((f) => {
      const lines = f.split('\n')
      const field = (name: string) => lines.find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2)
      const data = field('data')
      return {
        raw: f,
        id: field('id'),
        event: field('event'),
        retry: field('retry'),
        comment: lines[0]!.startsWith(':'),
        data: data ? JSON.parse(data) : undefined,
      }
    })
  return { text, frames, ended }
}
