// Live results and tags: `update` merges a JSON merge patch into result_summary as live state
// (acked on accept, fanned out, written behind with the progress, newest wins; a terminal frame supersedes it),
// size-capped; tags on create, shown in JSON, filtered in the list, stats and the workspace stream.
import { describe, expect, it } from 'bun:test'
import { inJsonbOrder, mergePatch } from '../../src/processes/merge-patch'
import { createTenant, hasRedis, listeningServer, redisPrefix, restAs, testDatabase, waitFor, workerToken } from '../support/helpers'
import { readFrames } from '../support/sse-client'
import { TestWorker } from '../support/worker-client'

const { db } = await testDatabase()
const env = { PROGRESS_PERSIST_MS: '50', SSE_MAX_MS: '60000', REDIS_PREFIX: redisPrefix() }
const a = await listeningServer(env, db)
// The second instance lives as long as the file: the two share one database handle, closed by the last to stop.
const b = hasRedis ? await listeningServer(env, db) : null
const tenant = await createTenant(db.sql)
const wtoken = await workerToken(db.sql)
const { auth, create, get } = restAs(a.url, tenant.token)
let typeSeq = 0
const freshType = () => `results_${typeSeq++}`
const rowOf = async (id: number) =>
  (await db.sql<{ result_summary: any; version: number; status: string }[]>`select result_summary, version, status from processes where id = ${id}`)[0]!

async function running(base = a.url, type = freshType()) {
  const p = await create(type)
  const worker = await TestWorker.connect(base, wtoken)
  const run = (await worker.request({ op: 'claim', types: [type] })).process
  return { p, worker, run }
}

const stream = (base: string, id: number) => fetch(`${base}/processes/${id}/stream`, { headers: auth })

describe('JSON merge patch (RFC 7386)', () => {
  it("follows the RFC's examples, and never changes its target", () => {
    const target = { a: 'b', c: { d: 'e', f: 'g' } }
    expect(mergePatch(target, { a: 'z', c: { f: null } })).toEqual({ a: 'z', c: { d: 'e' } })
    expect(target).toEqual({ a: 'b', c: { d: 'e', f: 'g' } })
    expect(mergePatch({ a: ['b'] }, { a: 'c' })).toEqual({ a: 'c' })
    expect(mergePatch({ a: 'c' }, { a: ['b'] })).toEqual({ a: ['b'] })
    expect(mergePatch({ a: { b: 'c' } }, { a: { b: 'd', c: null } })).toEqual({ a: { b: 'd' } })
    expect(mergePatch({ e: null }, { a: 1 })).toEqual({ e: null, a: 1 })
    expect(mergePatch(null, { a: { bb: { ccc: null } } })).toEqual({ a: { bb: {} } })
    expect(mergePatch({ a: 'foo' }, { a: null })).toEqual({})
  })

  it("puts keys in jsonb's order, as the row gives them back", () => {
    expect(JSON.stringify(inJsonbOrder({ rows: 1, b: { zz: 1, a: 2 }, aa: [{ y: 1, x: 2 }] }))).toBe('{"b":{"a":2,"zz":1},"aa":[{"x":2,"y":1}],"rows":1}')
  })
})

describe('update frames on one instance', () => {
  it('merges each patch, acks at once, fans out, and writes behind newest-wins', async () => {
    const { p, worker, run } = await running()
    const frames = readFrames(await stream(a.url, p.id), { maxMs: 1200 })
    await Bun.sleep(100)
    const acks = await Promise.all([
      worker.request({ op: 'update', process_id: p.id, attempt: run.attempts, result_summary: { rows: 100, errors: [] } }),
      worker.request({ op: 'update', process_id: p.id, attempt: run.attempts, result_summary: { rows: 1200, errors: ['row 7'] }, message: '1,200 rows' }),
    ])
    expect(acks.map((f) => f.op)).toEqual(['ack', 'ack'])
    await Bun.sleep(150)
    const ack = await worker.request({ op: 'update', process_id: p.id, attempt: run.attempts, result_summary: { errors: null, done: false } })
    expect(ack.op).toBe('ack')
    const states = (await frames).frames.filter((f) => f.data)
    const last = states.at(-1)!.data
    expect(last.result_summary).toEqual({ done: false, rows: 1200 })
    expect(last.message).toBe('1,200 rows')
    expect(states.map((f) => Number(f.id))).toEqual([...states.map((f) => Number(f.id))].sort((x, y) => x - y))
    // Written behind: the row catches up with the newest state; GET answers the same.
    await waitFor(async () => (await rowOf(p.id)).version === ack.version, 3000, 'the live result written behind')
    expect((await rowOf(p.id)).result_summary).toEqual({ done: false, rows: 1200 })
    expect((await get(p.id)).result_summary).toEqual({ done: false, rows: 1200 })
    worker.close()
  })

  it('refuses a result over 64 KiB after the merge with result_too_large and keeps the one before', async () => {
    const { p, worker, run } = await running()
    const chunk = 'x'.repeat(40_000)
    expect((await worker.request({ op: 'update', process_id: p.id, attempt: run.attempts, result_summary: { a: chunk } })).op).toBe('ack')
    const refused = await worker.request({ op: 'update', process_id: p.id, attempt: run.attempts, result_summary: { b: chunk } })
    expect(refused).toMatchObject({ op: 'error', code: 'result_too_large' })
    // The process goes on: progress and a smaller patch are still accepted.
    expect((await worker.request({ op: 'update', process_id: p.id, attempt: run.attempts, result_summary: { a: null, b: 'small' } })).op).toBe('ack')
    expect((await get(p.id)).result_summary).toEqual({ b: 'small' })
    worker.close()
  })

  it('fences updates by attempt and worker, and refuses a result_summary that is not an object', async () => {
    const { p, worker, run } = await running()
    expect(await worker.request({ op: 'update', process_id: p.id, attempt: run.attempts + 1, result_summary: { a: 1 } })).toMatchObject({ code: 'not_owner' })
    const other = await TestWorker.connect(a.url, wtoken)
    expect(await other.request({ op: 'update', process_id: p.id, result_summary: { a: 1 } })).toMatchObject({ code: 'not_owner' })
    expect(await worker.request({ op: 'update', process_id: p.id, result_summary: [1] })).toMatchObject({ code: 'invalid_message' })
    expect((await get(p.id)).result_summary).toBeNull()
    worker.close()
    other.close()
  })

  it("a complete without a result keeps the live one; a complete's own result supersedes it", async () => {
    const kept = await running()
    await kept.worker.request({ op: 'update', process_id: kept.p.id, attempt: kept.run.attempts, result_summary: { rows: 5 } })
    expect((await kept.worker.request({ op: 'complete', process_id: kept.p.id, attempt: kept.run.attempts })).op).toBe('ack')
    expect(await rowOf(kept.p.id)).toMatchObject({ status: 'completed', result_summary: { rows: 5 } })
    const replaced = await running()
    await replaced.worker.request({ op: 'update', process_id: replaced.p.id, attempt: replaced.run.attempts, result_summary: { rows: 5 } })
    await replaced.worker.request({ op: 'complete', process_id: replaced.p.id, attempt: replaced.run.attempts, result_summary: { total: 9 } })
    expect(await rowOf(replaced.p.id)).toMatchObject({ status: 'completed', result_summary: { total: 9 } })
    // A log line by the holder commits the live result with it (the write-behind's queued copy is superseded).
    const logged = await running()
    await logged.worker.request({ op: 'update', process_id: logged.p.id, attempt: logged.run.attempts, result_summary: { rows: 1 } })
    await logged.worker.request({ op: 'log', process_id: logged.p.id, attempt: logged.run.attempts, message: 'half way' })
    expect((await rowOf(logged.p.id)).result_summary).toEqual({ rows: 1 })
    // A fail keeps the live result too.
    await logged.worker.request({ op: 'update', process_id: logged.p.id, attempt: logged.run.attempts, result_summary: { rows: 2 } })
    await logged.worker.request({ op: 'fail', process_id: logged.p.id, attempt: logged.run.attempts, error: 'boom' })
    expect(await rowOf(logged.p.id)).toMatchObject({ status: 'failed', result_summary: { rows: 2 } })
    for (const w of [kept, replaced, logged]) w.worker.close()
  })
})

describe.skipIf(!hasRedis)('update frames across instances', () => {
  it('patches racing a complete: the stream on another instance ends with the complete, nothing after it', async () => {
    for (let round = 0; round < 3; round++) {
      const { p, worker, run } = await running()
      const frames = readFrames(await stream(b!.url, p.id), { maxMs: 4000, untilDone: true })
      await Bun.sleep(100)
      const sent: Promise<any>[] = []
      for (let i = 0; i < 20; i++) sent.push(worker.request({ op: 'update', process_id: p.id, attempt: run.attempts, result_summary: { n: i } }))
      sent.push(worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts, result_summary: { final: true } }))
      // Patches sent after the complete are refused: the lease has ended.
      const late = worker.request({ op: 'update', process_id: p.id, attempt: run.attempts, result_summary: { n: 99 } })
      const replies = await Promise.all(sent)
      expect(replies.every((r) => r.op === 'ack')).toBe(true)
      expect((await late).op).toBe('error')
      const got = await frames
      const states = got.frames.filter((f) => f.data)
      expect(got.ended).toBe(true)
      const done = states.at(-1)!
      expect(done.event).toBe('done')
      expect(done.data.result_summary).toEqual({ final: true })
      const ids = states.map((f) => Number(f.id))
      expect(ids).toEqual([...new Set(ids)].sort((x, y) => x - y))
      expect(await rowOf(p.id)).toMatchObject({ status: 'completed', result_summary: { final: true } })
      worker.close()
    }
  })

  it("another instance's GET shows the live result it heard", async () => {
    const { p, worker, run } = await running()
    const watching = await stream(b!.url, p.id)
    await Bun.sleep(100)
    await worker.request({ op: 'update', process_id: p.id, attempt: run.attempts, result_summary: { seen: 'on b' } })
    await waitFor(
      async () => ((await (await fetch(`${b!.url}/processes/${p.id}`, { headers: auth })).json()) as any).result_summary?.seen === 'on b',
      3000,
      "B's GET to show the live result",
    )
    await watching.body?.cancel()
    worker.close()
  })
})

describe('tags', () => {
  const post = (path: string, body: unknown) => fetch(`${a.url}${path}`, { method: 'POST', headers: auth, body: JSON.stringify(body) })
  const json = async (path: string) => (await (await fetch(`${a.url}${path}`, { headers: auth })).json()) as any

  it('are stored on create (single, group-committed and batch), shown in the JSON, byte-identical in POST and GET', async () => {
    const created = await post('/processes', { type: 'tagged', tags: ['user:42', 'import', 'user:42'] })
    expect(created.status).toBe(201)
    const text = await created.text()
    const p = JSON.parse(text)
    expect(p.tags).toEqual(['user:42', 'import'])
    const got = await fetch(`${a.url}/processes/${p.id}`, { headers: auth })
    expect(await got.text()).toBe(text)
    // Many single creates in one turn are group-committed (create-batcher.ts): each keeps its own tags.
    const many = await Promise.all([0, 1, 2, 3].map((i) => post('/processes', { type: 'tagged', tags: [`n:${i}`] }).then((r) => r.json() as any)))
    expect(many.map((m) => m.tags)).toEqual([['n:0'], ['n:1'], ['n:2'], ['n:3']])
    const batch = (await (await post('/processes/batch', { processes: [{ type: 'tagged', tags: ['b:1'] }, { type: 'tagged' }] })).json()) as any
    expect(batch.processes.map((x: any) => x.tags)).toEqual([['b:1'], []])
  })

  it('refuse more than 10, or one outside the pattern, with a 422 naming it', async () => {
    const eleven = Array.from({ length: 11 }, (_, i) => `t${i}`)
    for (const tags of [eleven, ['has space'], ['x'.repeat(65)], [''], 'user:1', [1]]) {
      const response = await post('/processes', { type: 'tagged', tags })
      expect(response.status).toBe(422)
      expect(((await response.json()) as any).error.code).toBe('invalid_request')
    }
    expect((await post('/processes/batch', { processes: [{ type: 'tagged', tags: ['bad tag'] }] })).status).toBe(422)
  })

  it('filter the list, the stats and the workspace stream with ?tag= (every tag named must be carried)', async () => {
    const type = `tagf_${Date.now() % 100000}`
    const mine = (await (await post('/processes', { type, tags: ['user:7', 'csv'] })).json()) as any
    const other = (await (await post('/processes', { type, tags: ['user:8', 'csv'] })).json()) as any
    expect((await json(`/processes?tag=user:7`)).map((x: any) => x.id)).toEqual([mine.id])
    expect((await json(`/processes?type=${type}&tag=csv`)).map((x: any) => x.id)).toEqual([other.id, mine.id])
    expect((await json(`/processes?tag=csv,user:8`)).map((x: any) => x.id)).toEqual([other.id])
    expect((await json(`/processes?tag=csv&tag=user:8`)).map((x: any) => x.id)).toEqual([other.id])
    expect((await fetch(`${a.url}/processes?tag=bad%20tag`, { headers: auth })).status).toBe(422)
    const stats = await json(`/processes/stats?tag=user:7&buckets=false`)
    expect(stats.counts).toEqual([{ type, status: 'pending', count: 1 }])
    const buckets = await json(`/processes/stats?tag=user:8&window=1h`)
    expect(buckets.buckets.reduce((n: number, x: any) => n + x.created, 0)).toBe(1)
    // The workspace stream: the snapshot and live changes of matching processes only.
    const frames = readFrames(await fetch(`${a.url}/processes/stream?tag=user:7`, { headers: auth }), { maxMs: 800 })
    await Bun.sleep(150)
    const live = (await (await post('/processes', { type, tags: ['user:7'] })).json()) as any
    await post('/processes', { type, tags: ['user:9'] })
    const ids = (await frames).frames.filter((f) => f.data).map((f) => f.data.id)
    expect(ids).toEqual([mine.id, live.id])
  })
})
