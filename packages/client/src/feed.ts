// The reconnect loop both monitors run: one connection per server window (fetch, or EventSource without a
// token), backoff between failed connects, and polling as the process monitor's fallback.
import { type EventSourceConstructor, type FetchLike, FATAL_STATUSES, MonitorError, bearer, discard, errorFrom, isEventStream, withQuery } from './http.ts'
import { SseParser, type SseEvent } from './sse-parser.ts'
import { abortableSleep, safely } from './util.ts'

/**
 * Where a monitor's connection stands, for a "live / reconnecting / offline" badge:
 * `connecting` (first connect), `open` (a stream is delivering), `reconnecting` (between windows, or after a
 * failed connect: an unreachable server stays here, retrying with backoff), `polling` (monitorProcess only:
 * streams failed, it reads `GET /processes/{id}`), `closed` (done, or a fatal error; not after `stop()`).
 */
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'polling' | 'closed'

export interface ConnectionInfo {
  /** Failed connects in a row (0 once a stream opens). */
  failures: number
}

// ── One connection = one server window ─────────────────────────────────────

/** How one connection ended, which decides what the loop does next. */
type WindowEnd =
  | { kind: 'done' } // the feed is complete (`event: done`)
  | { kind: 'ended' } // closed after delivering something: the normal 25 s window
  | { kind: 'failed'; statusHidden: boolean } // no connection, or closed before delivering anything
  | { kind: 'silent' } // nothing at all within silenceMs: a buffering proxy
  | { kind: 'unsupported' } // the response body cannot be read as a stream
  | { kind: 'fatal'; error: MonitorError }
  | { kind: 'stopped' }

interface WindowRequest {
  url: string
  lastEventId: string | null
  headers: Record<string, string>
  silenceMs: number | null
  signal: AbortSignal
  /** True when the feed is complete. */
  onEvent: (event: SseEvent) => boolean
  onOpen: () => void
  onRetry: (ms: number) => void
}

/** Read one window with `fetch` (needed to send `Authorization`), parsing SSE ourselves. */
async function readFetchWindow(fetchImpl: FetchLike, request: WindowRequest): Promise<WindowEnd> {
  const controller = new AbortController()
  const stop = () => controller.abort()
  request.signal.addEventListener('abort', stop, { once: true })
  let silent = false
  const silenceTimer = startTimer(request.silenceMs, () => {
    silent = true
    controller.abort()
  })
  let received = false
  try {
    const headers: Record<string, string> = { ...request.headers, Accept: 'text/event-stream' }
    if (request.lastEventId) headers['Last-Event-ID'] = request.lastEventId
    const response = await fetchImpl(request.url, { headers, signal: controller.signal })
    if (FATAL_STATUSES.has(response.status)) return { kind: 'fatal', error: await errorFrom(response) }
    if (!response.ok || !isEventStream(response)) {
      await discard(response)
      return { kind: 'failed', statusHidden: false }
    }
    if (!response.body) return { kind: 'unsupported' }
    request.onOpen()

    let complete = false
    const parser = new SseParser({
      onEvent: (event) => {
        if (!complete) complete = request.onEvent(event)
      },
      onRetry: request.onRetry,
    })
    const reader = response.body.getReader()
    const decoder = new TextDecoder()
    while (!complete) {
      const { value, done } = await reader.read()
      if (done) break
      if (value.length > 0) {
        received = true
        clearTimeout(silenceTimer)
      }
      parser.push(decoder.decode(value, { stream: true }))
    }
    if (complete) {
      await reader.cancel().catch(() => {})
      return { kind: 'done' }
    }
    return received ? { kind: 'ended' } : { kind: 'failed', statusHidden: false }
  } catch (error) {
    if (request.signal.aborted) return { kind: 'stopped' }
    if (error instanceof MonitorError) return { kind: 'fatal', error } // a CORS refusal (corsAware)
    if (silent) return { kind: 'silent' }
    return received ? { kind: 'ended' } : { kind: 'failed', statusHidden: false }
  } finally {
    clearTimeout(silenceTimer)
    request.signal.removeEventListener('abort', stop)
  }
}

/**
 * Read one window with a standard EventSource (cookie auth). We close it on the
 * first error and reconnect ourselves with `?last_event_id=`, so every window
 * goes through the same loop as the fetch reader. EventSource hides HTTP
 * statuses and `retry:`/comment lines, hence `statusHidden` and the `open` rule below.
 */
function readEventSourceWindow(EventSourceImpl: EventSourceConstructor, request: WindowRequest, withCredentials: boolean): Promise<WindowEnd> {
  return new Promise((resolve) => {
    const url = request.lastEventId ? withQuery(request.url, { last_event_id: request.lastEventId }) : request.url
    const source = withCredentials ? new EventSourceImpl(url, { withCredentials: true }) : new EventSourceImpl(url)
    let settled = false
    let received = false
    const finish = (end: WindowEnd) => {
      if (settled) return
      settled = true
      clearTimeout(silenceTimer)
      request.signal.removeEventListener('abort', onStop)
      source.close()
      resolve(end)
    }
    const markReceived = () => {
      received = true
      clearTimeout(silenceTimer)
    }
    const onStop = () => finish({ kind: 'stopped' })
    const silenceTimer = startTimer(request.silenceMs, () => finish({ kind: 'silent' }))
    const onEvent = (type: string) => (event: MessageEvent) => {
      if (settled) return
      markReceived()
      const data = typeof event.data === 'string' ? event.data : ''
      if (request.onEvent({ type, data, id: event.lastEventId || null })) finish({ kind: 'done' })
    }

    request.signal.addEventListener('abort', onStop, { once: true })
    source.addEventListener('open', () => {
      request.onOpen()
      // Resuming from the current version, the server may rightly send nothing
      // (the `retry:` line it does send is invisible here): the open is enough.
      if (request.lastEventId) markReceived()
    })
    source.addEventListener('message', onEvent('message'))
    source.addEventListener('done', onEvent('done'))
    source.addEventListener('output', onEvent('output'))
    source.addEventListener('error', () => finish(received ? { kind: 'ended' } : { kind: 'failed', statusHidden: true }))
  })
}

/** Three failed connects in a row and the process monitor switches to polling. */
const MAX_FAILED_CONNECTS = 3
const DEFAULT_RETRY_MS = 1000
const MAX_BACKOFF_MS = 30_000

interface Poller {
  /** One request: true when the feed is complete; throws MonitorError when fatal. */
  poll: (signal: AbortSignal) => Promise<boolean>
  intervalMs: number
  streamRetryMs: number
}

interface FeedOptions {
  url: string
  token: string | undefined
  fetch: FetchLike
  EventSource: EventSourceConstructor | undefined
  withCredentials: boolean
  /** Null: never give up on a silent stream (only a feed with a poller has somewhere to go). */
  silenceMs: number | null
  lastEventId: () => string | null
  onEvent: (event: SseEvent) => boolean
  onFatal: (error: MonitorError) => void
  onState?: (state: ConnectionState, info: ConnectionInfo) => void
  onReconnect?: () => void
  poller?: Poller
}

/** Streams window after window until complete or stopped; polls when a poller is given and streaming fails. */
export class Feed {
  private readonly stopController = new AbortController()
  private retryMs = DEFAULT_RETRY_MS
  private streamable = true
  private hasOpened = false
  /** Stopped by the caller (the handle's stop): no callback at all after that, not even `closed`. */
  private cancelled = false
  private state: ConnectionState | null = null
  private failures = 0

  constructor(private readonly options: FeedOptions) {}

  /** Separate from the constructor so callbacks can refer to the feed they belong to. */
  start(): this {
    void this.run()
    return this
  }

  get stopped(): boolean {
    return this.stopController.signal.aborted
  }

  stop(): void {
    this.stopController.abort()
  }

  cancel(): void {
    this.cancelled = true
    this.stop()
  }

  private setState(state: ConnectionState): void {
    if (this.cancelled || state === this.state) return
    this.state = state
    safely((info: ConnectionInfo) => this.options.onState?.(state, info), { failures: this.failures })
  }

  private async run(): Promise<void> {
    this.setState('connecting')
    try {
      await this.loop()
    } catch (error) {
      if (!this.stopped) {
        this.stop()
        if (error instanceof MonitorError) this.options.onFatal(error)
        else console.error('processes monitor stopped on an unexpected error', error)
      }
    }
    this.setState('closed')
  }

  private async loop(): Promise<void> {
    const { poller } = this.options
    let failures = 0
    let polling = false
    while (!this.stopped) {
      this.failures = failures
      if (polling) {
        this.setState('polling')
        if (await this.pollUntilStreamRetry(poller!)) return
        // A probe: one more failure and we are back to polling.
        failures = MAX_FAILED_CONNECTS - 1
        polling = false
        continue
      }
      const openedAt = Date.now()
      const end = await this.openWindow()
      switch (end.kind) {
        case 'done':
        case 'stopped':
          return
        case 'fatal':
          throw end.error
        case 'ended':
          failures = 0
          this.failures = 0
          this.setState('reconnecting')
          // Reconnect at once after a normal window; wait `retry` only when the
          // server closed quickly, so a misbehaving server cannot make us spin.
          if (Date.now() - openedAt < this.retryMs) await this.sleep(this.retryMs)
          break
        case 'unsupported':
          this.streamable = false
          if (!poller) throw new MonitorError(0, 'unsupported', 'this runtime cannot read an event stream')
          polling = true
          break
        case 'silent':
          polling = true
          break
        case 'failed':
          failures += 1
          this.failures = failures
          if (end.statusHidden && (await this.checkStatus())) return
          if (poller && failures >= MAX_FAILED_CONNECTS) polling = true
          else {
            this.setState('reconnecting')
            await this.sleep(backoffMs(failures, this.retryMs))
          }
          break
      }
    }
  }

  private openWindow(): Promise<WindowEnd> {
    const { token, fetch, EventSource } = this.options
    const request: WindowRequest = {
      url: this.options.url,
      lastEventId: this.options.lastEventId(),
      headers: bearer(token),
      silenceMs: this.options.silenceMs,
      signal: this.stopController.signal,
      onEvent: this.options.onEvent,
      onOpen: () => {
        this.failures = 0
        this.setState('open')
        if (this.hasOpened) this.options.onReconnect?.()
        this.hasOpened = true
      },
      onRetry: (ms) => {
        this.retryMs = ms
      },
    }
    // EventSource cannot send `Authorization`, so a token always means fetch.
    return !token && EventSource ? readEventSourceWindow(EventSource, request, this.options.withCredentials) : readFetchWindow(fetch, request)
  }

  /** Poll until complete, or until it is time to try streaming again (false). */
  private async pollUntilStreamRetry(poller: Poller): Promise<boolean> {
    const retryStreamAt = Date.now() + poller.streamRetryMs
    while (!this.stopped) {
      if (await poller.poll(this.stopController.signal)) return true
      if (this.streamable && Date.now() >= retryStreamAt) return false
      await this.sleep(poller.intervalMs)
    }
    return true
  }

  /**
   * An EventSource failure hides the HTTP status, yet 401/403/404 must stop us:
   * ask once with fetch (a poll when we have a poller — it also brings the state).
   * Throws MonitorError when fatal; true when the feed turned out complete.
   */
  private async checkStatus(): Promise<boolean> {
    const { poller, fetch, url } = this.options
    if (poller) return poller.poll(this.stopController.signal)
    const controller = new AbortController()
    try {
      const response = await fetch(url, { signal: controller.signal })
      if (FATAL_STATUSES.has(response.status)) throw await errorFrom(response)
    } catch (error) {
      if (error instanceof MonitorError) throw error
    } finally {
      controller.abort()
    }
    return false
  }

  private sleep(ms: number): Promise<void> {
    return abortableSleep(ms, this.stopController.signal)
  }
}

/** Exponential from the server's `retry`, capped, with jitter so many clients do not reconnect in step. */
function backoffMs(failures: number, baseMs: number): number {
  const ceiling = Math.min(MAX_BACKOFF_MS, baseMs * 2 ** (failures - 1))
  return Math.round(ceiling * (0.5 + Math.random() / 2))
}

function startTimer(ms: number | null, callback: () => void): ReturnType<typeof setTimeout> | undefined {
  return ms === null ? undefined : setTimeout(callback, ms)
}
