// Live state (README: Worker protocol, "Live state"): progress acked once accepted and fanned out at once,
// written behind; a reconnect with a Last-Event-ID of a live state not written yet never takes progress back;
// versions of changes by anyone but the lease holder jump past the holder's live versions.
import { describe, expect, it } from 'bun:test'
import { LIVE_VERSION_JUMP } from '../../src/processes/live'
import { createTenant, hasRedis, listeningServer, redisPrefix, restAs, testDatabase, waitFor, workerToken } from '../support/helpers'
import { readFrames } from '../support/sse-client'
import { TestWorker } from '../support/worker-client'

const { db } = await testDatabase()
// Nothing is written behind during these tests (PROGRESS_PERSIST_MS 60 s): the row stays at the claim.
const env = { PROGRESS_PERSIST_MS: '60000', SSE_MAX_MS: '60000', REDIS_PREFIX: redisPrefix() }
const a = await listeningServer(env, db)
const tenant = await createTenant(db.sql)
const wtoken = await workerToken(db.sql)
const { auth, create } = restAs(a.url, tenant.token)
let typeSeq = 0
const freshType = () => `live_${typeSeq++}`
const rowOf = async (id: number) => (await db.sql<{ progress: number; version: number }[]>`select progress, version from processes where id = ${id}`)[0]!

async function running(type = freshType()) {
  const p = await create(type)
  const worker = await TestWorker.connect(a.url, wtoken)
  const run = (await worker.request({ op: 'claim', types: [type] })).process
  return { p, worker, run }
}

const stream = (base: string, id: number, lastEventId?: number) =>
  fetch(`${base}/processes/${id}/stream`, { headers: { ...auth, ...(lastEventId === undefined ? {} : { 'last-event-id': String(lastEventId) }) } })

describe('live state on one instance', () => {
  it('a stream gets each accepted progress at once, with strictly increasing ids, though the row is not written', async () => {
    const { p, worker, run } = await running()
    const response = await stream(a.url, p.id)
    const frames = readFrames(response, { maxMs: 1500 })
    await Bun.sleep(100)
    for (const progress of [10, 20, 30]) await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress })
    const { frames: got } = await frames
    const states = got.filter((f) => f.data)
    expect(states.map((f) => f.data.progress)).toEqual([0, 10, 20, 30])
    expect(states.map((f) => Number(f.id))).toEqual([run.version, run.version + 1, run.version + 2, run.version + 3])
    expect(await rowOf(p.id)).toEqual({ progress: 0, version: run.version })
    worker.close()
  })

  it('refuses progress of another attempt or another worker from memory, and takes nothing from it', async () => {
    const { p, worker, run } = await running()
    expect(await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts + 1, progress: 70 })).toMatchObject({
      op: 'error',
      code: 'not_owner',
    })
    const other = await TestWorker.connect(a.url, wtoken)
    expect(await other.request({ op: 'progress', process_id: p.id, progress: 70 })).toMatchObject({ op: 'error', code: 'not_owner' })
    expect((await (await fetch(`${a.url}/processes/${p.id}`, { headers: auth })).json()) as any).toMatchObject({ progress: 0, version: run.version })
    worker.close()
    other.close()
  })

  it("a user's cancel of a running process jumps past the holder's live versions, and the worker hears it", async () => {
    const { p, worker, run } = await running()
    for (const progress of [10, 20]) await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress })
    const cancelled = (await (await fetch(`${a.url}/processes/${p.id}/cancel`, { method: 'POST', headers: auth })).json()) as any
    expect(cancelled.status).toBe('cancelled')
    expect(cancelled.version).toBe(run.version + LIVE_VERSION_JUMP)
    expect(cancelled.version).toBeGreaterThan(run.version + 2)
    expect((await worker.nextCancel(p.id, 3000)).status).toBe('cancelled')
    worker.close()
  })

  it('a Last-Event-ID ahead of the row by more than the live lead, or of a process that is not running, gets the snapshot', async () => {
    const { p, worker, run } = await running()
    const far = await readFrames(await stream(a.url, p.id, run.version + LIVE_VERSION_JUMP + 5), { maxMs: 500 })
    expect(far.frames.filter((f) => f.data).map((f) => Number(f.id))).toEqual([run.version])
    const pending = await create(freshType())
    const ahead = await readFrames(await stream(a.url, pending.id, pending.version + 3), { maxMs: 500 })
    expect(ahead.frames.filter((f) => f.data).map((f) => Number(f.id))).toEqual([pending.version])
    worker.close()
  })
})

describe.skipIf(!hasRedis)('live state across instances', async () => {
  const b = hasRedis ? await listeningServer(env, db) : null

  it('another instance shows the live state it hears, in reads and in its streams', async () => {
    const { p, worker, run } = await running()
    const response = await stream(b!.url, p.id)
    const frames = readFrames(response, { maxMs: 1500 })
    await Bun.sleep(200)
    for (const progress of [40, 50]) await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress })
    const states = (await frames).frames.filter((f) => f.data)
    expect(states.map((f) => f.data.progress)).toEqual([0, 40, 50])
    // While B watches it, B's GET shows what B's hub last delivered, not the row (progress 0).
    const watching = await stream(b!.url, p.id)
    await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress: 60 })
    await waitFor(
      async () => ((await (await fetch(`${b!.url}/processes/${p.id}`, { headers: auth })).json()) as any).progress === 60,
      3000,
      "B's GET to show the live state",
    )
    await watching.body?.cancel()
    expect(await rowOf(p.id)).toMatchObject({ progress: 0 })
    worker.close()
  })

  it('a reconnect to an instance that knows only the row waits for the next state past its Last-Event-ID: progress never goes back', async () => {
    const { p, worker, run } = await running()
    for (const progress of [10, 20, 30]) await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress })
    const seen = run.version + 3
    // B has never seen this process: its row says progress 0 at the claim's version.
    const frames = readFrames(await stream(b!.url, p.id, seen), { maxMs: 1500 })
    await Bun.sleep(300)
    await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress: 40 })
    const states = (await frames).frames.filter((f) => f.data)
    expect(states.map((f) => [Number(f.id), f.data.progress])).toEqual([[seen + 1, 40]])
    worker.close()
  })

  it('a worker that says hello on another instance moves its leases there: versions go on past the old holder, the old holder writes nothing', async () => {
    const type = freshType()
    const q = await create(type)
    const w1 = await TestWorker.connect(a.url, wtoken)
    await w1.request({ op: 'hello', worker_id: 'mover-2' })
    const r1 = (await w1.request({ op: 'claim', types: [type] })).process
    for (const progress of [10, 20]) await w1.request({ op: 'progress', process_id: q.id, attempt: r1.attempts, progress })
    const watch = readFrames(await stream(a.url, q.id), { maxMs: 2000 })
    await Bun.sleep(100)
    const w2 = await TestWorker.connect(b!.url, wtoken)
    expect(await w2.request({ op: 'hello', worker_id: 'mover-2' })).toMatchObject({ op: 'ack', processes: [q.id] })
    const ack = await w2.request({ op: 'progress', process_id: q.id, attempt: r1.attempts, progress: 30 })
    expect(ack.version).toBeGreaterThan(r1.version + LIVE_VERSION_JUMP)
    const states = (await watch).frames.filter((f) => f.data)
    const ids = states.map((f) => Number(f.id))
    expect(ids).toEqual([...ids].sort((x, y) => x - y))
    expect(states.map((f) => f.data.progress)).toEqual([20, 30])
    expect((await w2.request({ op: 'complete', process_id: q.id, attempt: r1.attempts })).op).toBe('ack')
    expect(await rowOf(q.id)).toMatchObject({ progress: 100 })
    w1.close()
    w2.close()
  })
})
