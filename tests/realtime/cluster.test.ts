// Two real server processes sharing one Postgres and one Redis, real clients on each.
import { describe, expect, it } from 'bun:test'
import { hasPostgres, hasRedis, ownRedis, redisPrefix, seededDatabase, spawnServer, waitFor } from '../support/helpers'
import { openEventSource } from '../support/sse-client'
import { TestWorker } from '../support/worker-client'

const enabled = hasPostgres && hasRedis

describe.skipIf(!enabled)('two instances, one Postgres, one Redis', async () => {
  if (!enabled) return
  const { url, tenant, wtoken } = await seededDatabase()
  const env = { DATABASE_URL: url, REDIS_URL: process.env.REDIS_URL, REDIS_PREFIX: redisPrefix(), PROGRESS_PERSIST_MS: '20' }
  const [a, b] = await Promise.all([spawnServer(env), spawnServer(env)])
  const auth = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }
  const create = async (on: string, type: string) =>
    (await (await fetch(`${on}/processes`, { method: 'POST', headers: auth, body: JSON.stringify({ type }) })).json()) as any

  it("a worker's progress on instance A reaches an EventSource on instance B, through to done", async () => {
    const p = await create(a.url, 'cluster_progress')
    const { received } = openEventSource(`${b.url}/processes/${p.id}/stream`, tenant.token)
    await waitFor(() => received.messages.length === 1)
    const worker = await TestWorker.connect(a.url, wtoken)
    const run = (await worker.request({ op: 'claim', types: ['cluster_progress'] })).process
    for (const n of [25, 50, 75]) {
      await worker.request({ op: 'progress', process_id: p.id, progress: n, attempt: run.attempts })
      await waitFor(() => received.messages.some((m) => m.data.progress === n), 3000, `progress ${n} on B`)
    }
    await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts })
    await waitFor(() => received.done.length === 1, 3000, 'done on B')
    expect(received.done[0]!.data.status).toBe('completed')
    const versions = received.messages.map((m) => m.data.version)
    expect(new Set(versions).size).toBe(versions.length)
    worker.close()
  })

  it('a cancel made on instance B reaches the worker connected to instance A', async () => {
    const p = await create(b.url, 'cluster_cancel')
    const worker = await TestWorker.connect(a.url, wtoken)
    await worker.request({ op: 'claim', types: ['cluster_cancel'] })
    expect((await fetch(`${b.url}/processes/${p.id}/cancel`, { method: 'POST', headers: auth })).status).toBe(200)
    expect((await worker.nextCancel(p.id, 3000)).op).toBe('cancel')
    worker.close()
  })

  it('a claim waiting on instance A wakes when work is created on instance B', async () => {
    const worker = await TestWorker.connect(a.url, wtoken)
    const started = Date.now()
    const waiting = worker.request({ op: 'claim', types: ['cluster_wake'], wait_ms: 20_000 })
    await Bun.sleep(300)
    const p = await create(b.url, 'cluster_wake')
    expect((await waiting).process.id).toBe(p.id)
    expect(Date.now() - started).toBeLessThan(5000)
    worker.close()
  })

  it('8 workers racing across both instances never claim the same process twice', async () => {
    const ids = await Promise.all(Array.from({ length: 30 }, (_, i) => create(i % 2 ? a.url : b.url, 'cluster_race').then((p) => p.id)))
    const workers = await Promise.all(Array.from({ length: 8 }, (_, i) => TestWorker.connect(i % 2 ? a.url : b.url, wtoken)))
    const claimed: number[] = []
    await Promise.all(
      workers.map(async (w) => {
        for (;;) {
          const reply = await w.request({ op: 'claim', types: ['cluster_race'] })
          if (!reply.process) return
          claimed.push(reply.process.id)
        }
      }),
    )
    expect(claimed.sort((x, y) => x - y)).toEqual(ids.sort((x: number, y: number) => x - y))
    for (const w of workers) w.close()
  })
})

describe.skipIf(!hasPostgres)('a Redis restart', async () => {
  if (!hasPostgres) return
  const redis = await ownRedis()
  const { url, tenant, wtoken } = await seededDatabase()
  const env = { DATABASE_URL: url, REDIS_URL: redis.url, PROGRESS_PERSIST_MS: '20', SSE_MAX_MS: '60000' }
  const [a, b] = await Promise.all([spawnServer(env), spawnServer(env)])
  const auth = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }

  it('loses no final state on any stream, keeps local delivery going and reports degraded meanwhile', async () => {
    const p = (await (await fetch(`${a.url}/processes`, { method: 'POST', headers: auth, body: JSON.stringify({ type: 'redis_cut' }) })).json()) as any
    const onA = openEventSource(`${a.url}/processes/${p.id}/stream`, tenant.token)
    const onB = openEventSource(`${b.url}/processes/${p.id}/stream`, tenant.token)
    await waitFor(() => onA.received.messages.length === 1 && onB.received.messages.length === 1)
    const worker = await TestWorker.connect(a.url, wtoken)
    const run = (await worker.request({ op: 'claim', types: ['redis_cut'] })).process
    await waitFor(() => onB.received.messages.some((m) => m.data.status === 'running'), 3000, 'running on B')

    await redis.stop()
    await waitFor(async () => ((await (await fetch(`${b.url}/ready`)).json()) as any).dependencies.redis.status === 'degraded', 5000, 'B to report degraded')
    const ready = await fetch(`${b.url}/ready`)
    expect(ready.status).toBe(200)
    // Local delivery goes on: A's own stream sees progress during the outage; the API still answers.
    await worker.request({ op: 'progress', process_id: p.id, progress: 60, attempt: run.attempts })
    await waitFor(() => onA.received.messages.some((m) => m.data.progress === 60), 3000, 'progress on A during the outage')
    expect((await fetch(`${b.url}/processes/${p.id}`, { headers: auth })).status).toBe(200)
    expect((await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts })).op).toBe('ack')
    await waitFor(() => onA.received.done.length === 1, 3000, 'done on A')

    await redis.start()
    // B re-reads its watched processes from Postgres once Redis is back, and its stream ends with the final state.
    await waitFor(() => onB.received.done.length === 1, 10_000, 'done on B after Redis returns')
    expect(onB.received.done[0]!.data.status).toBe('completed')
    await waitFor(async () => ((await (await fetch(`${b.url}/ready`)).json()) as any).dependencies.redis.status === 'ok', 5000, 'B ready again')
    worker.close()
  })
})

describe.skipIf(!hasPostgres)("a worker's leases across instances (worker:<id> channel)", async () => {
  if (!hasPostgres) return
  const redis = await ownRedis()
  const { url, tenant, wtoken } = await seededDatabase()
  const common = { DATABASE_URL: url, REDIS_URL: redis.url, PROGRESS_PERSIST_MS: '20', JOB_TIMEOUT_MS: '800' }
  // Only B sweeps, so a lease held through A can only end on B.
  const [a, b] = await Promise.all([spawnServer({ ...common, SWEEP_INTERVAL_MS: '3600000' }), spawnServer({ ...common, SWEEP_INTERVAL_MS: '100' })])
  const auth = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }
  const create = async (type: string) =>
    (await (await fetch(`${b.url}/processes`, { method: 'POST', headers: auth, body: JSON.stringify({ type }) })).json()) as any

  it("instance B's sweep of a silent worker's process reaches that worker on instance A as cancel", async () => {
    const p = await create('lease_swept')
    const worker = await TestWorker.connect(a.url, wtoken)
    await worker.request({ op: 'hello', worker_id: 'swept-worker' })
    expect((await worker.request({ op: 'claim', types: ['lease_swept'] })).process.id).toBe(p.id)
    // No heartbeat: after JOB_TIMEOUT_MS, B fails it.
    expect(await worker.nextCancel(p.id, 10_000)).toMatchObject({ op: 'cancel', process_id: p.id, status: 'failed' })
    worker.close()
  })

  it('a cancel made on B while Redis is down reaches the worker on A once Redis is back (A re-reads its ended leases)', async () => {
    const p = await create('lease_resync')
    const worker = await TestWorker.connect(a.url, wtoken)
    await worker.request({ op: 'hello', worker_id: 'resync-worker' })
    const run = (await worker.request({ op: 'claim', types: ['lease_resync'] })).process
    // Keep the lease alive through the outage, so only the cancel can end it.
    const beat = setInterval(() => void worker.request({ op: 'heartbeat', process_id: p.id, attempt: run.attempts }).catch(() => {}), 200)
    await redis.stop()
    await waitFor(async () => ((await (await fetch(`${a.url}/ready`)).json()) as any).dependencies.redis.status === 'degraded', 5000, 'A to report degraded')
    expect((await fetch(`${b.url}/processes/${p.id}/cancel`, { method: 'POST', headers: auth })).status).toBe(200)
    await Bun.sleep(500)
    expect(worker.pushes.some((f) => f.process_id === p.id)).toBe(false) // nothing could carry it yet
    await redis.start()
    expect(await worker.nextCancel(p.id, 10_000)).toMatchObject({ op: 'cancel', process_id: p.id, status: 'cancelled' })
    clearInterval(beat)
    worker.close()
  })
})
