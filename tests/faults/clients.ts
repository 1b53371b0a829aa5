// Real clients for the fault scenarios, each recording every HTTP status it sees (a 5xx anywhere fails a
// scenario): a JSON API client, and EventSources (the `eventsource` package) that can fail over to another
// instance the way a load balancer would.
import { EventSource } from 'eventsource'

export interface Seen {
  url: string
  status: number
  at: number
}

/** Every response any client of a scenario received. */
export class Traffic {
  readonly seen: Seen[] = []

  record(url: string, status: number) {
    this.seen.push({ url, status, at: Date.now() })
  }

  get serverErrors(): Seen[] {
    return this.seen.filter((s) => s.status >= 500)
  }

  async json(url: string, init: RequestInit & { token?: string } = {}): Promise<{ status: number; body: any }> {
    const headers: Record<string, string> = { ...(init.headers as Record<string, string>) }
    if (init.token) headers.authorization = `Bearer ${init.token}`
    if (init.body) headers['content-type'] ??= 'application/json'
    const response = await fetch(url, { ...init, headers, signal: init.signal ?? AbortSignal.timeout(15_000) })
    this.record(url, response.status)
    const text = await response.text()
    return { status: response.status, body: text ? JSON.parse(text) : null }
  }
}

export interface StreamLog {
  messages: Array<{ at: number; id: string; data: any }>
  done: Array<{ at: number; id: string; data: any }>
  /** Versions in the order they arrived, `done` included. */
  versions: number[]
  opens: number
  errors: number
  /** The Last-Event-ID sent on each (re)connect, as the server saw it. */
  lastEventIds: Array<string | null>
  source: EventSource
}

/**
 * An EventSource on `path`, sent with the bearer token to `bases()[0]`: when the instance it was on goes
 * away, the next reconnect goes to whichever instance `bases()` lists first then, with Last-Event-ID.
 */
export function openStream(traffic: Traffic, bases: () => string[], path: string, token: string): StreamLog {
  const log = { messages: [], done: [], versions: [], opens: 0, errors: 0, lastEventIds: [] } as unknown as StreamLog
  const source = new EventSource(`${bases()[0]}${path}`, {
    fetch: async (input, init) => {
      const headers: Record<string, string> = { ...(init?.headers as Record<string, string>), authorization: `Bearer ${token}` }
      log.lastEventIds.push(headers['Last-Event-ID'] ?? null)
      const url = `${bases()[0]}${path}`
      const response = await fetch(url, { ...init, headers })
      traffic.record(url, response.status)
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

/** Versions on one stream strictly increase and none is sent twice (§6). */
export function versionsIncrease(log: StreamLog): boolean {
  return log.versions.every((v, i) => i === 0 || v > log.versions[i - 1]!)
}
