import { describe, expect, it } from 'bun:test'
import { BUN, createTenant, hasPostgres, listeningServer, restAs, testDatabase, waitFor, workerToken } from '../support/helpers'
import { type Frame, TestWorker } from '../support/worker-client'

const { db } = await testDatabase()
const server = await listeningServer({ PROGRESS_PERSIST_MS: '100', JOB_TIMEOUT_MS: '600', SWEEP_INTERVAL_MS: '100' }, db)
const base = server.url
const tenant = await createTenant(db.sql)
const wtoken = await workerToken(db.sql)
const { auth, create, get, events } = restAs(base, tenant.token)
/** The row itself, not the live state this instance shows. */
const rowOf = async (id: number) =>
  (await db.sql<{ progress: number; message: string | null; version: number }[]>`select progress, message, version from processes where id = ${id}`)[0]!
let typeSeq = 0
const freshType = () => `wk_${typeSeq++}`

describe('worker gateway: connection', () => {
  it('refuses the upgrade with 401 without a valid worker token, and accepts ?token=', async () => {
    await expect(TestWorker.connect(base, 'nope')).rejects.toMatchObject({ status: 401 })
    await expect(TestWorker.connect(base, tenant.token)).rejects.toMatchObject({ status: 401 }) // an API token is not a worker token
    const plain = await fetch(`${base}/workers/ws`)
    expect(plain.status).toBe(401)
    expect((await plain.json()).error.code).toBe('unauthenticated')
    const worker = await TestWorker.connect(base, wtoken, { via: 'query' })
    expect((await worker.request({ op: 'hello', worker_id: 'query-worker' })).op).toBe('ack')
    worker.close()
  })

  it('answers malformed, unknown, invalid and oversized frames with error and keeps the connection open', async () => {
    const worker = await TestWorker.connect(base, wtoken)
    const bad = await worker.raw('{not json')
    expect(bad).toMatchObject({ op: 'error', code: 'invalid_message' })
    expect(await worker.raw(JSON.stringify({ op: 'dance', ref: 'x1' }))).toMatchObject({ op: 'error', code: 'invalid_message', ref: 'x1' })
    expect(await worker.raw(JSON.stringify([1, 2]))).toMatchObject({ op: 'error', code: 'invalid_message' })
    expect(await worker.raw(JSON.stringify({ op: 'progress', ref: 7, process_id: 1, progress: 101 }))).toMatchObject({
      op: 'error',
      code: 'invalid_message',
      ref: 7,
    })
    expect(await worker.raw(JSON.stringify({ op: 'log', ref: 'big', process_id: 1, message: 'x'.repeat(70 * 1024) }))).toMatchObject({
      op: 'error',
      code: 'invalid_message',
      ref: 'big',
    })
    expect(await worker.raw(Buffer.from('binary'))).toMatchObject({ op: 'error', code: 'invalid_message' })
    // Still open and working.
    expect((await worker.request({ op: 'claim', types: [freshType()], wait_ms: 0 })).process).toBeNull()
    expect(worker.closeCode).toBeNull()
    worker.close()
  })

  it('answers a 2 MiB frame with invalid_message, naming its ref, and the socket stays usable', async () => {
    const type = freshType()
    const p = await create(type)
    const worker = await TestWorker.connect(base, wtoken)
    const run = (await worker.request({ op: 'claim', types: [type] })).process
    // Sent raw, so a failure does not print 2 MiB of frame. Bun's own limit once closed the socket (1009) here.
    const huge = { op: 'complete', ref: 'huge', process_id: p.id, attempt: run.attempts, result_summary: { blob: 'x'.repeat(2 * 1024 * 1024) } }
    expect(await worker.raw(JSON.stringify(huge))).toMatchObject({ op: 'error', ref: 'huge', code: 'invalid_message', message: 'frame exceeds 64 KiB' })
    expect(worker.closeCode).toBeNull()
    expect((await worker.request({ op: 'progress', process_id: p.id, attempt: run.attempts, progress: 40 })).op).toBe('ack')
    expect((await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts, result_summary: { small: true } })).op).toBe('ack')
    expect(await get(p.id)).toMatchObject({ status: 'completed', result_summary: { small: true } })
    worker.close()
  })
})

describe('worker gateway: claims', () => {
  it('claims the oldest pending process of the given types, and echoes ref', async () => {
    const type = freshType()
    const a = await create(type)
    const b = await create(type)
    const worker = await TestWorker.connect(base, wtoken)
    await worker.request({ op: 'hello', worker_id: 'claimer' })
    const first = await worker.request({ op: 'claim', types: [type] })
    expect(first.op).toBe('claimed')
    expect(first.ref).toBeString()
    expect(first.process).toMatchObject({ id: a.id, status: 'running', worker_id: 'claimer', attempts: 1 })
    expect((await worker.request({ op: 'claim', types: [type] })).process.id).toBe(b.id)
    expect((await worker.request({ op: 'claim', types: [type] })).process).toBeNull()
    worker.close()
  })

  it('a waiting claim wakes as soon as matching work is created, without waiting out wait_ms', async () => {
    const type = freshType()
    const worker = await TestWorker.connect(base, wtoken)
    const started = Date.now()
    const pending = worker.request({ op: 'claim', types: [type], wait_ms: 20_000 })
    await Bun.sleep(200)
    const p = await create(type)
    const reply = await pending
    expect(reply.process.id).toBe(p.id)
    expect(Date.now() - started).toBeLessThan(5000)
    // And one that finds nothing returns null after wait_ms.
    const t0 = Date.now()
    expect((await worker.request({ op: 'claim', types: [freshType()], wait_ms: 300 })).process).toBeNull()
    expect(Date.now() - t0).toBeGreaterThanOrEqual(280)
    worker.close()
  })

  it('8 racing workers never claim the same process twice', async () => {
    const type = freshType()
    const created = await Promise.all(Array.from({ length: 40 }, () => create(type)))
    const workers = await Promise.all(Array.from({ length: 8 }, () => TestWorker.connect(base, wtoken)))
    const claimed: number[] = []
    await Promise.all(
      workers.map(async (w, i) => {
        await w.request({ op: 'hello', worker_id: `racer-${i}` })
        for (;;) {
          const reply = await w.request({ op: 'claim', types: [type] })
          if (!reply.process) return
          claimed.push(reply.process.id)
        }
      }),
    )
    expect(claimed.length).toBe(40)
    expect(new Set(claimed).size).toBe(40)
    expect(claimed.sort((x, y) => x - y)).toEqual(created.map((p) => p.id).sort((x, y) => x - y))
    for (const w of workers) w.close()
  })
})

/**
 * Holds a SHARE lock on processes from another connection until the returned function is called: it conflicts
 * with the ROW EXCLUSIVE lock a claim's UPDATE takes, so a claim waits behind it. Needs a real Postgres.
 */
async function lockProcessesTable(): Promise<() => Promise<void>> {
  let release: () => void = () => {}
  let locked: () => void = () => {}
  const isLocked = new Promise<void>((resolve) => (locked = resolve))
  const holder = db.sql.begin(async (tx) => {
    await tx`lock table processes in share mode`
    locked()
    await new Promise<void>((resolve) => (release = resolve))
  })
  await isLocked
  return async () => {
    release()
    await holder
  }
}

describe.skipIf(!hasPostgres)('worker gateway: a claim whose worker goes away', () => {
  it('is rolled back when the socket closes while the claim query runs: the process stays pending for the next worker', async () => {
    const type = freshType()
    const p = await create(type)
    const unlock = await lockProcessesTable()
    const gone = await TestWorker.connect(base, wtoken)
    await gone.request({ op: 'hello', worker_id: 'gone-worker' })
    const others = server.gateway.connected - 1
    void gone.request({ op: 'claim', types: [type] }, 5000).catch(() => {}) // never answered: the socket closes first
    await Bun.sleep(200)
    gone.close()
    await waitFor(() => server.gateway.connected <= others, 3000, 'the server to see the socket close')
    await unlock()
    await Bun.sleep(300)
    expect(await get(p.id)).toMatchObject({ status: 'pending', worker_id: null, attempts: 0 })
    const next = await TestWorker.connect(base, wtoken)
    await next.request({ op: 'hello', worker_id: 'next-worker' })
    expect((await next.request({ op: 'claim', types: [type] })).process).toMatchObject({ id: p.id, worker_id: 'next-worker', attempts: 1 })
    expect((await events(p.id)).map((e: { status: string }) => e.status)).toEqual(['pending', 'running'])
    next.close()
  })

  it('is answered unavailable after the query deadline (3 s), and rolled back when the query finishes later', async () => {
    const type = freshType()
    const p = await create(type)
    const unlock = await lockProcessesTable()
    const worker = await TestWorker.connect(base, wtoken)
    await worker.request({ op: 'hello', worker_id: 'late-worker' })
    const started = Date.now()
    expect(await worker.request({ op: 'claim', types: [type] })).toMatchObject({ op: 'error', code: 'unavailable' })
    expect(Date.now() - started).toBeLessThan(4500)
    await unlock()
    await Bun.sleep(300)
    // The claim's query went on behind the lock and found the process, but nobody was told: not leased.
    expect(await get(p.id)).toMatchObject({ status: 'pending', worker_id: null, attempts: 0 })
    expect((await worker.request({ op: 'claim', types: [type] })).process).toMatchObject({ id: p.id, worker_id: 'late-worker', attempts: 1 })
    worker.close()
  })
})

describe('worker gateway: reporting', () => {
  it('acks progress once accepted, before any write; writes a burst behind as one row write with the last state', async () => {
    const type = freshType()
    const p = await create(type)
    const worker = await TestWorker.connect(base, wtoken)
    const run = (await worker.request({ op: 'claim', types: [type] })).process
    const writesBefore = server.services.metrics.counters.progress_writes
    const replies = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        worker.request({ op: 'progress', process_id: p.id, progress: i + 1, message: `step ${i + 1}`, attempt: run.attempts }),
      ),
    )
    expect(replies.every((r) => r.op === 'ack')).toBe(true)
    // Acked before anything was written (PROGRESS_PERSIST_MS is 100 ms here).
    expect(server.services.metrics.counters.progress_writes - writesBefore).toBe(0)
    const current = await get(p.id)
    expect(current).toMatchObject({ progress: 50, message: 'step 50' })
    expect(current.version).toBeGreaterThan(run.version)
    // Written behind: the row catches up with the newest state, in one or two row writes (not fifty).
    await waitFor(async () => (await rowOf(p.id)).progress === 50, 5000)
    expect(await rowOf(p.id)).toMatchObject({ progress: 50, message: 'step 50', version: current.version })
    const writes = server.services.metrics.counters.progress_writes - writesBefore
    expect(writes).toBeGreaterThanOrEqual(1)
    expect(writes).toBeLessThanOrEqual(2)
    worker.close()
  })

  it("acks progress before this instance's fan-out of it to its streams", async () => {
    const type = freshType()
    const p = await create(type)
    // A local stream whose delivery takes 400 ms of this event loop, as a fan-out to thousands of streams does.
    let fanOut: { start: number; end: number } | null = null
    const unwatch = await server.services.hub.watch(p.id, (state) => {
      if (state.progress !== 60) return
      const start = Date.now()
      while (Date.now() < start + 400) {}
      fanOut = { start, end: Date.now() }
    })
    // The worker is another process, so it reads its ack while this one is still busy with the stream.
    const script = `
      const ws = new WebSocket(${JSON.stringify(`${base.replace(/^http/, 'ws')}/workers/ws?token=${encodeURIComponent(wtoken)}`)})
      ws.onopen = () => ws.send(JSON.stringify({ op: 'claim', ref: 'c', types: [${JSON.stringify(type)}] }))
      ws.onmessage = (event) => {
        const frame = JSON.parse(String(event.data))
        if (frame.ref === 'c') ws.send(JSON.stringify({ op: 'progress', ref: 'p', process_id: frame.process.id, attempt: frame.process.attempts, progress: 60 }))
        if (frame.ref === 'p') { console.log(JSON.stringify({ at: Date.now(), frame })); process.exit(0) }
      }`
    const proc = Bun.spawn([BUN, '-e', script], { stdout: 'pipe', stderr: 'inherit' })
    const ack = JSON.parse((await new Response(proc.stdout).text()).trim())
    unwatch()
    expect(ack.frame.op).toBe('ack')
    expect(fanOut).not.toBeNull()
    expect(ack.at).toBeLessThan(fanOut!.end)
  })

  it('log appends an event with the status unchanged; complete sets progress 100 and is acked again, not applied twice', async () => {
    const type = freshType()
    const p = await create(type)
    const worker = await TestWorker.connect(base, wtoken)
    const run = (await worker.request({ op: 'claim', types: [type] })).process
    expect((await worker.request({ op: 'log', process_id: p.id, message: 'parsed header', attempt: run.attempts })).op).toBe('ack')
    expect((await worker.request({ op: 'heartbeat', process_id: p.id, attempt: run.attempts })).op).toBe('ack')
    const done = { op: 'complete', process_id: p.id, result_summary: { rows: 10 }, attempt: run.attempts }
    expect((await worker.request(done)).op).toBe('ack')
    expect((await worker.request(done)).op).toBe('ack')
    const final = await get(p.id)
    expect(final).toMatchObject({ status: 'completed', progress: 100, result_summary: { rows: 10 } })
    expect((await events(p.id)).map((e) => [e.status, e.message])).toEqual([
      ['pending', 'Queued'],
      ['running', 'Started'],
      ['running', 'parsed header'],
      ['completed', 'Completed'],
    ])
    // A different outcome after the fact is refused.
    expect(await worker.request({ op: 'fail', process_id: p.id, error: 'late', attempt: run.attempts })).toMatchObject({
      op: 'error',
      code: 'invalid_transition',
    })
    worker.close()
  })

  it('start moves a pending process to running for this worker; fail records the error', async () => {
    const p = await create(freshType())
    const worker = await TestWorker.connect(base, wtoken)
    await worker.request({ op: 'hello', worker_id: 'starter' })
    const started = await worker.request({ op: 'start', process_id: p.id })
    expect(started.op).toBe('ack')
    expect(started.process).toMatchObject({ status: 'running', worker_id: 'starter', attempts: 1 })
    const repeated = await worker.request({ op: 'start', process_id: p.id }) // repeated: same outcome
    expect(repeated.op).toBe('ack')
    // The same process shape as every other reply: no lease bookkeeping (heartbeat_at).
    expect(repeated.process).toEqual(started.process)
    expect(repeated.process).not.toHaveProperty('heartbeat_at')
    expect((await worker.request({ op: 'fail', process_id: p.id, error: 'bad row 7' })).op).toBe('ack')
    expect(await get(p.id)).toMatchObject({ status: 'failed', error: 'bad row 7' })
    worker.close()
  })

  // A batch holds its completes' rows while its fails' statement runs; another transaction holding one of those
  // and wanting one of these (the write-behind's statement, under load) makes Postgres roll one back.
  it.skipIf(!hasPostgres)('runs a batch of terminal frames again when Postgres rolls it back to break a deadlock', async () => {
    const type = freshType()
    const [a, b] = [await create(type), await create(type)]
    const worker = await TestWorker.connect(base, wtoken)
    await worker.request({ op: 'hello', worker_id: `deadlock-${type}` })
    const claimed = (await worker.request({ op: 'claim', types: [type], max: 2 })).processes as { id: number; attempts: number }[]
    expect(claimed.map((p) => p.id).sort()).toEqual([a.id, b.id].sort())
    const conflictsBefore = server.gateway.finisher.conflicts
    let sent: Promise<Frame[]> | null = null
    await db.sql.begin(async (tx) => {
      // Postgres rolls back the transaction whose deadlock check finds the cycle: this one checks late.
      await tx`set local deadlock_timeout = '20s'`
      await tx`select 1 from processes where id = ${b.id} for update`
      // One batch: its complete locks a, then its fail waits for b, held here.
      sent = Promise.all([
        worker.request({ op: 'complete', process_id: a.id, attempt: 1 }),
        worker.request({ op: 'fail', process_id: b.id, attempt: 1, error: 'row 7' }),
      ])
      await waitFor(
        async () => (await db.sql`select 1 from pg_locks where not granted and locktype = 'transactionid'`).length > 0,
        5000,
        'the batch waiting for b',
      )
      // Now this transaction wants a: a cycle. The batch's deadlock check (after the server's deadlock_timeout)
      // finds it and Postgres rolls the batch back; this update then goes through.
      await tx`update processes set updated_at = updated_at where id = ${a.id}`
    })
    const replies = await sent!
    expect(replies.map((r) => r.op)).toEqual(['ack', 'ack'])
    worker.close()
    expect(server.gateway.finisher.conflicts).toBeGreaterThan(conflictsBefore)
    expect((await get(a.id)).status).toBe('completed')
    expect(await get(b.id)).toMatchObject({ status: 'failed', error: 'row 7' })
  })

  it('refuses with not_found, not_owner and cancelled, naming the ref', async () => {
    const type = freshType()
    const p = await create(type)
    const owner = await TestWorker.connect(base, wtoken)
    const intruder = await TestWorker.connect(base, wtoken)
    const run = (await owner.request({ op: 'claim', types: [type] })).process
    expect(await owner.request({ op: 'progress', process_id: 987654321, progress: 5 })).toMatchObject({ op: 'error', code: 'not_found' })
    expect(await intruder.request({ op: 'progress', process_id: p.id, progress: 5 })).toMatchObject({ op: 'error', code: 'not_owner' })
    expect(await intruder.request({ op: 'complete', process_id: p.id })).toMatchObject({ op: 'error', code: 'not_owner' })
    expect(await owner.request({ op: 'start', process_id: p.id, attempt: run.attempts })).toMatchObject({ op: 'ack' })
    await fetch(`${base}/processes/${p.id}/cancel`, { method: 'POST', headers: auth })
    const refused = await owner.request({ op: 'progress', process_id: p.id, progress: 6, attempt: run.attempts })
    expect(refused).toMatchObject({ op: 'error', code: 'cancelled' })
    expect(refused.ref).toBeString()
    owner.close()
    intruder.close()
  })
})

describe('worker gateway: cancel, leases and fencing', () => {
  it('pushes cancel to the worker holding a process the moment a user cancels it', async () => {
    const type = freshType()
    const p = await create(type)
    const worker = await TestWorker.connect(base, wtoken)
    await worker.request({ op: 'claim', types: [type] })
    expect((await fetch(`${base}/processes/${p.id}/cancel`, { method: 'POST', headers: auth })).status).toBe(200)
    expect(await worker.nextCancel(p.id, 2000)).toMatchObject({ op: 'cancel', process_id: p.id })
    worker.close()
  })

  it('a worker that reconnects with the same worker_id keeps its processes and still hears cancel', async () => {
    const type = freshType()
    const p = await create(type)
    const first = await TestWorker.connect(base, wtoken)
    await first.request({ op: 'hello', worker_id: 'phoenix' })
    const run = (await first.request({ op: 'claim', types: [type] })).process
    first.close()
    await Bun.sleep(100)
    const again = await TestWorker.connect(base, wtoken)
    const hello = await again.request({ op: 'hello', worker_id: 'phoenix' })
    expect(hello.processes).toContain(p.id)
    expect((await again.request({ op: 'progress', process_id: p.id, progress: 30, attempt: run.attempts })).op).toBe('ack')
    await fetch(`${base}/processes/${p.id}/cancel`, { method: 'POST', headers: auth })
    expect((await again.nextCancel(p.id, 2000)).process_id).toBe(p.id)
    again.close()
  })

  it('the sweep fails a silent process ("timed out") and only that one; a late frame of the old attempt is refused', async () => {
    const type = freshType()
    const silent = await create(type)
    const alive = await create(type)
    const worker = await TestWorker.connect(base, wtoken)
    await worker.request({ op: 'hello', worker_id: 'sleepy' })
    const silentRun = (await worker.request({ op: 'claim', types: [type] })).process
    const aliveRun = (await worker.request({ op: 'claim', types: [type] })).process
    expect(silentRun.id).toBe(silent.id)
    const beat = setInterval(() => void worker.request({ op: 'heartbeat', process_id: alive.id, attempt: aliveRun.attempts }), 150)
    await worker.nextCancel(silent.id, 5000) // the worker is told it lost the process
    clearInterval(beat)
    expect(await get(silent.id)).toMatchObject({ status: 'failed', error: 'timed out' })
    expect((await events(silent.id)).at(-1)).toMatchObject({ status: 'failed', message: 'timed out' })
    expect((await get(alive.id)).status).toBe('running')

    // Retried and claimed again: the late worker's frames with the old attempt are fenced off.
    await fetch(`${base}/processes/${silent.id}/retry`, { method: 'POST', headers: auth })
    const replacement = await TestWorker.connect(base, wtoken)
    await replacement.request({ op: 'hello', worker_id: 'sleepy' }) // even with the same worker id
    const second = (await replacement.request({ op: 'claim', types: [type] })).process
    expect(second.attempts).toBe(silentRun.attempts + 1)
    expect(await worker.request({ op: 'complete', process_id: silent.id, attempt: silentRun.attempts })).toMatchObject({ op: 'error', code: 'not_owner' })
    expect((await replacement.request({ op: 'complete', process_id: silent.id, attempt: second.attempts })).op).toBe('ack')
    await waitFor(async () => (await get(alive.id)).status === 'failed', 5000, 'the other lease to expire once heartbeats stop')
    worker.close()
    replacement.close()
  })
})

describe('worker gateway: text Postgres cannot store', () => {
  it('refuses U+0000, lone surrogates and absurd nesting with invalid_message, and other frames still go through', async () => {
    const type = freshType()
    const p = await create(type)
    const worker = await TestWorker.connect(base, wtoken)
    const run = (await worker.request({ op: 'claim', types: [type] })).process
    const at = { process_id: p.id, attempt: run.attempts }
    let deep: Record<string, unknown> = {}
    for (let i = 0; i < 200; i++) deep = { deeper: deep }
    for (const frame of [
      { op: 'log', ...at, message: 'nul \u0000 byte' },
      { op: 'progress', ...at, progress: 5, message: 'lone \ud800 surrogate' },
      { op: 'fail', ...at, error: 'x\u0000' },
      { op: 'complete', ...at, result_summary: deep },
      { op: 'complete', ...at, result_summary: { 'key\u0000': 1 } },
    ]) {
      expect(await worker.request(frame)).toMatchObject({ op: 'error', code: 'invalid_message' })
    }
    expect((await worker.request({ op: 'progress', ...at, progress: 7, message: 'fine ✓' })).op).toBe('ack')
    expect((await worker.request({ op: 'complete', ...at, result_summary: { ok: true } })).op).toBe('ack')
    expect(await get(p.id)).toMatchObject({ status: 'completed', result_summary: { ok: true } })
    worker.close()
  })
})
