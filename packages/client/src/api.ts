/**
 * The REST routes a console calls (README: API), typed: the list with its views, search and cursor, one
 * process, its events, the stats, queues and workers pages, the single-process actions, run-now and the bulk
 * action by filter with its count preview. A failed call rejects with a MonitorError carrying the API's
 * error code (`forbidden`, `invalid_transition`, `invalid_request`, …).
 *
 * No runtime dependency: browsers, Bun and Node 18+.
 */
import type { BulkAction, BulkFilter, BulkResult, ProcessEvent, ProcessSummary, ProcessView, QueuesPage, Schedule, Stats, WorkersPage } from './api-shapes.ts'
import { type FetchLike, bearer, corsAware, errorFrom, globalFetch, trimBase, withQuery } from './http.ts'
import type { Process, ProcessStatus } from './shapes.ts'

export interface ApiOptions {
  /** Sent as `Authorization: Bearer`; without it the `ps_session` cookie authenticates (browsers). */
  token?: string
  /** Defaults to the global `fetch`. */
  fetch?: FetchLike
  /** Send the cookie to another origin (fetch `credentials: 'include'`); the server must list the page's origin in CORS_ORIGINS. */
  withCredentials?: boolean
}

export interface ListParams {
  workspaceId?: number
  status?: ProcessStatus | readonly ProcessStatus[]
  type?: string
  tag?: string | readonly string[]
  parentId?: number
  view?: ProcessView
  /** Search: a case-insensitive substring of message, error, type or metadata (within the server's SEARCH_SCAN_MAX newest rows per page). */
  q?: string
  /** 1–200, default 50. */
  limit?: number
  /** The `next` of the previous page. */
  before?: number
}

export interface ListPage {
  items: ProcessSummary[]
  /** Pass as `before` for the next page; null when none follows. A search's page may be short (even empty) and still have one. */
  next: number | null
}

export interface StatsParams {
  workspaceId?: number
  window?: '1h' | '6h' | '24h' | '7d'
  /** false: the counts and views alone (one cheap query), no time buckets. */
  buckets?: boolean
  tag?: string | readonly string[]
}

export interface ProcessesApi {
  list(params?: ListParams): Promise<ListPage>
  get(id: number): Promise<Process>
  events(id: number, params?: { after?: number; limit?: number }): Promise<ProcessEvent[]>
  stats(params?: StatsParams): Promise<Stats>
  queues(workspaceId?: number): Promise<QueuesPage>
  workers(workspaceId?: number): Promise<WorkersPage>
  schedules(workspaceId?: number): Promise<Schedule[]>
  retry(id: number): Promise<Process>
  cancel(id: number): Promise<Process>
  review(id: number, decision: 'approve' | 'discard', message?: string): Promise<Process>
  /** A pending process due later becomes due now (409 `invalid_transition` otherwise). */
  runNow(id: number): Promise<Process>
  /** Cancel, retry or discard every process the filter matches; `dryRun` only counts them. */
  bulk(action: BulkAction, filter: BulkFilter, options?: { dryRun?: boolean }): Promise<BulkResult>
}

const list = (value: string | readonly string[] | undefined) => (value === undefined ? undefined : typeof value === 'string' ? value : value.join(','))
const text = (value: number | undefined) => (value === undefined ? undefined : String(value))

/** The `before` of a `Link: <…&before=ID>; rel="next"` header. */
function nextCursor(link: string | null): number | null {
  const match = link?.match(/[?&]before=(\d+)[^>]*>;\s*rel="next"/)
  return match ? Number(match[1]) : null
}

export function createApi(baseUrl: string, options: ApiOptions = {}): ProcessesApi {
  const base = trimBase(baseUrl)
  const fetchImpl = corsAware(options.fetch ?? globalFetch)
  const credentials: RequestCredentials = options.withCredentials ? 'include' : 'same-origin'
  const call = async (method: string, path: string, body?: unknown): Promise<Response> => {
    const headers: Record<string, string> = { Accept: 'application/json', ...bearer(options.token) }
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    const response = await fetchImpl(`${base}${path}`, { method, headers, credentials, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) })
    if (!response.ok) throw await errorFrom(response)
    return response
  }
  const json = async <T>(method: string, path: string, body?: unknown): Promise<T> => (await (await call(method, path, body)).json()) as T
  const workspace = (workspaceId: number | undefined) => withQuery('', { workspace_id: text(workspaceId) })
  const id = (value: number) => encodeURIComponent(String(value))
  return {
    async list(p = {}) {
      const path = withQuery('/processes', {
        workspace_id: text(p.workspaceId),
        status: list(p.status),
        type: p.type,
        tag: list(p.tag),
        parent_id: text(p.parentId),
        view: p.view,
        q: p.q,
        limit: text(p.limit),
        before: text(p.before),
      })
      const response = await call('GET', path)
      return { items: (await response.json()) as ProcessSummary[], next: nextCursor(response.headers.get('Link')) }
    },
    get: (processId) => json('GET', `/processes/${id(processId)}`),
    events: (processId, p = {}) => json('GET', withQuery(`/processes/${id(processId)}/events`, { after: text(p.after), limit: text(p.limit) })),
    stats: (p = {}) =>
      json(
        'GET',
        withQuery('/processes/stats', {
          workspace_id: text(p.workspaceId),
          window: p.window,
          buckets: p.buckets === undefined ? undefined : String(p.buckets),
          tag: list(p.tag),
        }),
      ),
    queues: (workspaceId) => json('GET', `/queues${workspace(workspaceId)}`),
    workers: (workspaceId) => json('GET', `/workers${workspace(workspaceId)}`),
    schedules: (workspaceId) => json('GET', `/schedules${workspace(workspaceId)}`),
    retry: (processId) => json('POST', `/processes/${id(processId)}/retry`),
    cancel: (processId) => json('POST', `/processes/${id(processId)}/cancel`),
    review: (processId, decision, message) => json('POST', `/processes/${id(processId)}/review`, message === undefined ? { decision } : { decision, message }),
    runNow: (processId) => json('POST', `/processes/${id(processId)}/run-now`),
    bulk: (action, filter, o = {}) => json('POST', '/processes/bulk', { action, filter, ...(o.dryRun ? { dry_run: true } : {}) }),
  }
}
