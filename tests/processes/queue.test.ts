// The queue engine and one JSON shape: claims by the pending-only index, in fair turns,
// several at once; retries with backoff; run_at, priority, max_attempts; batch create; caps; wake-one.
import { describe, expect, it } from 'bun:test'
import { loadConfig } from '../../src/config'
import { createProcessHub } from '../../src/processes/hub-rules'
import { capLock, claimNext, claimPlanSettings, claimStatement } from '../../src/processes/queries/claims'
import { completeStatement } from '../../src/processes/queries/completions'
import { insertProcess } from '../../src/processes/queries/create'
import { liveStatement } from '../../src/processes/queries/reports'
import { QueuePolicy } from '../../src/workers/queue'
import { createTenant, hasPostgres, listeningServer, restAs, testDatabase, waitFor, workerToken } from '../support/helpers'
import { readFrames } from '../support/sse-client'
import { TestWorker } from '../support/worker-client'

const { db } = await testDatabase()
const sql = db.sql
const server = await listeningServer(
  {
    JOB_TIMEOUT_MS: '600',
    SWEEP_INTERVAL_MS: '100',
    RETRY_BASE_MS: '200',
    RETRY_MAX_MS: '400',
    PROGRESS_PERSIST_MS: '60000',
    TYPE_DEFAULTS: JSON.stringify({ retried: { max_attempts: 3 }, capped: { concurrency: 2 } }),
  },
  db,
)
const base = server.url
const tenant = await createTenant(sql)
const wtoken = await workerToken(sql)
const { auth, get, events } = restAs(base, tenant.token)
let seq = 0
const freshType = () => `q_${seq++}`

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${base}${path}`, { method: 'POST', headers: { ...auth, ...headers }, body: JSON.stringify(body) })
  return { status: response.status, text: await response.text(), headers: response.headers }
}
const create = async (body: Record<string, unknown>) => {
  const r = await post('/processes', body)
  expect(r.status).toBe(201)
  return JSON.parse(r.text)
}

describe('one JSON shape', () => {
  it('sends a process byte-identical from POST, GET and the SSE stream, with one Content-Type on every JSON route', async () => {
    const created = await post('/processes', { type: freshType(), metadata: { zeta: [1, { b: 'x"y' }], a: null, nested: { k: 'v' } }, priority: 3 })
    expect(created.status).toBe(201)
    const id = JSON.parse(created.text).id
    const got = await fetch(`${base}/processes/${id}`, { headers: auth })
    const gotText = await got.text()
    expect(gotText).toBe(created.text)
    const stream = await fetch(`${base}/processes/${id}/stream`, { headers: auth })
    const { frames } = await readFrames(stream, { maxMs: 1500 })
    const data = frames
      .find((f) => f.data)!
      .raw.split('\n')
      .find((l) => l.startsWith('data: '))!
      .slice(6)
    expect(data).toBe(gotText)
    expect(Object.keys(JSON.parse(gotText))).toEqual([
      'id',
      'workspace_id',
      'type',
      'status',
      'progress',
      'message',
      'error',
      'attempts',
      'version',
      'worker_id',
      'created_by',
      'created_at',
      'updated_at',
      'started_at',
      'finished_at',
      'priority',
      'run_at',
      'max_attempts',
      'tags',
      'parent_id',
      'root_id',
      'children',
      'error_stack',
      'metadata',
      'result_summary',
    ])
    const list = await fetch(`${base}/processes`, { headers: auth })
    const missing = await fetch(`${base}/processes/999999999`, { headers: auth })
    for (const r of [created, { headers: got.headers }, { headers: list.headers }, { headers: missing.headers }]) {
      expect(r.headers.get('content-type')).toBe('application/json; charset=utf-8')
    }
  })
})

describe('claims', () => {
  it('claims several at once (max), best first: priority desc, then run_at, then id; process is processes[0]', async () => {
    const type = freshType()
    const low = await create({ type })
    const high = await create({ type, priority: 5 })
    const low2 = await create({ type })
    const worker = await TestWorker.connect(base, wtoken)
    const reply = await worker.request({ op: 'claim', types: [type], max: 2 })
    expect(reply.processes.map((p: any) => p.id)).toEqual([high.id, low.id])
    expect(reply.process.id).toBe(high.id)
    const rest = await worker.request({ op: 'claim', types: [type], max: 5 })
    expect(rest.processes.map((p: any) => p.id)).toEqual([low2.id])
    expect((await worker.request({ op: 'claim', types: [type] })).processes).toEqual([])
    worker.close()
  })

  it('completes and claims the next in one round trip', async () => {
    const type = freshType()
    const a = await create({ type })
    const b = await create({ type })
    const worker = await TestWorker.connect(base, wtoken)
    const first = (await worker.request({ op: 'claim', types: [type] })).process
    const ack = await worker.request({ op: 'complete', process_id: a.id, attempt: first.attempts, claim: { types: [type], max: 3 } })
    expect(ack.op).toBe('ack')
    expect(ack.processes.map((p: any) => p.id)).toEqual([b.id])
    expect((await get(a.id)).status).toBe('completed')
    expect((await get(b.id)).status).toBe('running')
    worker.close()
  })

  it('does not claim a process before its run_at, and a waiting claim wakes when it comes due', async () => {
    const type = freshType()
    const delayed = await create({ type, delay_ms: 1500 })
    const worker = await TestWorker.connect(base, wtoken)
    expect((await worker.request({ op: 'claim', types: [type] })).process).toBeNull()
    const reply = await worker.request({ op: 'claim', types: [type], wait_ms: 20_000 })
    expect(reply.process.id).toBe(delayed.id)
    expect(Date.parse(reply.process.started_at)).toBeGreaterThanOrEqual(Date.parse(delayed.run_at))
    const future = await create({ type, run_at: new Date(Date.now() + 3_600_000).toISOString() })
    expect(Date.parse(future.run_at)).toBeGreaterThan(Date.now() + 3_000_000)
    expect((await worker.request({ op: 'claim', types: [type] })).process).toBeNull()
    worker.close()
  })

  it('refuses run_at with delay_ms, a run_at that is not a time, and max_attempts out of range, with 422', async () => {
    for (const body of [
      { type: 'x', run_at: new Date().toISOString(), delay_ms: 5 },
      { type: 'x', run_at: 'tomorrow' },
      { type: 'x', run_at: '2026-13-45T99:00:00Z' },
      { type: 'x', max_attempts: 0 },
      { type: 'x', max_attempts: 101 },
      { type: 'x', priority: 1.5 },
    ]) {
      const r = await post('/processes', body)
      expect({ body, status: r.status, code: JSON.parse(r.text).error?.code }).toEqual({ body, status: 422, code: 'invalid_request' })
    }
  })

  it('takes max_attempts from the body, else the type (TYPE_DEFAULTS), else DEFAULT_MAX_ATTEMPTS', async () => {
    expect((await create({ type: 'retried' })).max_attempts).toBe(3)
    expect((await create({ type: 'retried', max_attempts: 7 })).max_attempts).toBe(7)
    expect((await create({ type: freshType() })).max_attempts).toBe(1)
  })
})

describe('retries', () => {
  it('puts a failed attempt back to pending with a backoff while attempts remain, then fails; late frames of attempt 1 get not_owner', async () => {
    const type = freshType()
    const p = await create({ type, max_attempts: 2 })
    const worker = await TestWorker.connect(base, wtoken)
    await worker.request({ op: 'hello', worker_id: 'retrier' })
    const run1 = (await worker.request({ op: 'claim', types: [type] })).process
    expect(run1.attempts).toBe(1)
    expect((await worker.request({ op: 'fail', process_id: p.id, attempt: 1, error: 'boom' })).op).toBe('ack')
    const after = await get(p.id)
    expect(after).toMatchObject({ status: 'pending', error: 'boom', attempts: 1, finished_at: null })
    expect(after.message).toMatch(/^retry 2 of 2 at \d{4}-\d\d-\d\dT.*Z: boom$/)
    expect(Date.parse(after.run_at)).toBeGreaterThan(Date.parse(after.updated_at))
    // A repeated fail of that attempt is acked again, not applied twice.
    expect(await worker.request({ op: 'fail', process_id: p.id, attempt: 1, error: 'boom' })).toMatchObject({ op: 'ack', repeated: true })
    const run2 = (await worker.request({ op: 'claim', types: [type], wait_ms: 20_000 })).process
    expect(run2).toMatchObject({ id: p.id, attempts: 2 })
    // Attempt 1 comes back late: refused, by the same worker id too.
    for (const frame of [
      { op: 'progress', process_id: p.id, attempt: 1, progress: 50 },
      { op: 'complete', process_id: p.id, attempt: 1 },
      { op: 'fail', process_id: p.id, attempt: 1, error: 'late' },
    ]) {
      expect(await worker.request(frame)).toMatchObject({ op: 'error', code: 'not_owner' })
    }
    expect((await worker.request({ op: 'fail', process_id: p.id, attempt: 2, error: 'again' })).op).toBe('ack')
    expect(await get(p.id)).toMatchObject({ status: 'failed', error: 'again', attempts: 2 })
    const statuses = (await events(p.id)).map((e) => e.status)
    expect(statuses).toEqual(['pending', 'running', 'pending', 'running', 'failed'])
    worker.close()
  })

  it('keeps the SSE stream open through a retry (no done) and sends done when attempts are exhausted', async () => {
    const type = freshType()
    const p = await create({ type, max_attempts: 2 })
    const stream = fetch(`${base}/processes/${p.id}/stream`, { headers: auth }).then((r) => readFrames(r, { maxMs: 20_000 }))
    const worker = await TestWorker.connect(base, wtoken)
    await Bun.sleep(300)
    await worker.request({ op: 'claim', types: [type] })
    await worker.request({ op: 'fail', process_id: p.id, attempt: 1, error: 'one' })
    await worker.request({ op: 'claim', types: [type], wait_ms: 20_000 })
    await worker.request({ op: 'fail', process_id: p.id, attempt: 2, error: 'two' })
    const { frames, ended } = await stream
    const done = frames.filter((f) => f.event === 'done')
    expect(done).toHaveLength(1)
    expect(done[0]!.data.status).toBe('failed')
    const statuses = frames.filter((f) => f.data).map((f) => f.data.status)
    expect(statuses).toContain('pending')
    expect(statuses.indexOf('pending', 1)).toBeLessThan(statuses.indexOf('failed'))
    expect(ended).toBe(true)
    worker.close()
  })

  it('retries a lease that timed out when attempts remain, and tells its worker; its late frames get not_owner', async () => {
    const type = freshType()
    const p = await create({ type, max_attempts: 3 })
    const silent = await TestWorker.connect(base, wtoken)
    await silent.request({ op: 'hello', worker_id: 'silent-one' })
    const run1 = (await silent.request({ op: 'claim', types: [type] })).process
    expect(run1.id).toBe(p.id)
    await silent.until(() => silent.pushes.some((f) => f.process_id === p.id), 20_000)
    expect(silent.pushes.find((f) => f.process_id === p.id)).toMatchObject({ op: 'cancel', status: 'pending' })
    const swept = await get(p.id)
    expect(swept.status).toBe('pending')
    expect(swept.message).toMatch(/^retry 2 of 3 at .*: timed out$/)
    const other = await TestWorker.connect(base, wtoken)
    const run2 = (await other.request({ op: 'claim', types: [type], wait_ms: 20_000 })).process
    expect(run2).toMatchObject({ id: p.id, attempts: 2 })
    expect(await silent.request({ op: 'complete', process_id: p.id, attempt: 1 })).toMatchObject({ op: 'error', code: 'not_owner' })
    expect((await other.request({ op: 'complete', process_id: p.id, attempt: 2 })).op).toBe('ack')
    silent.close()
    other.close()
  })
})

describe('batch create', () => {
  it('creates up to 1000 in one transaction with one audit row, in request order, and replays an Idempotency-Key', async () => {
    const type = freshType()
    const body = {
      processes: [
        { type, metadata: { n: 1 } },
        { type, priority: 2 },
        { type: `${type}b`, delay_ms: 60_000 },
      ],
    }
    const auditBefore = (await sql`select count(*)::int as n from audit_log where route = '/processes/batch'`)[0]!.n
    const first = await post('/processes/batch', body, { 'idempotency-key': `k-${type}` })
    expect(first.status).toBe(201)
    const created = JSON.parse(first.text).processes
    expect(created.map((p: any) => [p.type, p.metadata, p.priority])).toEqual([
      [type, { n: 1 }, 0],
      [type, {}, 2],
      [`${type}b`, {}, 0],
    ])
    expect(created[0].id).toBeLessThan(created[1].id)
    const again = await post('/processes/batch', body, { 'idempotency-key': `k-${type}` })
    expect(again.status).toBe(201)
    expect(again.text).toBe(first.text)
    expect(again.headers.get('idempotent-replayed')).toBe('true')
    expect((await sql`select count(*)::int as n from processes where type = any(${[type, `${type}b`]})`)[0]!.n).toBe(3)
    await waitFor(
      async () => (await sql`select count(*)::int as n from audit_log where route = '/processes/batch'`)[0]!.n >= auditBefore + 2,
      10_000,
      'audit rows',
    )
    const rows = await sql`select status from audit_log where route = '/processes/batch' order by id`
    expect(rows.length - auditBefore).toBe(2) // the create, and the replay (a read)
  })

  it('refuses an empty batch, more than 1000, and a bad item (naming it) with 422, creating nothing', async () => {
    const type = freshType()
    expect((await post('/processes/batch', { processes: [] })).status).toBe(422)
    expect((await post('/processes/batch', { processes: Array.from({ length: 1001 }, () => ({ type })) })).status).toBe(422)
    const bad = await post('/processes/batch', { processes: [{ type }, { type, run_at: 'soon' }] })
    expect(bad.status).toBe(422)
    expect(JSON.parse(bad.text).error.message).toContain('/processes/1/run_at')
    expect((await sql`select count(*)::int as n from processes where type = ${type}`)[0]!.n).toBe(0)
  })

  it('creates 1000 at once', async () => {
    const type = freshType()
    const r = await post('/processes/batch', { processes: Array.from({ length: 1000 }, (_, i) => ({ type, metadata: { i } })) })
    expect(r.status).toBe(201)
    const processes = JSON.parse(r.text).processes
    expect(processes.map((p: any) => p.metadata.i)).toEqual(Array.from({ length: 1000 }, (_, i) => i))
  })
})

describe('fairness and caps', () => {
  it("claims another workspace's new process within one claim cycle while one workspace holds a big backlog", async () => {
    const a = await createTenant(sql)
    const b = await createTenant(sql)
    const type = freshType()
    await sql`insert into processes (workspace_id, type, message) select ${a.workspaceId}, ${type}, 'Queued' from generate_series(1, 5000)`
    const queue = new QueuePolicy(loadConfig({}))
    const claimOne = async () => {
      const claimed = await sql.begin((tx) => claimNext(tx, { workerId: 'fair', types: [type], max: 1, served: queue.turns() }))
      queue.markServed(claimed)
      return claimed[0]!
    }
    expect((await claimOne()).workspace_id).toBe(a.workspaceId)
    const fromB = await insertProcess(sql, { workspaceId: b.workspaceId, createdBy: null, type, metadata: {} })
    expect((await claimOne()).id).toBe(fromB.id)
    expect((await claimOne()).workspace_id).toBe(a.workspaceId)
    // A batch takes turns too: B's next is in the first batch after it is created.
    const fromB2 = await insertProcess(sql, { workspaceId: b.workspaceId, createdBy: null, type, metadata: {} })
    const batch = await sql.begin((tx) => claimNext(tx, { workerId: 'fair', types: [type], max: 4, served: queue.turns() }))
    expect(batch.map((p) => p.id)).toContain(fromB2.id)
  })

  it("never runs more than a type's concurrency under 8 racing workers claiming several each", async () => {
    const ids = (
      await sql`
      insert into processes (workspace_id, type, message) select ${tenant.workspaceId}, 'capped', 'Queued' from generate_series(1, 20) returning id`
    ).map((r) => r.id)
    const workers = await Promise.all(Array.from({ length: 8 }, () => TestWorker.connect(base, wtoken)))
    const replies = await Promise.all(workers.map((w) => w.request({ op: 'claim', types: ['capped'], max: 3 })))
    const claimed = replies.flatMap((r) => r.processes)
    expect(claimed).toHaveLength(2)
    expect((await sql`select count(*)::int as n from processes where type = 'capped' and status = 'running'`)[0]!.n).toBe(2)
    // Finishing one makes room for exactly one more.
    const holder = workers[replies.findIndex((r) => r.processes.length > 0)]!
    const done = claimed.find((p: any) => replies[workers.indexOf(holder)]!.processes.some((q: any) => q.id === p.id))
    const ack = await holder.request({ op: 'complete', process_id: done.id, attempt: done.attempts, claim: { types: ['capped'], max: 3 } })
    expect(ack.processes).toHaveLength(1)
    expect((await sql`select count(*)::int as n from processes where type = 'capped' and status = 'running'`)[0]!.n).toBe(2)
    for (const w of workers) w.close()
    expect(ids).toHaveLength(20)
  })

  it("never runs more than WORKSPACE_CONCURRENCY of one workspace under racing claims, while another's go on", async () => {
    const a = await createTenant(sql)
    const b = await createTenant(sql)
    const type = freshType()
    await sql`insert into processes (workspace_id, type, message) select ${a.workspaceId}, ${type}, 'Queued' from generate_series(1, 10)`
    await sql`insert into processes (workspace_id, type, message) select ${b.workspaceId}, ${type}, 'Queued' from generate_series(1, 2)`
    const caps = { types: {}, workspace: 3 }
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        sql.begin(async (tx) => {
          await capLock(tx)
          return claimNext(tx, { workerId: `cap-${i}`, types: [type], max: 4, caps })
        }),
      ),
    )
    const claimed = results.flat()
    expect(claimed.filter((p) => p.workspace_id === a.workspaceId)).toHaveLength(3)
    expect(claimed.filter((p) => p.workspace_id === b.workspaceId)).toHaveLength(2)
  })
})

describe('waking', () => {
  it('wakes one waiting claim per new process, oldest first, and a claim taking several counts for several', () => {
    const hub = createProcessHub()
    const woken: string[] = []
    const listen = (name: string, types: string[] | null, max: number) =>
      hub.onWork((type) => {
        if (type !== '*' && types && !types.includes(type)) return 0
        woken.push(name)
        return max
      })
    listen('a', ['x'], 1)
    listen('b', ['y'], 1)
    listen('c', ['x'], 1)
    listen('d', null, 5)
    listen('e', ['x'], 1)
    hub.wakeWork('x', 1)
    expect(woken).toEqual(['a'])
    hub.wakeWork('x', 3)
    expect(woken).toEqual(['a', 'c', 'd'])
    hub.wakeWork('y', 1)
    expect(woken).toEqual(['a', 'c', 'd', 'b'])
    hub.wakeWork('*')
    expect(woken).toEqual(['a', 'c', 'd', 'b', 'e'])
  })

  it('gives new work to a waiting claim, and the other waiting claims keep waiting', async () => {
    const type = freshType()
    const workers = await Promise.all(Array.from({ length: 4 }, () => TestWorker.connect(base, wtoken)))
    const claims = workers.map((w) => w.request({ op: 'claim', types: [type], wait_ms: 3000 }))
    await Bun.sleep(300)
    const p = await create({ type })
    const replies = await Promise.all(claims)
    expect(replies.filter((r) => r.process?.id === p.id)).toHaveLength(1)
    for (const w of workers) w.close()
  })
})

describe('group commit of terminal frames (src/workers/finish.ts)', () => {
  async function batch(type: string, n: number): Promise<any[]> {
    const r = await post('/processes/batch', { processes: Array.from({ length: n }, (_, i) => ({ type, metadata: { i } })) })
    expect(r.status).toBe(201)
    return JSON.parse(r.text).processes
  }

  it('many completes with claim-next from many sockets, sent at once: all acked, each applied once, every claimed process leased to one of them', async () => {
    const type = freshType()
    const sockets = 6
    const each = 5
    await batch(type, sockets * each * 2)
    const workers = await Promise.all(Array.from({ length: sockets }, () => TestWorker.connect(base, wtoken)))
    const held = await Promise.all(workers.map(async (w) => (await w.request({ op: 'claim', types: [type], max: each })).processes))
    for (const h of held) expect(h).toHaveLength(each)
    // This file's leases time out after 600 ms: keep these alive however slow the machine is.
    await sql`update processes set heartbeat_at = now() + interval '1 hour' where id = any(${held.flat().map((p: any) => p.id)}::bigint[])`
    const { batches: batchesBefore, frames: framesBefore } = server.gateway.finisher
    // Every frame without awaiting its ack: they reach the server together.
    const acks = await Promise.all(
      workers.flatMap((w, k) =>
        held[k]!.map((p: any) =>
          w.request({ op: 'complete', process_id: p.id, attempt: p.attempts, result_summary: { id: p.id }, claim: { types: [type], max: 1 } }),
        ),
      ),
    )
    for (const ack of acks) {
      expect(ack.op).toBe('ack')
      expect(ack.repeated).toBeUndefined()
    }
    const frames = server.gateway.finisher.frames - framesBefore
    expect(frames).toBe(sockets * each)
    // Grouped: fewer statements than frames.
    expect(server.gateway.finisher.batches - batchesBefore).toBeLessThan(frames)
    const completed = held.flat()
    for (const p of completed) {
      const now = await get(p.id)
      expect(now.status).toBe('completed')
      expect(now.result_summary).toEqual({ id: p.id })
      expect((await events(p.id)).filter((e) => e.status === 'completed')).toHaveLength(1)
    }
    // Every claimed process is running for the socket's worker whose ack named it, and none twice.
    const next = acks.flatMap((a) => a.processes)
    expect(new Set(next.map((p: any) => p.id)).size).toBe(next.length)
    expect(next.length).toBe(sockets * each)
    for (const p of next) {
      expect(p.status).toBe('running')
      const now = await get(p.id)
      // (running, or already timed out by this file's 600 ms lease sweep)
      expect(now.worker_id).toBe(p.worker_id)
      expect(now.attempts).toBe(1)
      expect((await events(p.id)).filter((e) => e.status === 'running')).toHaveLength(1)
    }
    // A repeated complete is acked as repeated, not applied again.
    const again = await workers[0]!.request({ op: 'complete', process_id: held[0]![0].id, attempt: held[0]![0].attempts })
    expect(again).toMatchObject({ op: 'ack', repeated: true })
    for (const w of workers) w.close()
  })

  it('a cancel racing completes in one batch: each process ends cancelled or completed, never both, and a refused complete claims nothing', async () => {
    const type = freshType()
    await batch(type, 20)
    const worker = await TestWorker.connect(base, wtoken)
    const held = (await worker.request({ op: 'claim', types: [type], max: 10 })).processes
    await sql`update processes set heartbeat_at = now() + interval '1 hour' where id = any(${held.map((p: any) => p.id)}::bigint[])`
    const completes = held.map((p: any) => worker.request({ op: 'complete', process_id: p.id, attempt: p.attempts, claim: { types: [type], max: 1 } }))
    const cancels = held.filter((_: any, i: number) => i % 2 === 0).map((p: any) => post(`/processes/${p.id}/cancel`, {}))
    const [acks, cancelled] = await Promise.all([Promise.all(completes), Promise.all(cancels)])
    let claimed = 0
    for (const [i, p] of held.entries()) {
      const now = await get(p.id)
      const statuses = (await events(p.id)).map((e) => e.status)
      const ack = acks[i]
      if (now.status === 'cancelled') {
        expect(ack).toMatchObject({ op: 'error', code: 'cancelled' })
        expect(statuses).not.toContain('completed')
      } else {
        expect(now.status).toBe('completed')
        expect(ack.op).toBe('ack')
        expect(statuses).not.toContain('cancelled')
        claimed += ack.processes.length
      }
      expect(statuses.filter((s) => s === 'cancelled' || s === 'completed')).toHaveLength(1)
    }
    for (const c of cancelled) expect([200, 409]).toContain(c.status)
    // Only the applied completes took a next process: the rest are still pending, nobody's.
    const all = await sql<{ attempts: number }[]>`select attempts from processes where type = ${type} and id <> all(${held.map((p: any) => p.id)}::bigint[])`
    expect(all.filter((r) => r.attempts > 0)).toHaveLength(claimed)
    expect(all.filter((r) => r.attempts === 0)).toHaveLength(10 - claimed)
    worker.close()
  })
})

describe('progress', () => {
  it('acks each progress once accepted, one version each, shows it at once and writes it behind (PROGRESS_PERSIST_MS: 60 s here)', async () => {
    const type = freshType()
    const p = await create({ type })
    const worker = await TestWorker.connect(base, wtoken)
    const run = (await worker.request({ op: 'claim', types: [type] })).process
    let version = run.version
    for (const progress of [10, 20, 30, 40, 50]) {
      const ack = await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress }, 20_000)
      expect(ack.op).toBe('ack')
      expect(ack.version).toBe(++version)
    }
    // The instance holding the lease shows the newest accepted state; the row has not been written yet.
    expect(await get(p.id)).toMatchObject({ progress: 50, version })
    const [row] = await sql<{ progress: number; version: number }[]>`select progress, version from processes where id = ${p.id}`
    expect(row).toEqual({ progress: 0, version: run.version })
    // The terminal frame supersedes the queued write: it commits after the live versions, with progress 100.
    const done = await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts }, 20_000)
    expect(done).toMatchObject({ op: 'ack', version: version + 1 })
    const [after] = await sql<{ progress: number; version: number; status: string }[]>`select progress, version, status from processes where id = ${p.id}`
    expect(after).toEqual({ progress: 100, version: version + 1, status: 'completed' })
    worker.close()
  })
})

describe('claim cost', () => {
  const FINISHED = hasPostgres ? 1_000_000 : 100_000
  it(`reads only pending rows through the claim index with ${FINISHED.toLocaleString('en')} finished rows (EXPLAIN)`, async () => {
    const t = await createTenant(sql)
    await sql`
      insert into processes (workspace_id, type, status, progress, message, attempts, started_at, finished_at)
      select ${t.workspaceId}, 'history', 'completed', 100, 'Completed', 1, now(), now() from generate_series(1, ${FINISHED})`
    // And another workspace's backlog in the index's way (whatever earlier tests in this file left pending).
    const other = await createTenant(sql)
    await sql`insert into processes (workspace_id, type) select ${other.workspaceId}, 'backlog' from generate_series(1, 5000)`
    await sql`analyze processes`
    for (let i = 0; i < 3; i++) await insertProcess(sql, { workspaceId: t.workspaceId, createdBy: null, type: 'history', metadata: {} })
    const plan = await explainClaim(sql, { workerId: 'explain', types: ['history'], max: 2 })
    const onProcesses = planNodesOn(plan, 'processes')
    expect(onProcesses.filter((n) => n['Node Type'] === 'Seq Scan')).toEqual([])
    expect(rowsRead(onProcesses)).toBeLessThan(100)
    expect(onProcesses.some((n) => n['Index Name'] === 'processes_claim_idx')).toBe(true)
  }, 300_000)

  it('claims through the claim index right after a bulk create, before any analyze has seen it (EXPLAIN)', async () => {
    // Statistics from a table of finished history; then 20,000 pending rows the planner does not know of (an
    // analyze comes once per autovacuum naptime): it took them for one row, and read all of them per claim.
    const { db: own } = await testDatabase()
    const sql = own.sql
    const a = await createTenant(sql)
    const b = await createTenant(sql)
    await sql`insert into processes (workspace_id, type, status, finished_at) select ${a.workspaceId}, 'done', 'completed', now() from generate_series(1, 20000)`
    await sql`analyze processes`
    await sql`insert into processes (workspace_id, type) select ${a.workspaceId}, 'burst' from generate_series(1, 20000)`
    await sql`insert into processes (workspace_id, type) values (${b.workspaceId}, 'burst')`
    const plan = await explainClaim(sql, { workerId: 'burst', types: ['burst'], max: 50 })
    const onProcesses = planNodesOn(plan, 'processes').filter((n) => n['Node Type'] !== 'ModifyTable')
    expect(onProcesses.filter((n) => n['Node Type'] === 'Seq Scan')).toEqual([])
    // 50 claimed (26 and 25 from the two lanes' turns, at most): a few rows more than that, never the burst.
    expect(rowsRead(onProcesses)).toBeLessThan(200)
    // And no JIT compilation (the disabled sort's cost would otherwise set it off: ~370 ms a claim).
    expect(planOf(plan).JIT).toBeUndefined()
  }, 120_000)

  // One worker id holding many leases (a fleet sharing an id, or concurrency in the thousands): the batched
  // progress and complete statements must find their rows by id, not walk that worker's leases.
  const LEASES = 5_000
  it(`writes a batch of live states, and of completes, reading only its own rows while one worker holds ${LEASES.toLocaleString('en')} leases (EXPLAIN)`, async () => {
    // A database of its own: this file's servers sweep leases with short timeouts, and would fail these.
    const { db: own } = await testDatabase()
    const sql = own.sql
    const t = await createTenant(sql)
    const ids = (
      await sql`
        insert into processes (workspace_id, type, status, worker_id, attempts, started_at, heartbeat_at)
        select ${t.workspaceId}, 'fleet', 'running', 'fleet-worker', 1, now(), now() from generate_series(1, ${LEASES})
        returning id`
    ).map((r) => Number(r.id))
    await sql`analyze processes`
    const mine = ids.slice(100, 103)
    const now = new Date().toISOString()
    const live = mine.map((id) => ({
      id,
      progress: 40,
      message: null,
      version: 2,
      updated_at: now,
      worker_id: 'fleet-worker',
      attempt: 1,
      base: 0,
      beat: false,
    }))
    const completes = mine.map((id) => ({ id, worker_id: 'fleet-worker', attempt: 1, worker_token_id: null, review: false, version: 2, base: 0 }))
    for (const plan of [await explain(sql, (tx) => liveStatement(tx, live)), await explain(sql, (tx) => completeStatement(tx, completes))]) {
      const onProcesses = planNodesOn(plan, 'processes').filter((n) => n['Node Type'] !== 'ModifyTable')
      expect(onProcesses.length).toBeGreaterThan(0)
      expect(onProcesses.filter((n) => n['Node Type'] === 'Seq Scan')).toEqual([])
      expect(rowsRead(onProcesses)).toBeLessThan(20)
    }
    // And the writes themselves land on exactly those rows.
    const written: any[] = await sql.begin(async (tx) => await liveStatement(tx, live))
    expect(written.map((r) => Number(r.id)).sort()).toEqual([...mine].sort())
  }, 120_000)
})

/** EXPLAIN (analyze) of a statement in a transaction that is rolled back: whatever it writes is never kept. */
function explain(sql: typeof db.sql, statement: (tx: any) => any, before?: (tx: any) => unknown) {
  return sql.begin(async (tx) => {
    await before?.(tx)
    const [row] = await tx`explain (analyze, format json) ${statement(tx)}`
    await tx`rollback`
    return row
  })
}

/** A claim's EXPLAIN, under the settings claimNext gives its statement. */
const explainClaim = (sql: typeof db.sql, o: Parameters<typeof claimStatement>[1]) => explain(sql, (tx) => claimStatement(tx, o), claimPlanSettings)

/** The top of an EXPLAIN (format json) result: its Plan, and JIT when the statement was compiled. */
const planOf = (plan: any) => (plan?.['QUERY PLAN'] ?? plan)?.[0] ?? {}

/** The plan nodes of an EXPLAIN (format json) result that read the given table. */
function planNodesOn(plan: any, table: string): any[] {
  const root = planOf(plan).Plan
  expect(root).toBeDefined()
  const nodes: any[] = []
  const walk = (n: any) => {
    nodes.push(n)
    for (const c of n.Plans ?? []) walk(c)
  }
  walk(root)
  return nodes.filter((n) => n['Relation Name'] === table)
}

/** Rows the nodes read: those they returned and those their filters dropped, over every loop. */
const rowsRead = (nodes: any[]) =>
  nodes.reduce((sum, n) => sum + (n['Actual Rows'] + (n['Rows Removed by Filter'] ?? 0) + (n['Rows Removed by Join Filter'] ?? 0)) * n['Actual Loops'], 0)
