// The HTTP application: errors, docs, operations, the dashboard, /me and the process routes,
// wrapped by `createHandler`, which owns what every request shares (request id, body limit, CORS,
// audit of authenticated routes, the JSON log line and metrics).
import { openapi } from '@elysiajs/openapi'
import { Elysia } from 'elysia'
import { allowedMethods, routeTemplates } from './allowed-methods'
import { Authenticator } from './auth/authenticator'
import { clientAddress } from './auth/client-address'
import { CorsRefusals } from './cors-refusals'
import { auditRowFor, authenticateFrom } from './auth/plugin'
import { sessions } from './auth/session'
import { dashboard } from './dashboard/routes'
import { docs } from './ops/docs'
import { HttpError, JSON_CONTENT_TYPE, errorResponse, isUnavailable, payloadTooLarge } from './errors'
import { me } from './me'
import { ops } from './health'
import { knownMethod } from './ops/metrics'
import { processes } from './processes/index'
import { queues } from './queues/routes'
import { schedules } from './schedules/routes'
import { webhooks } from './webhooks/routes'
import { stats } from './processes/stats'
import { beginRequest, newRequestId, requestState, shareState } from './auth/request-state'
import { validationDetails, validationMessage } from './validation'
import type { Services } from './wiring'
import { workers } from './workers/routes'

export const MAX_BODY_BYTES = 1024 * 1024

export function createApp(s: Services) {
  // Built on the first wrong method, once every route is registered.
  let methodsOf: ((pathname: string) => string[]) | undefined
  const app = new Elysia({ normalize: false })
    .onTransform({ as: 'global' }, ({ request, route }) => {
      requestState(request).route = route
    })
    .onError({ as: 'global' }, ({ code, error: raised, request }) => {
      const state = requestState(request)
      // A failure inside a parse hook (authentication runs there) arrives wrapped in Elysia's ParseError.
      const cause = code === 'PARSE' ? (raised as Error).cause : undefined
      const error = cause instanceof HttpError || isUnavailable(cause) ? cause : raised
      if (error instanceof HttpError) return errorResponse(error.status, error.code, error.message, error.details, error.headers)
      if (error === raised)
        switch (code) {
          case 'VALIDATION':
            return errorResponse(422, 'invalid_request', validationMessage(error), validationDetails(error))
          case 'PARSE':
            return errorResponse(400, 'bad_request', 'Request body is not valid JSON')
          case 'NOT_FOUND': {
            methodsOf ??= allowedMethods(app.routes)
            const allow = methodsOf(new URL(request.url).pathname)
            if (allow.length > 0)
              return errorResponse(405, 'method_not_allowed', `${request.method} is not allowed here; this path takes ${allow.join(', ')}`, undefined, {
                Allow: allow.join(', '),
              })
            return errorResponse(404, 'not_found', 'No such route')
          }
        }
      if (isUnavailable(error)) return errorResponse(503, 'unavailable', 'Database unavailable', undefined, { 'Retry-After': '1' })
      s.log.error('unhandled error', { request_id: state.requestId, route: state.route, error: String(error), stack: (error as Error)?.stack })
      return errorResponse(500, 'internal', 'Internal server error', undefined, undefined, state.requestId)
    })
    .use(
      openapi({
        path: '/openapi',
        specPath: '/openapi/json',
        // The page is ours (ops/docs.ts): the plugin's loads its UI from a CDN at @latest.
        provider: null,
        documentation: {
          info: {
            title: 'Processes API',
            version: '1.0.0',
            description: 'Read, control and stream long-running background jobs. Auth: Bearer token or the ps_session cookie.',
          },
          components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
          security: [{ bearer: [] }],
        },
        exclude: { paths: ['/', '/app.js', '/style.css'] },
      }),
    )
    .use(docs())
    .use(ops(s))
    .use(dashboard())
    .use(me(s))
    .use(stats(s))
    .use(workers(s))
    .use(sessions(s))
    .use(schedules(s))
    .use(webhooks(s))
    .use(queues(s))
    .use(processes(s))
  return app
}

export type App = ReturnType<typeof createApp>

/** `ip` is asked only when the request is audited (the socket's address costs a call per request). */
export type Handler = (request: Request, ip?: () => string | null) => Promise<Response>

const REQUEST_ID = /^[\w.:-]{1,128}$/

/** The whole request path around the Elysia app; used by the listening server and by in-process tests. */
export function createHandler(s: Services, app = createApp(s)): Handler {
  app.compile()
  const origins = new Set(
    s.config.CORS_ORIGINS.split(',')
      .map((o) => o.trim())
      .filter(Boolean),
  )
  // `*` lets any origin read, never with credentials: it is answered as the literal `*` (a browser then sends
  // no cookie). Credentials go only to origins listed by name.
  const anyOrigin = origins.delete('*')
  const logRequests = s.log.enabled('info')
  const templateOf = routeTemplates(app.routes)
  const corsRefusals = new CorsRefusals(s.log, s.config.CORS_ORIGINS, templateOf)
  const refusals = new RefusalDelay(s.config.REFUSAL_DELAY_MS)

  return async (request, ip) => {
    const incoming = request.headers.get('x-request-id')
    const fromClient = incoming !== null && REQUEST_ID.test(incoming)
    const requestId = fromClient ? incoming : newRequestId()
    // The socket's peer, or the client a trusted proxy names (TRUSTED_PROXIES), worked out once if asked.
    let client: ReturnType<typeof clientAddress> | undefined
    const resolve = () => (client ??= clientAddress(request, ip?.() ?? null, s.proxies))
    const state = beginRequest(
      request,
      requestId,
      () => resolve().address,
      () => resolve().viaTrustedProxy,
    )
    state.requestIdFromClient = fromClient
    const origin = request.headers.get('origin')
    const cors = origin ? (origins.has(origin) ? origin : anyOrigin ? '*' : null) : null
    const refused = origin && !cors && CorsRefusals.isForeign(origin, request) ? corsRefusals.refuse(origin, request, null) : null

    let response: Response
    if (cors && request.method === 'OPTIONS') response = preflight(cors)
    else if (refused) response = refused
    else {
      try {
        const method = request.method
        let routed = withRoutableUrl(request)
        if (method === 'HEAD') routed = asGet(routed)
        else if (method !== 'GET') routed = await limitBody(routed)
        if (routed !== request) shareState(request, routed)
        response = await app.handle(routed)
        if (method === 'HEAD') response = headersOnly(response)
      } catch (error) {
        response =
          error instanceof HttpError
            ? errorResponse(error.status, error.code, error.message)
            : errorResponse(500, 'internal', 'Internal server error', undefined, undefined, requestId)
        // A refused body is audited like any request that carries a credential (its principal if it has a valid one).
        if (error instanceof HttpError && error.status === 413) await audit413(s, request, state, templateOf)
      }
    }

    const headers = response.headers
    headers.set('x-request-id', requestId)
    // One Content-Type for JSON on every route, whatever built the response (Elysia writes its own).
    const type = headers.get('content-type')
    if (type !== null && type !== JSON_CONTENT_TYPE && type.startsWith('application/json')) headers.set('content-type', JSON_CONTENT_TYPE)
    if (cors) {
      headers.set('access-control-allow-origin', cors)
      if (cors !== '*') headers.set('access-control-allow-credentials', 'true')
      headers.set('access-control-expose-headers', 'ETag, Idempotent-Replayed, Link, Location, Unique-Replayed, X-Request-Id')
      headers.append('vary', 'Origin')
    }
    const status = response.status
    // A template (what Elysia matched) or `unmatched`: a raw path never becomes a label, a log field or an audit row.
    const route = state.route ?? 'unmatched'
    if (state.authenticated && !state.audited) s.audit.record(auditRowFor(request, state, status))
    const ms = performance.now() - state.startedAt
    const method = knownMethod(request.method)
    s.metrics.request(method, route, status, ms)
    if (logRequests) s.log.request(method, route, status, ms, requestId)
    if (refusals.delayMs > 0 && isRefusal(status, state.principal !== null)) await refusals.hold()
    return response
  }
}

/**
 * Refusals are answered slowly: a 429, a 401, or a 413 to a stranger waits REFUSAL_DELAY_MS before it is sent.
 * A flood is a closed loop (each client sends its next request when the last is answered), so what the
 * server spends on a refusal is not what costs its other tenants: the rate the flood gets answered at is.
 * 16 connections sending random tokens were answered 4,000 times a second, each 429 cheap, and together
 * they took the cores from everyone (a victim's p99 7× its quiet figure); held 250 ms each, they get 64 a
 * second. A well-behaved client is refused rarely and waits Retry-After anyway. At most MAX_HELD refusals are
 * held at once (a timer and a pending response each); past that they are sent at once.
 */
class RefusalDelay {
  private held = 0
  static readonly MAX_HELD = 2000
  constructor(readonly delayMs: number) {}

  async hold() {
    if (this.held >= RefusalDelay.MAX_HELD) return
    this.held++
    try {
      await Bun.sleep(this.delayMs)
    } finally {
      this.held--
    }
  }
}

/** A 429, a failed authentication (401), or a body refused (413) to a caller with no valid credential. */
function isRefusal(status: number, authenticated: boolean): boolean {
  return status === 429 || status === 401 || (status === 413 && !authenticated)
}

async function audit413(s: Services, request: Request, state: ReturnType<typeof requestState>, templateOf: (pathname: string) => string | null) {
  state.authenticated = true
  // Refused before routing: the template its path would match, else `unmatched` (never the path itself).
  state.route ??= templateOf(new URL(request.url).pathname) ?? 'unmatched'
  // Throttled per address like any authentication: a flood of 413s with random tokens costs no look-up each.
  state.principal = await authenticateFrom(s, state, Authenticator.tokenOf(request)).catch(() => null)
}

function preflight(origin: string): Response {
  return new Response(null, {
    status: 204,
    headers: {
      'access-control-allow-origin': origin,
      ...(origin === '*' ? {} : { 'access-control-allow-credentials': 'true' }),
      'access-control-allow-methods': 'GET, POST, PATCH, DELETE, OPTIONS',
      'access-control-allow-headers': 'Authorization, Content-Type, Idempotency-Key, If-None-Match, Last-Event-ID, X-Request-Id',
      'access-control-max-age': '600',
      vary: 'Origin',
    },
  })
}

/**
 * HEAD is answered by the GET route, with its status and headers and no body. It reaches Elysia as a GET:
 * Elysia's own HEAD reads the whole body to count its length, which for an SSE stream is the whole window.
 */
function asGet(request: Request): Request {
  return new Request(request.url, { method: 'GET', headers: request.headers })
}

/** The body is cancelled unread: an SSE stream closes at once (its session, its subscription). */
function headersOnly(response: Response): Response {
  response.body?.cancel().catch(() => {})
  return new Response(null, { status: response.status, statusText: response.statusText, headers: response.headers })
}

/**
 * Origins (`http://host:port/`) whose URLs are known to route: checking a URL against them is a `startsWith`,
 * where `URL.canParse` would cost ~150 ns on every request. A few, replaced in turn, so a flood of odd hosts
 * cannot grow it.
 */
const routableOrigins: string[] = []
const MAX_ROUTABLE_ORIGINS = 8
let nextOrigin = 0

/**
 * A request whose URL Elysia or `new URL` cannot take gets an equivalent one that both can, with the same path
 * and query; the host is only used for routing. Bun hands over a bare path (`/processes/1`) when the Host header
 * is missing, empty or not a host (`a b`), and keeps some that do not parse (`[::1`, `a:b`); and Elysia finds the
 * path by searching for '/' from the 12th character, which misses it behind a very short host (`http://x/…`).
 */
function withRoutableUrl(request: Request): Request {
  const url = request.url
  for (let i = 0; i < routableOrigins.length; i++) if (url.startsWith(routableOrigins[i]!)) return request
  const scheme = url.indexOf('://')
  const pathStart = scheme === -1 ? url.indexOf('/') : url.indexOf('/', scheme + 3)
  if (scheme !== -1 && pathStart >= 11 && URL.canParse(url)) {
    routableOrigins[nextOrigin] = url.slice(0, pathStart + 1)
    nextOrigin = (nextOrigin + 1) % MAX_ROUTABLE_ORIGINS
    return request
  }
  const path = pathStart === -1 ? '/' : url.slice(pathStart)
  return new Request(`http://localhost${path}`, request)
}

/** Refuses bodies over 1 MiB with the API's 413 error body, whether or not they declare a length. */
async function limitBody(request: Request): Promise<Request> {
  if (!request.body) return request
  const declared = request.headers.get('content-length')
  if (declared !== null) {
    if (Number(declared) > MAX_BODY_BYTES) throw payloadTooLarge()
    return request
  }
  // Chunked: read up to the limit, then hand Elysia an ordinary request with the bytes read.
  const reader = request.body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > MAX_BODY_BYTES) {
      reader.cancel().catch(() => {})
      throw payloadTooLarge()
    }
    chunks.push(value)
  }
  return new Request(request.url, { method: request.method, headers: request.headers, body: Buffer.concat(chunks) })
}
