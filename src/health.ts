// Health, readiness and metrics: no auth, not audited. /metrics is served on its own port (metricsServer,
// METRICS_PORT on METRICS_HOST, loopback by default) and, unless METRICS_ON_API_PORT=off, on the API's port.
import { timingSafeEqual } from 'node:crypto'
import { Elysia, t } from 'elysia'
import { sampleStorage } from './db/retention'
import { errorResponse, unauthenticated } from './errors'
import { queueDepth } from './processes/queries/stats'
import { PUBLIC, documented } from './ops/docs'
import type { Services } from './wiring'

/** METRICS_TOKEN set: /metrics needs it as a bearer token (compared in constant time), on either port. */
export function metricsAllowed(expected: string | undefined, header: string | null): boolean {
  if (expected === undefined) return true
  const given = header ? /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1] : undefined
  if (!given) return false
  const a = Buffer.from(given)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

const DB_CHECK_TIMEOUT_MS = 2000

export async function checkDatabase(s: Services): Promise<boolean> {
  let timer: Timer | undefined
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timeout')), DB_CHECK_TIMEOUT_MS)
    })
    await Promise.race([s.sql`select 1`, timeout])
    return true
  } catch {
    return false
  } finally {
    clearTimeout(timer)
  }
}

const Health = t.Object({ status: t.Literal('ok') })
const Readiness = t.Object({
  status: t.UnionEnum(['ok', 'degraded', 'unavailable']),
  draining: t.Boolean(),
  dependencies: t.Object({
    database: t.Object({ status: t.UnionEnum(['ok', 'down']), kind: t.String() }),
    redis: t.Object({ status: t.UnionEnum(['ok', 'degraded', 'disabled']) }),
  }),
})

export function ops(s: Services) {
  return new Elysia()
    .get('/health', () => ({ status: 'ok' }), {
      detail: { summary: 'Liveness: the process answers', tags: ['operations'], ...PUBLIC, responses: documented({ 200: ['OK', Health] }) },
    })
    .get(
      '/ready',
      async ({ set }) => {
        const database = (await checkDatabase(s)) ? 'ok' : 'down'
        const redisHealthy = s.hub.bridgeHealthy
        const redis = redisHealthy === null ? 'disabled' : redisHealthy ? 'ok' : 'degraded'
        const ready = database === 'ok' && !s.draining.value
        set.status = ready ? 200 : 503
        return {
          status: !ready ? 'unavailable' : redis === 'degraded' ? 'degraded' : 'ok',
          draining: s.draining.value,
          dependencies: { database: { status: database, kind: s.db.kind }, redis: { status: redis } },
        }
      },
      {
        detail: {
          summary: 'Readiness: 503 when the database is down; Redis down is "degraded"',
          tags: ['operations'],
          ...PUBLIC,
          responses: documented({ 200: ['Ready (Redis may be degraded)', Readiness], 503: ['Not ready: database down, or draining', Readiness] }),
        },
      },
    )
    .use(metricsOnApiPort(s))
}

/** The Prometheus text, with queue depth and storage sampled from SQL (a database down leaves the last sample). */
export async function renderMetrics(s: Pick<Services, 'sql' | 'metrics'>): Promise<string> {
  await s.metrics.jobs.refreshDepth(() => queueDepth(s.sql)).catch(() => {})
  await s.metrics.storage.refresh(() => sampleStorage(s.sql)).catch(() => {})
  return s.metrics.render()
}

const PROMETHEUS_TEXT = 'text/plain; version=0.0.4; charset=utf-8'

/**
 * GET /metrics on the API's port (METRICS_ON_API_PORT=on, the default), needing METRICS_TOKEN when it is set.
 * With `off` the route is not registered: a 404 like any unknown path, so the public port says nothing
 * about what the server counts.
 */
function metricsOnApiPort(s: Services) {
  const app = new Elysia({ name: 'metrics-on-api-port' })
  if (s.config.METRICS_ON_API_PORT === 'off') return app
  return app.get(
    '/metrics',
    async ({ set, request }) => {
      if (!metricsAllowed(s.config.METRICS_TOKEN, request.headers.get('authorization')))
        throw unauthenticated('GET /metrics needs the METRICS_TOKEN bearer token')
      set.headers['content-type'] = PROMETHEUS_TEXT
      return renderMetrics(s)
    },
    {
      detail: {
        summary: 'Prometheus metrics (requests, streams, workers, jobs: queue depth, wait/run time, completions, failures); needs METRICS_TOKEN when it is set',
        tags: ['operations'],
        ...PUBLIC,
        responses: documented({ 200: ['Prometheus text format 0.0.4', t.String(), 'text/plain'] }),
      },
    },
  )
}

/**
 * The metrics port's whole handler: GET /metrics and nothing else. Not routed through the app, not audited,
 * not counted (a scrape every few seconds would only count itself).
 */
export function metricsHandler(s: Pick<Services, 'sql' | 'metrics' | 'config'>): (request: Request) => Promise<Response> {
  return async (request) => {
    const url = new URL(request.url)
    if (url.pathname !== '/metrics') return errorResponse(404, 'not_found', 'No such route: this port serves GET /metrics only')
    if (request.method !== 'GET' && request.method !== 'HEAD')
      return errorResponse(405, 'method_not_allowed', `${request.method} is not allowed here; this path takes GET`, undefined, { Allow: 'GET, HEAD' })
    if (!metricsAllowed(s.config.METRICS_TOKEN, request.headers.get('authorization')))
      return errorResponse(401, 'unauthenticated', 'GET /metrics needs the METRICS_TOKEN bearer token', undefined, { 'WWW-Authenticate': 'Bearer' })
    const body = request.method === 'HEAD' ? null : await renderMetrics(s)
    return new Response(body, { headers: { 'content-type': PROMETHEUS_TEXT } })
  }
}
