import { expect, it } from 'bun:test'
import { createTenant, listeningServer, testDatabase, waitFor, workerToken } from '../support/helpers'
import { TestWorker } from '../support/worker-client'

it('exposes Prometheus metrics: requests by route and status, streams, workers, events, coalescing, lag', async () => {
  const { db } = await testDatabase()
  const server = await listeningServer({ PROGRESS_PERSIST_MS: '200' }, db)
  const tenant = await createTenant(db.sql)
  const headers = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }
  const p = (await (await fetch(`${server.url}/processes`, { method: 'POST', headers, body: JSON.stringify({ type: 'metered' }) })).json()) as any
  await fetch(`${server.url}/processes/999999`, { headers })
  const stream = await fetch(`${server.url}/processes/${p.id}/stream`, { headers })
  const worker = await TestWorker.connect(server.url, await workerToken(db.sql))
  const run = (await worker.request({ op: 'claim', types: ['metered'] })).process
  await Promise.all(Array.from({ length: 10 }, (_, i) => worker.request({ op: 'progress', process_id: p.id, progress: i + 1, attempt: run.attempts })))
  // Acked at once, written behind within PROGRESS_PERSIST_MS (200 ms here).
  await waitFor(() => server.services.metrics.counters.progress_writes > 0, 5000, 'the write-behind')

  const response = await fetch(server.metricsUrl!)
  expect(response.headers.get('content-type')).toStartWith('text/plain')
  const text = await response.text()
  const value = (name: string) => Number(new RegExp(`^${name.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1])
  expect(value('processes_http_requests_total{method="POST",route="/processes",status="201"}')).toBe(1)
  expect(value('processes_http_requests_total{method="GET",route="/processes/:id",status="404"}')).toBe(1)
  expect(value('processes_sse_streams_open')).toBe(1)
  expect(value('processes_workers_connected')).toBe(1)
  expect(value('processes_progress_frames_total')).toBe(10)
  expect(value('processes_progress_writes_total')).toBeLessThan(10)
  expect(value('processes_progress_coalescing_ratio')).toBeGreaterThan(1)
  // One metric for published events, a counter: created, claimed, 10 progress writes (coalesced to fewer).
  const published = value('processes_events_published_total')
  expect(published).toBeGreaterThanOrEqual(3)
  expect(text).toContain('# TYPE processes_events_published_total counter')
  expect(text).not.toMatch(/^processes_events_published /m)
  expect(text.match(/^processes_events_published\S* /gm)).toEqual(['processes_events_published_total '])
  expect(value('processes_event_loop_lag_ms')).toBeGreaterThanOrEqual(0)
  expect(text).toContain('processes_redis_up')
  // It moves with every published change.
  expect((await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts })).op).toBe('ack')
  const later = await (await fetch(server.metricsUrl!)).text()
  expect(Number(/^processes_events_published_total (\S+)$/m.exec(later)?.[1])).toBe(published + 1)
  await stream.body!.cancel()
  worker.close()
  await waitFor(async () => /^processes_sse_streams_open 0$/m.test(await (await fetch(server.metricsUrl!)).text()), 5000, 'the stream gauge to drop')
}, 30_000)
