// Live output: `output` frames are fenced by the lease, acked on accept (with their seq), written
// behind in batches, capped per process, streamed as `event: output` with `<version>.<seq>` ids that resume
// across reconnects (and instances) losing and duplicating nothing, paged by GET /processes/{id}/output, and
// removed with their process.
import { describe, expect, it } from 'bun:test'
import { parseEventCursor } from '../../src/processes/process-stream'
import { createTenant, hasRedis, listeningServer, redisPrefix, restAs, testDatabase, waitFor, workerToken } from '../support/helpers'
import { readFrames } from '../support/sse-client'
import { TestWorker } from '../support/worker-client'

const { db } = await testDatabase()
const env = { PROGRESS_PERSIST_MS: '50', OUTPUT_MAX_BYTES: '4096', SSE_MAX_MS: '60000', REDIS_PREFIX: redisPrefix() }
const a = await listeningServer(env, db)
const b = hasRedis ? await listeningServer(env, db) : null
const tenant = await createTenant(db.sql)
const wtoken = await workerToken(db.sql)
const { auth, create } = restAs(a.url, tenant.token)
let typeSeq = 0
const freshType = () => `output_${typeSeq++}`
const stored = async (id: number) =>
  (await db.sql<{ seq: number; chunk: unknown }[]>`select seq, chunk from process_output where process_id = ${id} order by seq`).map((r) => [
    Number(r.seq),
    r.chunk,
  ])

async function running(base = a.url, type = freshType()) {
  const p = await create(type)
  const worker = await TestWorker.connect(base, wtoken)
  const run = (await worker.request({ op: 'claim', types: [type] })).process
  return { p, worker, run }
}

const stream = (base: string, id: number, lastEventId?: string) =>
  fetch(`${base}/processes/${id}/stream`, { headers: { ...auth, ...(lastEventId === undefined ? {} : { 'last-event-id': lastEventId }) } })

/** The events of a stream, as [kind, id, what]: a state's progress/status, or an output chunk. */
const events = (frames: Awaited<ReturnType<typeof readFrames>>['frames']) =>
  frames.filter((f) => f.data).map((f) => (f.event === 'output' ? ['output', f.id, f.data.chunk] : [f.event ?? 'state', f.id, f.data.progress]))

/** Orders event ids as a cursor: both parts only ever grow. */
function cursorsIncrease(ids: (string | undefined)[]) {
  const cs = ids.map((id) => parseEventCursor(id ?? null, undefined)!)
  return cs.every((c, i) => i === 0 || (c.version >= cs[i - 1]!.version && c.seq >= cs[i - 1]!.seq))
}

describe('the event cursor', () => {
  it('reads `<version>` as seq 0, `<version>.<seq>`, and nothing else', () => {
    expect(parseEventCursor('12', undefined)).toEqual({ version: 12, seq: 0 })
    expect(parseEventCursor(null, '12.7')).toEqual({ version: 12, seq: 7 })
    for (const bad of ['12.', '.7', '12:7', 'x', '1.2.3', '-1']) expect(parseEventCursor(bad, undefined)).toBeNull()
  })
})

describe('output on one instance', () => {
  it('acks each chunk with its seq, streams it interleaved with states, and writes it behind in batches', async () => {
    const { p, worker, run } = await running()
    const frames = readFrames(await stream(a.url, p.id), { maxMs: 4000, untilDone: true })
    await Bun.sleep(100)
    const acks = await Promise.all(['Hello', ', ', 'world'].map((chunk) => worker.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk })))
    expect(acks.map((f) => [f.op, f.seq])).toEqual([
      ['ack', 1],
      ['ack', 2],
      ['ack', 3],
    ])
    await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress: 50 })
    await worker.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: { rows: 3, b: true } })
    await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts })
    const got = await frames
    expect(got.ended).toBe(true)
    const evs = events(got.frames)
    expect(evs.map(([kind, , what]) => [kind, what])).toEqual([
      ['state', 0],
      ['output', 'Hello'],
      ['output', ', '],
      ['output', 'world'],
      ['state', 50],
      ['output', { b: true, rows: 3 }],
      ['done', 100],
    ])
    // The first state's id is a plain version; once a chunk is sent every id is `<version>.<seq>`.
    expect(evs[0]![1]).toBe(String(run.version))
    expect(evs.slice(1).every(([, id]) => /^\d+\.\d+$/.test(id as string))).toBe(true)
    expect(cursorsIncrease(evs.map(([, id]) => id as string))).toBe(true)
    // Written before the complete committed: all in the table, in order.
    expect(await stored(p.id)).toEqual([
      [1, 'Hello'],
      [2, ', '],
      [3, 'world'],
      [4, { b: true, rows: 3 }],
    ])
    worker.close()
  })

  it('writes many chunks in few statements, never one per chunk', async () => {
    const { p, worker, run } = await running()
    const sent = Array.from({ length: 200 }, (_, i) => worker.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: `line ${i}\n` }))
    const acks = await Promise.all(sent)
    expect(acks.every((f) => f.op === 'ack')).toBe(true)
    await waitFor(async () => (await stored(p.id)).length === 200, 3000, 'the chunks written')
    const statements = await db.sql<{ n: number }[]>`select count(distinct created_at)::int as n from process_output where process_id = ${p.id}`
    // One statement's rows share now(): a handful of statements for 200 chunks.
    expect(statements[0]!.n).toBeLessThan(20)
    worker.close()
  })

  it('refuses a chunk past OUTPUT_MAX_BYTES with output_too_large; the process goes on', async () => {
    const { p, worker, run } = await running()
    const big = 'x'.repeat(3000)
    expect((await worker.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: big })).op).toBe('ack')
    expect(await worker.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: big })).toMatchObject({
      op: 'error',
      code: 'output_too_large',
    })
    expect((await worker.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: 'small' })).seq).toBe(2)
    expect((await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress: 60 })).op).toBe('ack')
    expect((await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts })).op).toBe('ack')
    expect((await stored(p.id)).map(([seq]) => seq)).toEqual([1, 2])
    worker.close()
  })

  it('fences chunks by attempt and worker, and refuses a null chunk', async () => {
    const { p, worker, run } = await running()
    expect(await worker.request({ op: 'output', process_id: p.id, attempt: run.attempts + 1, chunk: 'x' })).toMatchObject({ code: 'not_owner' })
    const other = await TestWorker.connect(a.url, wtoken)
    expect(await other.request({ op: 'output', process_id: p.id, chunk: 'x' })).toMatchObject({ code: 'not_owner' })
    expect(await worker.request({ op: 'output', process_id: p.id, chunk: null })).toMatchObject({ code: 'invalid_message' })
    await Bun.sleep(50)
    expect(await stored(p.id)).toEqual([])
    worker.close()
    other.close()
  })

  it('pages GET /processes/{id}/output with after and limit, 404 for another workspace, and retention removes it with the process', async () => {
    const { p, worker, run } = await running()
    for (let i = 1; i <= 5; i++) await worker.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: `c${i}` })
    await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts })
    const page = await fetch(`${a.url}/processes/${p.id}/output?after=1&limit=2`, { headers: auth })
    expect(page.status).toBe(200)
    expect(page.headers.get('link')).toContain('after=3')
    expect(((await page.json()) as any[]).map((c) => [c.seq, c.chunk])).toEqual([
      [2, 'c2'],
      [3, 'c3'],
    ])
    const rest = (await (await fetch(`${a.url}/processes/${p.id}/output?after=3`, { headers: auth })).json()) as any[]
    expect(rest.map((c) => c.seq)).toEqual([4, 5])
    const stranger = await createTenant(db.sql)
    expect((await fetch(`${a.url}/processes/${p.id}/output`, { headers: { authorization: `Bearer ${stranger.token}` } })).status).toBe(404)
    expect((await fetch(`${a.url}/processes/${p.id}/output?after=x`, { headers: auth })).status).toBe(422)
    await db.sql`delete from processes where id = ${p.id}`
    expect(await stored(p.id)).toEqual([])
    worker.close()
  })

  it('a reconnect with the last id resumes both positions: nothing lost, nothing twice', async () => {
    const { p, worker, run } = await running()
    for (const chunk of ['a', 'b']) await worker.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk })
    const first = events((await readFrames(await stream(a.url, p.id), { maxMs: 300 })).frames)
    expect(first.map(([k, , w]) => [k, w])).toEqual([
      ['state', 0],
      ['output', 'a'],
      ['output', 'b'],
    ])
    const lastId = first.at(-1)![1] as string
    // While the client is away: more output and a state.
    await worker.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: 'c' })
    await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress: 70 })
    await worker.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: 'd' })
    await Bun.sleep(100)
    const second = events((await readFrames(await stream(a.url, p.id, lastId), { maxMs: 300 })).frames)
    expect(second.map(([k, , w]) => [k, w])).toEqual([
      ['state', 70],
      ['output', 'c'],
      ['output', 'd'],
    ])
    expect(cursorsIncrease([lastId, ...second.map(([, id]) => id as string)])).toBe(true)
    // A plain numeric id (a client that never saw output) gets the output from the start.
    const plain = events((await readFrames(await stream(a.url, p.id, String(run.version)), { maxMs: 300 })).frames)
    expect(plain.filter(([k]) => k === 'output').map(([, , w]) => w)).toEqual(['a', 'b', 'c', 'd'])
    // output=false: states only.
    const quiet = await readFrames(await fetch(`${a.url}/processes/${p.id}/stream?output=false`, { headers: auth }), { maxMs: 300 })
    expect(events(quiet.frames).map(([k]) => k)).toEqual(['state'])
    worker.close()
  })
})

describe.skipIf(!hasRedis)('output across instances', () => {
  it('chunks reach another instance in order with the states, and a reconnect there resumes across the gap', async () => {
    const { p, worker, run } = await running()
    const frames = readFrames(await stream(b!.url, p.id), { maxMs: 5000, untilDone: true })
    await Bun.sleep(150)
    const sent: Promise<any>[] = []
    for (let i = 0; i < 50; i++) {
      sent.push(worker.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: `t${i}` }))
      if (i % 10 === 0) sent.push(worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress: i }))
    }
    await Promise.all(sent)
    await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts })
    const got = await frames
    const evs = events(got.frames)
    expect(evs.filter(([k]) => k === 'output').map(([, , w]) => w)).toEqual(Array.from({ length: 50 }, (_, i) => `t${i}`))
    expect(evs.at(-1)![0]).toBe('done')
    expect(cursorsIncrease(evs.map(([, id]) => id as string))).toBe(true)
    worker.close()
  })

  it('the byte cap holds across a takeover: the new holder counts on from the table', async () => {
    const type = freshType()
    const p = await create(type)
    const w1 = await TestWorker.connect(a.url, wtoken)
    await w1.request({ op: 'hello', worker_id: `cap-mover-${p.id}` })
    const run = (await w1.request({ op: 'claim', types: [type] })).process
    expect((await w1.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: 'x'.repeat(3000) })).seq).toBe(1)
    await waitFor(async () => (await stored(p.id)).length === 1, 2000, 'the chunk written')
    const w2 = await TestWorker.connect(b!.url, wtoken)
    expect(await w2.request({ op: 'hello', worker_id: `cap-mover-${p.id}` })).toMatchObject({ op: 'ack', processes: [p.id] })
    expect(await w2.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: 'y'.repeat(3000) })).toMatchObject({
      code: 'output_too_large',
    })
    expect((await w2.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: 'small' })).seq).toBe(2)
    // A late chunk of the old holder (which has not heard of the takeover yet) adds nothing to the table.
    await w1.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: 'late' })
    expect((await w2.request({ op: 'complete', process_id: p.id, attempt: run.attempts })).op).toBe('ack')
    await Bun.sleep(100)
    expect((await stored(p.id)).map(([seq, chunk]) => [seq, typeof chunk === 'string' ? chunk.slice(0, 5) : chunk])).toEqual([
      [1, 'xxxxx'],
      [2, 'small'],
    ])
    w1.close()
    w2.close()
  })

  it('a client that drops mid-output and reconnects to the other instance gets every chunk once', async () => {
    const { p, worker, run } = await running()
    const seen: string[] = []
    let lastId: string | undefined
    let base = a.url
    const writing = (async () => {
      for (let i = 0; i < 60; i++) {
        await worker.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: `n${i}` })
        if (i % 7 === 0) await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress: i })
        await Bun.sleep(3)
      }
      await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts })
    })()
    // Short windows, alternating instances, until the done arrives (however slow the machine).
    for (let round = 0; round < 300; round++) {
      const got = await readFrames(await stream(base, p.id, lastId), { maxMs: 60, untilDone: true })
      const evs = events(got.frames)
      for (const [kind, id, what] of evs) {
        if (kind === 'output') seen.push(what as string)
        lastId = id as string
      }
      if (evs.some(([k]) => k === 'done')) break
      base = base === a.url ? b!.url : a.url
    }
    await writing
    expect(seen).toEqual(Array.from({ length: 60 }, (_, i) => `n${i}`))
    worker.close()
  })
})
