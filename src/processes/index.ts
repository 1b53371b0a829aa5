// The process routes (README: API): list, read, events, create, retry, cancel, review, and the two streams.
import type { TSchema } from '@sinclair/typebox'
import { Elysia, t } from 'elysia'
import type { Principal } from '../auth/authenticator'
import { activeWorkspace, auditRowFor, authPlugin, requireWriter } from '../auth/plugin'
import { JSON_CONTENT_TYPE, badRequest, HttpError, invalidRequest, notFound, unavailable } from '../errors'
import type { Services } from '../wiring'
import {
  BatchBody,
  type BatchItem,
  CreateBody,
  ErrorSchema,
  EventsQuery,
  IdParams,
  IdempotencyHeaders,
  ListQuery,
  MAX_METADATA_DEPTH,
  Process,
  ProcessEvent,
  ProcessStreamQuery,
  ProcessSummary,
  ReviewBody,
  StreamQuery,
  tooDeeplyNested,
  unstorableJson,
} from './model'
import { listActive, listEvents, listProcesses } from './queries'
import { createProcess, createProcesses, userAction } from './service'
import type { NewProcess } from './queries'
import { openProcessStream, parseLastEventId } from './process-stream'
import { openWorkspaceStream } from './workspace-stream'

const errors = { 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 422: ErrorSchema, 500: ErrorSchema, 503: ErrorSchema }
/** Every POST: its body is read up to 1 MiB (413); one that is parsed may not be JSON (400). */
const bodyErrors = { 400: ErrorSchema, 413: ErrorSchema }
/** The SSE routes' 200: documented as text/event-stream (see responses). */
const EVENT_STREAM = t.String({ description: 'text/event-stream: `retry:`, then `id: <version>` + `data: <process JSON>` events, `: keepalive` comments' })

const DESCRIPTIONS: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  304: 'Not modified (If-None-Match matched the ETag)',
  401: 'unauthenticated',
  403: 'forbidden',
  404: 'not_found',
  409: 'invalid_transition',
  422: 'invalid_request',
  400: 'bad_request',
  413: 'payload_too_large',
  500: 'internal (with a request_id)',
  503: 'unavailable (database down, or shutting down)',
}

/**
 * OpenAPI responses straight from the TypeBox schemas. They are documented rather than given to Elysia as
 * `response`, which would also validate and re-encode every response at run time: ~11 µs of CPU per
 * GET /processes/{id}, about a sixth of the request (measured in-process, 50 concurrent callers).
 */
function responses(map: Record<number, TSchema | null>) {
  return Object.fromEntries(
    Object.entries(map).map(([status, schema]) => [
      status,
      schema
        ? { description: DESCRIPTIONS[Number(status)] ?? '', content: { [schema === EVENT_STREAM ? 'text/event-stream' : 'application/json']: { schema } } }
        : { description: DESCRIPTIONS[Number(status)] ?? '' },
    ]),
  )
}

/** `"<version>"`; If-None-Match may list several, weak or strong, or `*`. */
const etagOf = (version: number) => `"${version}"`
function matchesEtag(header: string, version: number): boolean {
  const tag = etagOf(version)
  return header.split(',').some((part) => {
    const value = part.trim()
    return value === '*' || value === tag || value === `W/${tag}`
  })
}

/**
 * The body of a route that takes one: JSON whatever the Content-Type says (so `curl -d '{"type":"x"}'` works
 * without `-H`), refused before JSON.parse and TypeBox see it when it nests too deep (see tooDeeplyNested).
 * Empty or not JSON → 400. Runs after the auth plugin's parse hook, so an anonymous caller gets 401 first.
 */
async function jsonBody({ request }: { request: Request }): Promise<unknown> {
  const text = await request.text()
  if (text.length === 0) throw badRequest('Request body is empty; expected JSON')
  const field = tooDeeplyNested(text, MAX_METADATA_DEPTH)
  if (field !== null) {
    const path = `/${field.replaceAll('~', '~0').replaceAll('/', '~1')}`
    const message = `nested deeper than ${MAX_METADATA_DEPTH} levels`
    throw invalidRequest(`Invalid body${field ? ` ${path}` : ''}: ${message}`, [{ path: field ? path : '/', message }])
  }
  try {
    return JSON.parse(text)
  } catch {
    throw badRequest('Request body is not valid JSON')
  }
}

/**
 * `parse` for a route with a body. 'json' after jsonBody never runs (jsonBody answers or throws); it is what tells
 * the OpenAPI document the body is application/json.
 */
export const JSON_BODY: [typeof jsonBody, 'json'] = [jsonBody, 'json']

/** Routes without a body (retry, cancel) ignore whatever is sent: it is not read, let alone parsed. */
export const noBody = () => null

export function processes(s: Services) {
  const streamSettings = { maxMs: s.config.SSE_MAX_MS, keepaliveMs: s.config.SSE_KEEPALIVE_MS, retryMs: s.config.SSE_RETRY_MS }
  const refuseWhileDraining = () => {
    if (s.draining.value) throw unavailable('Server is shutting down; reconnect')
  }
  /**
   * A stream counts against its credential's cap (MAX_STREAMS_PER_TOKEN) from now on, and is closed when the
   * credential is revoked or expires (auth/revocation.ts).
   */
  const admitStream = (principal: Principal) => {
    const kind = principal.sessionId !== null ? 'session' : 'api'
    const id = principal.sessionId ?? principal.tokenId
    const cap = s.config.MAX_STREAMS_PER_TOKEN
    if (cap > 0 && s.credentials.count(kind, id) >= cap) {
      throw new HttpError(429, 'rate_limited', `At most ${cap} open streams per token on this instance`, { limit: cap }, { 'Retry-After': '1' })
    }
    let close = () => {}
    const untrack = s.credentials.track(kind, id, () => close())
    return (closeStream: () => void) => {
      close = closeStream
      return untrack
    }
  }
  return new Elysia({ prefix: '/processes' })
    .use(authPlugin(s))
    .get(
      '',
      async ({ query, principal, state, request, set }) => {
        const workspaceId = activeWorkspace(principal, state, query.workspace_id)
        const limit = query.limit ?? 50
        const { rows, more } = await listProcesses(s.sql, {
          workspaceId,
          statuses: query.status?.split(','),
          type: query.type,
          before: query.before,
          limit,
        })
        if (more) {
          const url = new URL(request.url)
          url.searchParams.set('before', String(rows[rows.length - 1]!.id))
          set.headers.link = `<${url.pathname}${url.search}>; rel="next"`
        }
        return rows
      },
      {
        query: ListQuery,
        detail: {
          summary: 'List processes of the active workspace, newest first',
          tags: ['processes'],
          responses: responses({ 200: t.Array(ProcessSummary), ...errors }),
        },
      },
    )
    .get(
      '/stream',
      async ({ query, principal, state }) => {
        refuseWhileDraining()
        const workspaceId = activeWorkspace(principal, state, query.workspace_id)
        const statuses = query.status?.split(',')
        const register = admitStream(principal)
        s.metrics.counters.sse_connects++
        return openWorkspaceStream({
          register,
          hub: s.hub,
          settings: streamSettings,
          workspaceId,
          statuses,
          type: query.type,
          readPage: (after, limit) => listActive(s.sql, { workspaceId, statuses, type: query.type, after, limit }),
        })
      },
      {
        query: StreamQuery,
        detail: { summary: 'One SSE stream for a whole workspace (extension)', tags: ['streams'], responses: responses({ 200: EVENT_STREAM, ...errors }) },
      },
    )
    .get(
      '/:id',
      async ({ params: { id }, principal, state, request }) => {
        const ifNoneMatch = request.headers.get('if-none-match')
        if (ifNoneMatch) {
          // The cheap path for 2-second pollers: compare versions before reading the whole row.
          const current = await s.reader.version(id, principal.workspaceIds)
          if (current === null) throw notFound('Process not found')
          if (matchesEtag(ifNoneMatch, current.version)) {
            state.workspaceId = current.workspace_id
            // A Response of our own, as for the 200: Elysia's own (from `set`) costs more than the read saves.
            return new Response(null, { status: 304, headers: { etag: etagOf(current.version) } })
          }
        }
        const process = await s.reader.findText(id, principal.workspaceIds)
        if (!process) throw notFound('Process not found')
        state.workspaceId = process.workspace_id
        return new Response(process.json, {
          headers: { 'content-type': JSON_CONTENT_TYPE, etag: etagOf(process.version), 'cache-control': 'no-cache' },
        })
      },
      {
        params: IdParams,
        detail: {
          summary: 'Get one process with its full state (ETag / If-None-Match)',
          tags: ['processes'],
          responses: responses({ 200: Process, 304: null, ...errors }),
        },
      },
    )
    .get(
      '/:id/events',
      async ({ params: { id }, query, principal, state }) => {
        const visible = await s.reader.version(id, principal.workspaceIds)
        if (visible === null) throw notFound('Process not found')
        state.workspaceId = visible.workspace_id
        return listEvents(s.sql, id, query.after ?? 0, query.limit ?? 1000)
      },
      {
        params: IdParams,
        query: EventsQuery,
        detail: { summary: "A process's event log, ascending by id", tags: ['processes'], responses: responses({ 200: t.Array(ProcessEvent), ...errors }) },
      },
    )
    .get(
      '/:id/stream',
      async ({ params: { id }, query, principal, state, request }) => {
        refuseWhileDraining()
        const register = admitStream(principal)
        s.metrics.counters.sse_connects++
        const response = await openProcessStream({
          register,
          hub: s.hub,
          settings: streamSettings,
          id,
          lastEventId: parseLastEventId(request.headers.get('last-event-id'), query.last_event_id),
          read: async () => {
            const process = await s.reader.find(id, principal.workspaceIds)
            if (process) state.workspaceId = process.workspace_id
            return process
          },
        })
        if (!response) throw notFound('Process not found')
        return response
      },
      {
        params: IdParams,
        query: ProcessStreamQuery,
        detail: {
          summary: 'SSE stream of one process: 25-second windows, `event: done` at the end',
          tags: ['streams'],
          responses: responses({ 200: EVENT_STREAM, ...errors }),
        },
      },
    )
    .post(
      '',
      async ({ body, headers, principal, state, request, set }) => {
        const item = newProcess(s, body, '')
        const workspaceId = activeWorkspace(principal, state, body.workspace_id)
        requireWriter(principal, workspaceId)
        const { process, replayed, uniqueReplayed } = await createProcess(s.sql, s.hub, {
          principal,
          workspaceId,
          item,
          idempotencyKey: headers['idempotency-key'] ?? null,
          audit: auditRowFor(request, state, 201),
        })
        state.audited = !replayed
        set.status = uniqueReplayed ? 200 : 201
        set.headers.location = `/processes/${process.id}`
        if (replayed) set.headers['idempotent-replayed'] = 'true'
        if (uniqueReplayed) set.headers['unique-replayed'] = 'true'
        return process
      },
      {
        parse: JSON_BODY,
        body: CreateBody,
        headers: IdempotencyHeaders,
        detail: {
          summary:
            'Create a process in pending (extension); priority, run_at or delay_ms, max_attempts; Idempotency-Key honoured for 24 h; unique_key: 200 with the pending or running process holding it',
          tags: ['processes'],
          responses: responses({ 200: Process, 201: Process, ...errors, ...bodyErrors }),
        },
      },
    )
    .post(
      '/batch',
      async ({ body, headers, principal, state, request, set }) => {
        const items = body.processes.map((item, i) => newProcess(s, item, `/processes/${i}`))
        const workspaceId = activeWorkspace(principal, state, body.workspace_id)
        requireWriter(principal, workspaceId)
        const { processes, replayed, uniqueReplayed } = await createProcesses(s.sql, s.hub, {
          principal,
          workspaceId,
          items,
          idempotencyKey: headers['idempotency-key'] ?? null,
          audit: auditRowFor(request, state, 201),
        })
        state.audited = !replayed
        set.status = uniqueReplayed.length === processes.length ? 200 : 201
        if (replayed) set.headers['idempotent-replayed'] = 'true'
        if (uniqueReplayed.length > 0) {
          set.headers['unique-replayed'] = 'true'
          return { processes, unique_replayed: uniqueReplayed }
        }
        return { processes }
      },
      {
        parse: JSON_BODY,
        body: BatchBody,
        headers: IdempotencyHeaders,
        detail: {
          summary: 'Create 1–1000 processes in one transaction, one audit row (extension); Idempotency-Key honoured for 24 h',
          tags: ['processes'],
          responses: responses({
            200: BatchResponse,
            201: BatchResponse,
            ...errors,
            ...bodyErrors,
          }),
        },
      },
    )
    .post('/:id/retry', ({ params: { id }, principal, state, request }) => action(s, { id, principal, state, request, action: 'retry' }), {
      parse: noBody,
      params: IdParams,
      detail: { summary: 'failed → pending', tags: ['processes'], responses: responses({ 200: Process, 409: ErrorSchema, ...errors, 413: ErrorSchema }) },
    })
    .post('/:id/cancel', ({ params: { id }, principal, state, request }) => action(s, { id, principal, state, request, action: 'cancel' }), {
      parse: noBody,
      params: IdParams,
      detail: {
        summary: 'pending | running → cancelled; the worker is told at once',
        tags: ['processes'],
        responses: responses({ 200: Process, 409: ErrorSchema, ...errors, 413: ErrorSchema }),
      },
    })
    .post(
      '/:id/review',
      ({ params: { id }, body, principal, state, request }) =>
        action(s, { id, principal, state, request, action: body.decision === 'approve' ? 'approve' : 'discard', note: body.message }),
      {
        parse: JSON_BODY,
        params: IdParams,
        body: ReviewBody,
        detail: {
          summary: 'waiting_review → completed (approve) | cancelled (discard) (extension)',
          tags: ['processes'],
          responses: responses({ 200: Process, 409: ErrorSchema, ...errors, ...bodyErrors }),
        },
      },
    )
}

/** A create body's item with its defaults resolved; 422 for what the schema cannot say. */
function newProcess(s: Services, body: BatchItem, at: string): NewProcess {
  const unstorable = unstorableJson(body.metadata)
  if (unstorable) throw invalidRequest(`Invalid body ${at}/metadata: ${unstorable}`)
  if (body.run_at !== undefined && body.delay_ms !== undefined) throw invalidRequest(`Invalid body ${at}: give run_at or delay_ms, not both`)
  let runAt: string | null = null
  if (body.run_at !== undefined) {
    const ms = Date.parse(body.run_at)
    // Postgres's timestamptz reaches far, but a date past 9999 is a typo, not a schedule.
    if (!Number.isFinite(ms) || ms < 0 || ms > Date.UTC(9999, 11, 31)) throw invalidRequest(`Invalid body ${at}/run_at: expected an ISO-8601 timestamp`)
    runAt = new Date(ms).toISOString()
  }
  return {
    type: body.type,
    metadata: body.metadata ?? {},
    priority: body.priority ?? 0,
    max_attempts: s.queue.maxAttemptsFor(body.type, body.max_attempts),
    run_at: runAt,
    delay_ms: body.delay_ms ?? null,
    unique_key: body.unique_key ?? null,
  }
}

const BatchResponse = t.Object({
  processes: t.Array(Process),
  unique_replayed: t.Optional(t.Array(t.Integer(), { description: 'indexes of the items answered with an existing process holding their unique_key' })),
})

async function action(
  s: Services,
  o: {
    id: number
    principal: Parameters<typeof userAction>[2]['principal']
    state: import('../request-state').RequestState
    request: Request
    action: 'cancel' | 'retry' | 'approve' | 'discard'
    note?: string
  },
) {
  const process = await userAction(s.sql, s.hub, {
    principal: o.principal,
    id: o.id,
    action: o.action,
    note: o.note,
    audit: auditRowFor(o.request, o.state, 200),
  })
  o.state.audited = true
  o.state.workspaceId = process.workspace_id
  return process
}
