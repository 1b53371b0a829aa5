/**
 * Follow processes live: one process (`monitorProcess`) or a whole workspace
 * (`monitorWorkspace`), over the server's SSE streams (contract §6).
 *
 * The server ends every stream after ~25 s, so a stream is a series of windows:
 * the client reconnects after each one, with the last version it saw, and only
 * `event: done` means the process is over — a dropped connection never does.
 * When streaming does not work (errors, no streaming API, a buffering proxy),
 * `monitorProcess` polls `GET /processes/{id}` with `If-None-Match` and tries the
 * stream again every ~30 s.
 *
 * No runtime dependency: browsers, Bun and Node 18+.
 */

// ── The API's shapes (contract §2) ─────────────────────────────────────────

/** Every status, in the server's order (src/processes/states.ts STATUSES; tests/client/shapes.test.ts checks it). */
export const PROCESS_STATUSES = ['pending', 'running', 'waiting_review', 'completed', 'failed', 'cancelled'] as const
export type ProcessStatus = (typeof PROCESS_STATUSES)[number]

/** A process as `GET /processes/{id}` and the streams return it. Ids and versions are JSON numbers. */
export interface Process {
  id: number
  workspace_id: number
  type: string
  status: ProcessStatus
  /** Integer 0–100. */
  progress: number
  /** The latest human-readable line. */
  message: string | null
  metadata: Record<string, unknown>
  result_summary: Record<string, unknown> | null
  error: string | null
  attempts: number
  /** +1 on every change, progress included: what "newer" means. */
  version: number
  worker_id: string | null
  created_by: number | null
  created_at: string
  updated_at: string
  started_at: string | null
  finished_at: string | null
  /** Queue fields: higher first; not claimed before `run_at`; `failed` only once `attempts` reaches `max_attempts`. */
  priority: number
  run_at: string
  max_attempts: number
}

/** The fields of a Process, as the server's schema has them (src/processes/model.ts; checked by tests/client/shapes.test.ts). */
export const PROCESS_FIELDS = [
  'id', 'workspace_id', 'type', 'status', 'progress', 'message', 'metadata', 'result_summary', 'error', 'attempts',
  'version', 'worker_id', 'created_by', 'created_at', 'updated_at', 'started_at', 'finished_at', 'priority', 'run_at',
  'max_attempts',
] as const satisfies readonly (keyof Process)[]
// Compile-time: PROCESS_FIELDS names every key of Process (and, by `satisfies`, nothing else).
const everyField: Exclude<keyof Process, (typeof PROCESS_FIELDS)[number]> extends never ? true : false = true
void everyField

/** The worker's part is over: the stream sends `event: done` and ends (contract §6). */
export const DONE_STATUSES: ReadonlySet<ProcessStatus> = new Set<ProcessStatus>([
  'completed',
  'failed',
  'cancelled',
  'waiting_review',
])

/** Why monitoring stopped for good: the server refused (401, 403, 404) or the runtime cannot stream. */
export class MonitorError extends Error {
  override readonly name = 'MonitorError'

  constructor(
    /** The HTTP status, or 0 when no response was involved. */
    readonly status: number,
    /** The contract's error code (`unauthenticated`, `forbidden`, `not_found`) or `unsupported`. */
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

export interface MonitorHandle {
  /** Close the connection and stop timers; no callback runs after this. Idempotent. */
  stop(): void
}

interface ConnectionOptions {
  /** Sent as `Authorization: Bearer`; without it the `ps_session` cookie must authenticate (browsers). */
  token?: string
  /** Defaults to the global `fetch`. */
  fetch?: FetchLike
  /** Defaults to the global `EventSource`; used only when there is no token (it cannot send headers). */
  EventSource?: EventSourceConstructor
  /**
   * Cookie auth from another origin (a page on app.example.com following api.example.com): the `ps_session`
   * cookie goes with the streams (EventSource `withCredentials`) and the reads (fetch `credentials:
   * 'include'`). The server must list the page's origin in `CORS_ORIGINS`. Default false, as for EventSource.
   */
  withCredentials?: boolean
  /** Fatal only (401, 403, 404, no way to read the server): monitoring has stopped. */
  onError?: (error: MonitorError) => void
  /** Each change of the connection's state (never the same state twice in a row). */
  onConnectionState?: (state: ConnectionState, info: ConnectionInfo) => void
}

export interface MonitorProcessOptions extends ConnectionOptions {
  /** Each newer version of the process, once (never the same or an older version twice). */
  onUpdate: (process: Process) => void
  /** Once, when the process reaches a done status; monitoring then stops. */
  onDone: (process: Process) => void
  /** Polling period when streaming does not work. Default 2000. */
  pollIntervalMs?: number
  /** While polling, how often to try the stream again. Default 30000. */
  streamRetryMs?: number
  /** A stream that delivers nothing at all for this long is taken as buffered by a proxy. Default 5000. */
  silenceMs?: number
}

export interface MonitorWorkspaceOptions extends ConnectionOptions {
  workspaceId?: number | string
  status?: ProcessStatus | readonly ProcessStatus[]
  type?: string
  /** Each newer version of each matching process (de-duplicated per id by `version`). */
  onUpdate: (process: Process) => void
  /**
   * After every reconnect. The stream's opening snapshot lists non-final processes
   * only, so one that became final between two windows is not replayed: re-fetch
   * `GET /processes` here to catch it.
   */
  onReconnect?: () => void
}

// ── Public entry points ────────────────────────────────────────────────────

/** Follow one process until it is done (`GET /processes/{id}/stream`, polling as the fallback). */
export function monitorProcess(
  baseUrl: string,
  id: number | string,
  options: MonitorProcessOptions,
): MonitorHandle {
  const processUrl = `${trimBase(baseUrl)}/processes/${encodeURIComponent(String(id))}`
  const fetchImpl = connectionFetch(options)
  const authHeaders = bearer(options.token)
  let latest: Process | null = null
  let finished = false
  let etag: string | null = null

  const update = (process: Process): void => {
    if (feed.stopped || (latest && process.version <= latest.version)) return
    latest = process
    safely(options.onUpdate, process)
  }
  const finish = (process: Process): void => {
    update(process)
    if (finished || feed.stopped) return
    finished = true
    feed.stop()
    safely(options.onDone, latest ?? process)
  }

  // One `GET /processes/{id}`: true once the process is done; throws MonitorError when fatal.
  const poll = async (signal: AbortSignal): Promise<boolean> => {
    const headers: Record<string, string> = { ...authHeaders }
    if (etag) headers['If-None-Match'] = etag
    const response = await fetchImpl(processUrl, { headers, signal }).catch(() => null)
    if (!response || response.status === 304) return false
    if (FATAL_STATUSES.has(response.status)) throw await errorFrom(response)
    if (!response.ok) return discard(response)
    const process = parseProcess(await response.text().catch(() => ''))
    if (!process) return false
    etag = response.headers.get('ETag') ?? etag
    if (DONE_STATUSES.has(process.status)) finish(process)
    else update(process)
    return finished
  }

  const feed = new Feed({
    url: `${processUrl}/stream`,
    token: options.token,
    fetch: fetchImpl,
    EventSource: options.EventSource ?? globalEventSource(),
    withCredentials: options.withCredentials ?? false,
    silenceMs: options.silenceMs ?? 5000,
    lastEventId: () => (latest ? String(latest.version) : null),
    onEvent(event) {
      const process = parseProcess(event.data)
      if (!process) return false
      if (event.type === 'done') finish(process)
      else if (event.type === 'message') update(process)
      return finished
    },
    onFatal: (error) => safely(options.onError, error),
    onState: options.onConnectionState,
    poller: {
      poll,
      intervalMs: options.pollIntervalMs ?? 2000,
      streamRetryMs: options.streamRetryMs ?? 30_000,
    },
  }).start()
  return { stop: () => feed.cancel() }
}

/** Follow every matching process of a workspace (`GET /processes/stream`); runs until stopped. */
export function monitorWorkspace(baseUrl: string, options: MonitorWorkspaceOptions): MonitorHandle {
  const status = typeof options.status === 'string' ? [options.status] : options.status
  const url = withQuery(`${trimBase(baseUrl)}/processes/stream`, {
    workspace_id: options.workspaceId === undefined ? undefined : String(options.workspaceId),
    status: status?.join(','),
    type: options.type,
  })
  // Newest version per id; never pruned, as a final process can still change (retry, review).
  const versions = new Map<number, number>()

  const feed = new Feed({
    url,
    token: options.token,
    fetch: connectionFetch(options),
    EventSource: options.EventSource ?? globalEventSource(),
    withCredentials: options.withCredentials ?? false,
    // An empty workspace legitimately sends nothing, and there is no fallback to
    // go to, so silence is not treated as a buffering proxy here.
    silenceMs: null,
    // Each connect replays every non-final process, and `id:` lines would mix the
    // versions of different processes: there is nothing meaningful to resume from.
    lastEventId: () => null,
    onEvent(event) {
      const process = event.type === 'message' ? parseProcess(event.data) : null
      const seen = process ? versions.get(process.id) : undefined
      if (!process || (seen !== undefined && process.version <= seen) || feed.stopped) return false
      versions.set(process.id, process.version)
      safely(options.onUpdate, process)
      return false
    },
    onFatal: (error) => safely(options.onError, error),
    onState: options.onConnectionState,
    onReconnect: () => safely(options.onReconnect, undefined),
  }).start()
  return { stop: () => feed.cancel() }
}

// ── SSE parsing (WHATWG "event stream interpretation") ─────────────────────

export interface SseEvent {
  /** `event:` field, `message` when absent. */
  type: string
  /** `data:` lines joined with `\n`. */
  data: string
  /** The last `id:` seen on this stream so far, as EventSource's `lastEventId`. */
  id: string | null
}

export interface SseHandlers {
  onEvent: (event: SseEvent) => void
  onRetry?: (ms: number) => void
  onComment?: (text: string) => void
}

/** Incremental parser: feed it decoded text in chunks of any size. CRLF, LF and CR all end lines. */
export class SseParser {
  private buffer = ''
  private dataLines: string[] = []
  private eventType = ''
  private lastEventId: string | null = null
  private atStart = true
  // A chunk that ended in CR may be half of a CRLF: drop an LF that starts the next one.
  private skipLeadingLf = false

  constructor(private readonly handlers: SseHandlers) {}

  push(chunk: string): void {
    let text = chunk
    if (this.atStart && text.length > 0) {
      if (text.startsWith('\uFEFF')) text = text.slice(1)
      this.atStart = false
    }
    if (this.skipLeadingLf && text.length > 0) {
      if (text.startsWith('\n')) text = text.slice(1)
      this.skipLeadingLf = false
    }
    this.buffer += text
    const lineEnd = /\r\n|\r|\n/g
    let consumed = 0
    for (let match = lineEnd.exec(this.buffer); match; match = lineEnd.exec(this.buffer)) {
      const line = this.buffer.slice(consumed, match.index)
      consumed = lineEnd.lastIndex
      if (match[0] === '\r' && consumed === this.buffer.length) this.skipLeadingLf = true
      this.processLine(line)
    }
    this.buffer = this.buffer.slice(consumed)
  }

  private processLine(line: string): void {
    if (line === '') return this.dispatch()
    if (line.startsWith(':')) return this.handlers.onComment?.(line.slice(1).trimStart())
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    switch (field) {
      case 'event':
        this.eventType = value
        break
      case 'data':
        this.dataLines.push(value)
        break
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value
        break
      case 'retry':
        if (/^\d+$/.test(value)) this.handlers.onRetry?.(Number(value))
        break
      // Unknown fields are ignored, as the spec says.
    }
  }

  private dispatch(): void {
    const type = this.eventType || 'message'
    this.eventType = ''
    if (this.dataLines.length === 0) return
    const data = this.dataLines.join('\n')
    this.dataLines = []
    this.handlers.onEvent({ type, data, id: this.lastEventId })
  }
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
  } catch {
    if (request.signal.aborted) return { kind: 'stopped' }
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
function readEventSourceWindow(
  EventSourceImpl: EventSourceConstructor,
  request: WindowRequest,
  withCredentials: boolean,
): Promise<WindowEnd> {
  return new Promise((resolve) => {
    const url = request.lastEventId
      ? withQuery(request.url, { last_event_id: request.lastEventId })
      : request.url
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
    source.addEventListener('error', () =>
      finish(received ? { kind: 'ended' } : { kind: 'failed', statusHidden: true }),
    )
  })
}

// ── The reconnect loop shared by both monitors ─────────────────────────────

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
class Feed {
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
    return !token && EventSource
      ? readEventSourceWindow(EventSource, request, this.options.withCredentials)
      : readFetchWindow(fetch, request)
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

// ── Small helpers ──────────────────────────────────────────────────────────

const FATAL_STATUSES = new Set([401, 403, 404])
const FATAL_CODES: Record<number, string> = { 401: 'unauthenticated', 403: 'forbidden', 404: 'not_found' }

// Called through a closure: a browser's `fetch` throws "Illegal invocation" when
// invoked as a method of some other object.
const globalFetch: FetchLike = (input, init) => globalThis.fetch(input, init)

/** The fetch a monitor reads with: the caller's or the global one, sending cookies across origins when asked. */
function connectionFetch(options: ConnectionOptions): FetchLike {
  const fetchImpl = options.fetch ?? globalFetch
  return options.withCredentials ? (input, init) => fetchImpl(input, { ...init, credentials: 'include' }) : fetchImpl
}

function globalEventSource(): EventSourceConstructor | undefined {
  return (globalThis as { EventSource?: EventSourceConstructor }).EventSource
}

function bearer(token: string | undefined): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {}
}

function trimBase(baseUrl: string): string {
  return baseUrl.replace(/\/+$/, '')
}

function withQuery(url: string, params: Record<string, string | undefined>): string {
  const query = new URLSearchParams()
  for (const [key, value] of Object.entries(params)) if (value !== undefined) query.set(key, value)
  const text = query.toString()
  if (!text) return url
  return `${url}${url.includes('?') ? '&' : '?'}${text}`
}

function isEventStream(response: Response): boolean {
  return (response.headers.get('Content-Type') ?? '').toLowerCase().startsWith('text/event-stream')
}

/** Drop a body we will not read (frees the connection); false, for `return discard(...)` in pollers. */
async function discard(response: Response): Promise<false> {
  await response.body?.cancel().catch(() => {})
  return false
}

async function errorFrom(response: Response): Promise<MonitorError> {
  let code = FATAL_CODES[response.status] ?? 'http_error'
  let message = `HTTP ${response.status}`
  try {
    const body = (await response.json()) as { error?: { code?: unknown; message?: unknown } }
    if (typeof body.error?.code === 'string') code = body.error.code
    if (typeof body.error?.message === 'string') message = body.error.message
  } catch {
    // Not the contract's error body (a proxy's page, say): keep the status-derived code.
  }
  return new MonitorError(response.status, code, message)
}

/** Accept only what looks like a process: ignore a malformed frame rather than break the feed. */
function parseProcess(text: string): Process | null {
  try {
    const value = JSON.parse(text) as Partial<Process> | null
    return value && typeof value.id === 'number' && typeof value.version === 'number'
      ? (value as Process)
      : null
  } catch {
    return null
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

/** @internal Shared with worker.ts; resolves early (never rejects) when the signal aborts. */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const wake = () => {
      clearTimeout(timer)
      signal.removeEventListener('abort', wake)
      resolve()
    }
    const timer = setTimeout(wake, ms)
    signal.addEventListener('abort', wake, { once: true })
  })
}

/** A throwing callback must not kill the monitor (nor, in Bun, the process via reportError). */
function safely<T>(callback: ((value: T) => void) | undefined, value: T): void {
  try {
    callback?.(value)
  } catch (error) {
    console.error('processes monitor: a callback threw', error)
  }
}
