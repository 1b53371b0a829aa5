/**
 * Follow processes live: one process (`monitorProcess`) or a whole workspace
 * (`monitorWorkspace`), over the server's SSE streams (README: The SSE stream).
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
import { type ConnectionInfo, type ConnectionState, Feed } from './feed.ts'
import {
  type EventSourceConstructor,
  type FetchLike,
  FATAL_STATUSES,
  MonitorError,
  bearer,
  corsAware,
  discard,
  errorFrom,
  globalEventSource,
  globalFetch,
  parseProcess,
  trimBase,
  withQuery,
} from './http.ts'
import { type ChildCounts, DONE_STATUSES, type OutputChunk, type Process, type ProcessStatus } from './shapes.ts'
import { safely } from './util.ts'

export type { ConnectionInfo, ConnectionState } from './feed.ts'
export { type EventSourceConstructor, type EventSourceLike, type FetchLike, MonitorError } from './http.ts'
export { type ChildCounts, DONE_STATUSES, type OutputChunk, PROCESS_FIELDS, PROCESS_STATUSES, type Process, type ProcessStatus } from './shapes.ts'
export { type SseEvent, type SseHandlers, SseParser } from './sse-parser.ts'
export { type ApiOptions, createApi, type ListPage, type ListParams, type ProcessesApi, type StatsParams } from './api.ts'
export {
  BULK_ACTIONS,
  type BulkAction,
  type BulkFilter,
  type BulkResult,
  type Me,
  PROCESS_VIEWS,
  type ProcessEvent,
  type ProcessSummary,
  type ProcessView,
  type Queue,
  type QueuesPage,
  type Schedule,
  type Stats,
  type Worker,
  type WorkerLease,
  type WorkersPage,
} from './api-shapes.ts'
/** @internal Kept for callers of the single-file version; the package's own code imports util.ts. */
export { abortableSleep } from './util.ts'

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
  /**
   * Fatal only (401, 403, 404, no way to read the server, or `cors`: a page whose origin the server's
   * CORS_ORIGINS does not list): monitoring has stopped.
   */
  onError?: (error: MonitorError) => void
  /** Each change of the connection's state (never the same state twice in a row). */
  onConnectionState?: (state: ConnectionState, info: ConnectionInfo) => void
}

export interface MonitorProcessOptions extends ConnectionOptions {
  /** Each newer version of the process, once (never the same or an older version twice). */
  onUpdate: (process: Process) => void
  /** Once, when the process reaches a done status; monitoring then stops. */
  onDone: (process: Process) => void
  /**
   * Each chunk of the process's live output, once and in order, across reconnects (the stream's
   * `<version>.<seq>` ids resume both); while polling, read from `GET /processes/{id}/output`. Without it the
   * stream is asked for states only (`output=false`).
   */
  onOutput?: (chunk: OutputChunk) => void
  /** Trees: a parent's children counts, each time they change (and once with the first version that has them). */
  onChildren?: (children: ChildCounts, process: Process) => void
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

/** Follow one process until it is done (`GET /processes/{id}/stream`, polling as the fallback). */
export function monitorProcess(baseUrl: string, id: number | string, options: MonitorProcessOptions): MonitorHandle {
  const processUrl = `${trimBase(baseUrl)}/processes/${encodeURIComponent(String(id))}`
  const fetchImpl = connectionFetch(options)
  const authHeaders = bearer(options.token)
  let latest: Process | null = null
  let finished = false
  let etag: string | null = null
  const wantsOutput = options.onOutput !== undefined
  let lastSeq = 0

  const output = (chunk: OutputChunk): void => {
    if (feed.stopped || chunk.seq <= lastSeq) return
    lastSeq = chunk.seq
    safely(options.onOutput!, chunk)
  }
  // The chunks after lastSeq (polling), page by page; a failure leaves them to the next poll.
  const pollOutput = async (signal: AbortSignal): Promise<void> => {
    for (;;) {
      const response = await fetchImpl(`${processUrl}/output?after=${lastSeq}`, { headers: authHeaders, signal }).catch(() => null)
      if (!response?.ok) return
      const chunks = (await response.json().catch(() => [])) as OutputChunk[]
      for (const c of chunks) output({ seq: c.seq, chunk: c.chunk })
      if (chunks.length < 1000) return
    }
  }

  const update = (process: Process): void => {
    if (feed.stopped || (latest && process.version <= latest.version)) return
    const before = latest?.children ?? null
    latest = process
    safely(options.onUpdate, process)
    const counts = process.children ?? null
    if (counts && options.onChildren && !sameCounts(before, counts)) safely((c: ChildCounts) => options.onChildren!(c, process), counts)
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
    const response = await fetchImpl(processUrl, { headers, signal }).catch((error: unknown) => {
      if (error instanceof MonitorError) throw error // a CORS refusal: fatal
      return null
    })
    if (!response || response.status === 304) return false
    if (FATAL_STATUSES.has(response.status)) throw await errorFrom(response)
    if (!response.ok) return discard(response)
    const process = parseProcess(await response.text().catch(() => ''))
    if (!process) return false
    etag = response.headers.get('ETag') ?? etag
    if (wantsOutput) await pollOutput(signal)
    if (DONE_STATUSES.has(process.status)) finish(process)
    else update(process)
    return finished
  }

  const feed = new Feed({
    url: wantsOutput ? `${processUrl}/stream` : `${processUrl}/stream?output=false`,
    token: options.token,
    fetch: fetchImpl,
    EventSource: options.EventSource ?? globalEventSource(),
    withCredentials: options.withCredentials ?? false,
    silenceMs: options.silenceMs ?? 5000,
    // `<version>.<seq>` once output was seen: where the states and where the output resume.
    lastEventId: () => (latest ? (lastSeq > 0 ? `${latest.version}.${lastSeq}` : String(latest.version)) : null),
    onEvent(event) {
      if (event.type === 'output') {
        const chunk = parseChunk(event.data)
        if (chunk) output(chunk)
        return false
      }
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

/**
 * The fetch a monitor reads with: the caller's or the global one, sending cookies across origins when asked,
 * and telling a CORS refusal from an unreachable server (corsAware).
 */
function connectionFetch(options: ConnectionOptions): FetchLike {
  const fetchImpl = options.fetch ?? globalFetch
  return corsAware(options.withCredentials ? (input, init) => fetchImpl(input, { ...init, credentials: 'include' }) : fetchImpl)
}

function parseChunk(data: string): OutputChunk | null {
  try {
    const value = JSON.parse(data) as { seq?: unknown; chunk?: unknown }
    return typeof value.seq === 'number' ? { seq: value.seq, chunk: value.chunk } : null
  } catch {
    return null
  }
}

function sameCounts(a: ChildCounts | null, b: ChildCounts): boolean {
  return (
    a !== null &&
    a.total === b.total &&
    a.pending === b.pending &&
    a.running === b.running &&
    a.waiting_review === b.waiting_review &&
    a.completed === b.completed &&
    a.failed === b.failed &&
    a.cancelled === b.cancelled
  )
}
