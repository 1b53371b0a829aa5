// Fault: Redis unreachable for 5 s (a blackholing proxy between both instances and their own redis-server)
// while a worker on instance A reports progress to streams on A and on B. Local delivery on A goes on,
// /ready says degraded on both, B's streams get the final state once Redis is back, and nothing answers 5xx.
import { afterAll, describe, expect } from 'bun:test'
import { hasPostgres, hasRedis, ownRedis, seededDatabase, spawnServer, waitFor } from '../support/helpers'
import { TestWorker } from '../support/worker-client'
import { openStream, versionsIncrease } from '../support/sse-client'
import { Traffic } from './clients'
import { TcpProxy } from './proxy'
import { reportAfterAll, scenario, skipped } from './report'

const CUT_MS = 5000
const enabled = hasPostgres && hasRedis
const row = {
  n: 1,
  scenario: 'Redis cut',
  injected: `Redis blackholed for ${CUT_MS / 1000} s (proxy in front of an own redis-server) while a worker on A streams progress to A and B`,
  invariant: "A's streams keep flowing; B's streams get the final state after Redis returns; /ready degraded during the cut; no 5xx",
}
reportAfterAll([1])
if (!enabled) skipped(row, 'needs DATABASE_URL and REDIS_URL')

describe.skipIf(!enabled)('Redis cut for 5 s', async () => {
  if (!enabled) return
  const redis = await ownRedis()
  const proxy = await TcpProxy.start({ host: '127.0.0.1', port: redis.port })
  afterAll(() => proxy.close())
  const { url, tenant, wtoken } = await seededDatabase()
  const env = { DATABASE_URL: url, REDIS_URL: proxy.rewrite(redis.url), PROGRESS_PERSIST_MS: '20', SSE_MAX_MS: '60000' }
  const [a, b] = await Promise.all([spawnServer(env), spawnServer(env)])
  const traffic = new Traffic()
  let stopPolling = () => {}
  afterAll(() => stopPolling())

  scenario(row, async () => {
    const create = async () =>
      (await traffic.json(`${a.url}/processes`, { method: 'POST', token: tenant.token, body: JSON.stringify({ type: 'redis_cut' }) })).body
    // P1 finishes during the cut, P2 after it.
    const [p1, p2] = [await create(), await create()]
    const streams = (base: string, id: number) => [0, 1].map(() => openStream(`${base}/processes/${id}/stream`, tenant.token, { onResponse: traffic.record }))
    const onA = { [p1.id]: streams(a.url, p1.id), [p2.id]: streams(a.url, p2.id) }
    const onB = { [p1.id]: streams(b.url, p1.id), [p2.id]: streams(b.url, p2.id) }
    const dashboardB = openStream(`${b.url}/processes/stream`, tenant.token, { onResponse: traffic.record })
    const all = [...Object.values(onA).flat(), ...Object.values(onB).flat()]
    await waitFor(() => all.every((s) => s.messages.length >= 1) && dashboardB.messages.length >= 2, 5000, 'every stream to get its snapshot')

    const worker = await TestWorker.connect(a.url, wtoken)
    await worker.request({ op: 'hello', worker_id: 'redis-cut-worker' })
    const attempt = new Map<number, number>()
    for (let i = 0; i < 2; i++) {
      const run = (await worker.request({ op: 'claim', types: ['redis_cut'] })).process
      attempt.set(run.id, run.attempts)
    }
    const progress = async (id: number, n: number) => {
      const reply = await worker.request({ op: 'progress', process_id: id, progress: n, attempt: attempt.get(id) })
      expect(reply).toMatchObject({ op: 'ack' })
    }
    await progress(p1.id, 5)
    await progress(p2.id, 5)
    const progressed = (list: typeof all, id: number, n: number) => list.every((s) => s.messages.some((m) => m.data.id === id && m.data.progress === n))
    await waitFor(() => progressed(onB[p1.id]!, p1.id, 5) && progressed(onB[p2.id]!, p2.id, 5), 5000, 'progress on B through Redis before the cut')

    // The cut: open connections destroyed, new ones accepted and never answered.
    const cutAt = Date.now()
    await proxy.cut('blackhole')
    const readiness: Array<{ at: number; on: string; status: number; redis: string }> = []
    let polling = true
    stopPolling = () => (polling = false)
    const poll = (async () => {
      while (polling) {
        for (const [on, base] of [
          ['A', a.url],
          ['B', b.url],
        ] as const) {
          const r = await traffic.json(`${base}/ready`)
          readiness.push({ at: Date.now(), on, status: r.status, redis: r.body.dependencies.redis.status })
        }
        // The API keeps answering on both instances.
        await traffic.json(`${b.url}/processes/${p1.id}`, { token: tenant.token })
        await traffic.json(`${a.url}/processes?limit=5`, { token: tenant.token })
        await Bun.sleep(100)
      }
    })()
    await waitFor(() => ['A', 'B'].every((on) => readiness.some((r) => r.on === on && r.redis === 'degraded')), 3000, 'both instances to report Redis degraded')
    const degradedAfterMs = Date.now() - cutAt

    // Local delivery on A goes on: every acked progress reaches A's own streams during the cut.
    let n = 10
    const sentDuringCut: number[] = []
    while (Date.now() - cutAt < CUT_MS - 1500 && n < 99) {
      n += 1
      await progress(p1.id, n)
      await progress(p2.id, n)
      sentDuringCut.push(n)
      await waitFor(() => progressed(onA[p1.id]!, p1.id, n) && progressed(onA[p2.id]!, p2.id, n), 1000, `progress ${n} on A's own streams during the cut`)
      await Bun.sleep(150)
    }
    expect((await worker.request({ op: 'complete', process_id: p1.id, attempt: attempt.get(p1.id), result_summary: { rows: 1 } })).op).toBe('ack')
    await waitFor(() => onA[p1.id]!.every((s) => s.done.length === 1), 1000, "done on A's own streams during the cut")
    await Bun.sleep(Math.max(0, cutAt + CUT_MS - Date.now()))
    const restoredAt = Date.now()
    // The cut was real: nothing of it reached B meanwhile.
    for (const s of onB[p2.id]!) expect(Math.max(...s.messages.map((m) => m.data.progress))).toBe(5)
    expect(onB[p1.id]!.every((s) => s.done.length === 0)).toBe(true)
    await proxy.restore()

    // B re-reads what it watches from Postgres once Redis is back: the final state of P1, P2's latest progress.
    await waitFor(() => onB[p1.id]!.every((s) => s.done.length === 1), 10_000, "done on B's streams after Redis returns")
    await waitFor(() => progressed(onB[p2.id]!, p2.id, n), 10_000, "P2's latest progress on B after Redis returns")
    await waitFor(
      () => dashboardB.messages.some((m) => m.data.id === p1.id && m.data.status === 'completed'),
      10_000,
      "P1's final state on B's workspace stream",
    )
    const caughtUpMs = Date.now() - restoredAt
    await waitFor(
      () => ['A', 'B'].every((on) => readiness.some((r) => r.on === on && r.at > restoredAt && r.redis === 'ok')),
      10_000,
      'both instances ready again',
    )
    polling = false
    await poll
    // After the outage, delivery through Redis works again: P2 finishes on A and B's streams see it at once.
    expect((await worker.request({ op: 'complete', process_id: p2.id, attempt: attempt.get(p2.id) })).op).toBe('ack')
    await waitFor(() => onB[p2.id]!.every((s) => s.done.length === 1), 3000, "P2's done on B through Redis")

    for (const s of onB[p1.id]!) expect(s.done[0]!.data).toMatchObject({ status: 'completed', progress: 100, result_summary: { rows: 1 } })
    for (const s of all) expect(versionsIncrease(s)).toBe(true)
    // /ready: 200 throughout (Redis is not required), "degraded" from the moment both noticed until the restore.
    expect(readiness.filter((r) => r.status !== 200)).toEqual([])
    const cutWindow = readiness.filter((r) => r.at > cutAt + degradedAfterMs && r.at < restoredAt)
    expect(cutWindow.length).toBeGreaterThan(4)
    expect(cutWindow.filter((r) => r.redis !== 'degraded')).toEqual([])
    expect(traffic.serverErrors).toEqual([])
    for (const s of [...all, dashboardB]) s.source.close()
    worker.close()
    return `${all.length + 1} streams, ${sentDuringCut.length * 2} progress frames during the cut, degraded after ${degradedAfterMs} ms, B caught up ${caughtUpMs} ms after restore, ${traffic.seen.length} responses, 0 5xx`
  })
})
