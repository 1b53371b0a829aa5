// Health, readiness and metrics: no auth, not audited.
import { timingSafeEqual } from 'node:crypto'
import { Elysia, t } from 'elysia'
import { sampleStorage } from './db/retention'
import { unauthenticated } from './errors'
import { queueDepth } from './processes/queries/stats'
import { PUBLIC, documented } from './ops/docs'
import type { Services } from './wiring'

/** METRICS_TOKEN set: /metrics needs it as a bearer token (compared in constant time). */
function metricsAllowed(expected: string | undefined, header: string | null): boolean {
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
    .get(
      '/metrics',
      async ({ set, request }) => {
        if (!metricsAllowed(s.config.METRICS_TOKEN, request.headers.get('authorization')))
          throw unauthenticated('GET /metrics needs the METRICS_TOKEN bearer token')
        set.headers['content-type'] = 'text/plain; version=0.0.4; charset=utf-8'
        // Queue depth is sampled from SQL (at most every 5 s); a database down leaves the last sample.
        await s.metrics.jobs.refreshDepth(() => queueDepth(s.sql)).catch(() => {})
        await s.metrics.storage.refresh(() => sampleStorage(s.sql)).catch(() => {})
        return s.metrics.render()
      },
      {
        detail: {
          summary: 'Prometheus metrics (requests, streams, workers, jobs: queue depth, wait/run time, completions, failures)',
          tags: ['operations'],
          ...PUBLIC,
          responses: documented({ 200: ['Prometheus text format 0.0.4', t.String(), 'text/plain'] }),
        },
      },
    )
}
