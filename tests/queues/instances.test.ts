// The cross-instance rules of schedules, pause, rate limits, webhooks and unique_key: three server instances
// (in this process, each with its own pool, loops and Redis bridge) over one Postgres and one Redis. The
// per-second schedule runs for 10 s while the other tests run (its check comes last): 10 ticks prove what
// 30 would, each tick once and none missing.
import { afterAll, describe, expect, it } from 'bun:test'
import type { Running } from '../../src/server'
import { hasPostgres, hasRedis, listeningServer, redisPrefix, seededDatabase, sleep, waitFor } from '../support/helpers'
import { TestWorker } from '../support/worker-client'

const enabled = hasPostgres && hasRedis
const RATE = { max: 4, per_ms: 500 }
const SCHEDULE_MS = 10_000

describe.skipIf(!enabled)('three instances, one Postgres, one Redis', async () => {
  if (!enabled) return
  // Registered first, so it runs first (afterAll hooks run in order): the workers close and the three
  // instances stop side by side, before the database is dropped under them.
  let instances: Running[] = []
  const workers: TestWorker[] = []
  afterAll(async () => {
    for (const w of workers) w.close()
    await Promise.all(instances.map((i) => i.stop()))
  })
  const { url, db, tenant, wtoken } = await seededDatabase()
  const received: Array<{ id: string; body: string }> = []
  const receiver = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    async fetch(request) {
      received.push({ id: request.headers.get('webhook-id')!, body: await request.text() })
      return new Response('ok')
    },
  })
  afterAll(() => void receiver.stop(true))
  const env = {
    DATABASE_URL: url,
    REDIS_PREFIX: redisPrefix(),
    DB_POOL_MAX: '4',
    SCHEDULE_POLL_MS: '500',
    WEBHOOK_ALLOW_PRIVATE: 'on',
    WEBHOOK_POLL_MS: '50',
    TYPE_DEFAULTS: JSON.stringify({ cluster_rated: { rate: RATE } }),
  }
  instances = await Promise.all([listeningServer(env), listeningServer(env), listeningServer(env)])
  const [a, b, c] = instances as [Running, Running, Running]
  const headers = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }
  const api = async (on: { url: string }, method: string, path: string, body?: unknown) => {
    const response = await fetch(`${on.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    return { status: response.status, body: (await response.json().catch(() => null)) as any }
  }
  const create = async (on: { url: string }, type: string, extra: object = {}) => (await api(on, 'POST', '/processes', { type, ...extra })).body
  const worker = async (on: { url: string }) => {
    const w = await TestWorker.connect(on.url, wtoken)
    workers.push(w)
    return w
  }

  // The schedule starts now; its check is the last test.
  const schedule = (await api(a, 'POST', '/schedules', { type: 'cluster_tick', cron: '* * * * * *', catch_up: 'all' })).body
  const scheduleStarted = Date.now()

  it('a pause made on one instance stops claims on the others at once, and its resume wakes their waiting claims', async () => {
    const p = await create(a, 'cluster_pause')
    const [wb, wc] = [await worker(b), await worker(c)]
    expect((await api(a, 'POST', '/queues/cluster_pause/pause')).status).toBe(200)
    expect((await wb.request({ op: 'claim', types: ['cluster_pause'], wait_ms: 0 })).process).toBeNull()
    expect((await wc.request({ op: 'claim', types: ['cluster_pause'], wait_ms: 0 })).process).toBeNull()
    const waiting = wb.request({ op: 'claim', types: ['cluster_pause'], wait_ms: 20_000 })
    await sleep(300)
    const resumedAt = Date.now()
    expect((await api(a, 'POST', '/queues/cluster_pause/resume')).status).toBe(200)
    expect((await waiting).process.id).toBe(p.id)
    // Woken by the resume through Redis, not by the end of its 20-second wait.
    expect(Date.now() - resumedAt).toBeLessThan(5000)
  })

  it('no instance hands out a paused type once the pause has answered, with claims racing on all three', async () => {
    const ids = await Promise.all(Array.from({ length: 60 }, (_, i) => create(instances[i % 3]!, 'cluster_hammer').then((p) => p.id)))
    let stop = false
    const hammer = async (w: TestWorker) => {
      while (!stop) {
        const { process } = await w.request({ op: 'claim', types: ['cluster_hammer'], wait_ms: 0 })
        if (process) await w.request({ op: 'complete', process_id: process.id, attempt: process.attempts })
      }
    }
    const hammering = Promise.all([await worker(a), await worker(b), await worker(c)].map(hammer))
    await waitFor(
      async () => (await db.sql`select count(*)::int as n from processes where type = 'cluster_hammer' and started_at is not null`)[0]!.n >= 5,
      10_000,
    )
    expect((await api(b, 'POST', '/queues/cluster_hammer/pause')).status).toBe(200)
    const startedAtPause = (await db.sql`select count(*)::int as n from processes where type = 'cluster_hammer' and started_at is not null`)[0]!.n
    await sleep(500)
    stop = true
    await hammering
    const startedAfter = (await db.sql`select count(*)::int as n from processes where type = 'cluster_hammer' and started_at is not null`)[0]!.n
    expect(startedAtPause).toBeLessThan(ids.length)
    expect(startedAfter).toBe(startedAtPause)
  })

  it('holds a per-type rate limit over all three instances: at most max claims per window', async () => {
    await Promise.all(Array.from({ length: 40 }, (_, i) => create(instances[i % 3]!, 'cluster_rated')))
    const deadline = Date.now() + RATE.per_ms * 3.5
    const run = async (w: TestWorker) => {
      while (Date.now() < deadline) {
        const { processes } = await w.request({ op: 'claim', types: ['cluster_rated'], max: 3, wait_ms: 300 })
        for (const p of processes) await w.request({ op: 'complete', process_id: p.id, attempt: p.attempts })
      }
    }
    await Promise.all([await worker(a), await worker(b), await worker(c)].map(run))
    const perWindow = await db.sql<{ n: number }[]>`
      select count(*)::int as n from processes where type = 'cluster_rated' and started_at is not null
       group by floor(extract(epoch from started_at) * 1000 / ${RATE.per_ms})`
    expect(perWindow.length).toBeGreaterThanOrEqual(3)
    for (const { n } of perWindow) expect(n).toBeLessThanOrEqual(RATE.max)
    expect(perWindow.reduce((sum, w) => sum + w.n, 0)).toBeGreaterThanOrEqual(RATE.max * 2)
  })

  it("sends each webhook delivery once, whichever instance's loop takes it", async () => {
    const hook = await api(a, 'POST', '/webhooks', { url: `http://127.0.0.1:${receiver.port}/in`, events: ['process.created'], types: ['cluster_hooked'] })
    expect(hook.status).toBe(201)
    const ids = await Promise.all(Array.from({ length: 30 }, (_, i) => create(instances[i % 3]!, 'cluster_hooked').then((p) => p.id)))
    await waitFor(() => received.length >= 30, 10_000, '30 deliveries')
    await sleep(300)
    expect(received).toHaveLength(30)
    expect(new Set(received.map((r) => r.id)).size).toBe(30)
    expect(received.map((r) => JSON.parse(r.body).data.id).sort((x, y) => x - y)).toEqual(ids.sort((x, y) => x - y))
    const sent = instances.map((i) => i.deliveries.totals.attempts)
    expect(sent.reduce((x, y) => x + y, 0)).toBe(30)
  })

  it('makes one process when creates with one unique_key race on all three', async () => {
    const results = await Promise.all(
      Array.from({ length: 9 }, (_, i) => api(instances[i % 3]!, 'POST', '/processes', { type: 'cluster_unique', unique_key: 'k' })),
    )
    expect(results.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 200, 201])
    expect(new Set(results.map((r) => r.body.id)).size).toBe(1)
  })

  it('runs each tick of a per-second schedule exactly once across the three instances', async () => {
    await sleep(Math.max(0, scheduleStarted + SCHEDULE_MS - Date.now()))
    expect((await api(a, 'PATCH', `/schedules/${schedule.id}`, { enabled: false })).status).toBe(200)
    await sleep(200) // a pass that had already locked the schedule ends
    const runs = await db.sql<{ tick: string; process_id: number | null }[]>`
      select tick, process_id from schedule_runs where schedule_id = ${schedule.id} order by tick`
    const processes = await db.sql<{ tick: string }[]>`
      select metadata -> '_schedule' ->> 'tick' as tick from processes where type = 'cluster_tick' order by 1`
    expect(runs.length).toBeGreaterThanOrEqual(SCHEDULE_MS / 1000 - 1)
    // Each tick once: as many processes as runs, no two for one tick, and every second from first to last.
    expect(processes.map((p) => p.tick)).toEqual(runs.map((r) => new Date(r.tick).toISOString()))
    expect(runs.every((r) => r.process_id !== null)).toBe(true)
    const ticks = runs.map((r) => Date.parse(r.tick))
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).toBe(1000)
    expect(instances.reduce((sum, i) => sum + i.scheduler.ticksRun, 0)).toBe(runs.length)
  })
})
