// Frames on one worker socket about one process take effect in the order they were sent (README: Worker protocol), even when the
// worker does not wait for each ack — while progress frames still coalesce and other processes never wait.
import { describe, expect, it } from 'bun:test'
import { createTenant, listeningServer, restAs, testDatabase, workerToken } from '../support/helpers'
import { type Frame, TestWorker } from '../support/worker-client'

const { db } = await testDatabase()
// Every order is checked with the default coalescing window and with none: with PROGRESS_PERSIST_MS=0 a progress
// frame sent after a status change is due at once, so a change that flushed whatever was queued when it ran
// (rather than what was sent before it) would write that later progress first.
const servers = {
  'PROGRESS_PERSIST_MS=100': await listeningServer({ PROGRESS_PERSIST_MS: '100' }, db),
  'PROGRESS_PERSIST_MS=0': await listeningServer({ PROGRESS_PERSIST_MS: '0' }, db),
}
const base = servers['PROGRESS_PERSIST_MS=100'].url
const tenant = await createTenant(db.sql)
const wtoken = await workerToken(db.sql)
const { create } = restAs(base, tenant.token)
let typeSeq = 0
const freshType = () => `ord_${typeSeq++}`

/** Enough processes at once that a race between two frames of one of them shows on every run. */
const N = 40

/** N running processes held by one worker, as [process id, attempt]. */
async function runMany(worker: TestWorker, n = N) {
  const type = freshType()
  for (let i = 0; i < n; i++) await create(type)
  const runs: { id: number; attempt: number }[] = []
  for (let i = 0; i < n; i++) {
    const { process } = await worker.request({ op: 'claim', types: [type] })
    runs.push({ id: process.id, attempt: process.attempts })
  }
  return runs
}

/** Sends every frame at once, without waiting for any ack, and resolves with the replies in send order. */
const burst = (worker: TestWorker, frames: Frame[]) => Promise.all(frames.map((f) => worker.request(f)))

/** A burst for each of several processes at once: the replies per process, in send order. */
const burstEach = <R extends { id: number }>(worker: TestWorker, runs: R[], framesOf: (run: R) => Frame[]) =>
  Promise.all(runs.map((run) => burst(worker, framesOf(run))))

for (const [name, server] of Object.entries(servers)) {
  describe(`worker gateway: frame order on one socket (${name})`, () => {
    const base = server.url
    // Read through the instance holding the leases: it shows its newest accepted state; another instance
    // shows the row, which the write-behind may not have reached yet (README: Live state, reads).
    const { get, events } = restAs(base, tenant.token)
    const named = (worker: string) => `${worker}-${name.replace('PROGRESS_PERSIST_MS=', 'f')}`

    it('progress, log, progress, complete sent back to back are all applied, in that order', async () => {
      const worker = await TestWorker.connect(base, wtoken)
      const runs = await runMany(worker)
      const replies = await burstEach(worker, runs, ({ id, attempt }) => [
        { op: 'progress', process_id: id, attempt, progress: 50 },
        { op: 'log', process_id: id, attempt, message: 'halfway' },
        { op: 'progress', process_id: id, attempt, progress: 90, message: 'nearly' },
        { op: 'complete', process_id: id, attempt, result_summary: { id } },
      ])
      for (const [i, { id }] of runs.entries()) {
        expect(replies[i]!.map((r) => [r.op, r.code])).toEqual([
          ['ack', undefined],
          ['ack', undefined],
          ['ack', undefined],
          ['ack', undefined],
        ])
        const versions = replies[i]!.map((r) => r.version as number)
        expect(versions).toEqual([...versions].sort((a, b) => a - b))
        expect(await get(id)).toMatchObject({ status: 'completed', progress: 100, result_summary: { id } })
        expect((await events(id)).map((e) => [e.status, e.message])).toEqual([
          ['pending', 'Queued'],
          ['running', 'Started'],
          ['running', 'halfway'],
          ['completed', 'Completed'],
        ])
      }
      expect(server.gateway.orderedProcesses).toBe(0)
      worker.close()
    })

    it('a progress sent after a log commits after it: the newest message wins', async () => {
      const worker = await TestWorker.connect(base, wtoken)
      const runs = await runMany(worker)
      const replies = await burstEach(worker, runs, ({ id, attempt }) => [
        { op: 'log', process_id: id, attempt, message: 'first a log' },
        { op: 'progress', process_id: id, attempt, progress: 20, message: 'then progress' },
        { op: 'log', process_id: id, attempt, message: 'another log' },
        { op: 'progress', process_id: id, attempt, progress: 30, message: 'last word' },
      ])
      for (const [i, { id }] of runs.entries()) {
        expect(replies[i]!.every((r) => r.op === 'ack')).toBe(true)
        const versions = replies[i]!.map((r) => r.version as number)
        expect(new Set(versions).size).toBe(4) // nothing coalesced across a log
        expect(versions).toEqual([...versions].sort((a, b) => a - b))
        expect(await get(id)).toMatchObject({ status: 'running', progress: 30, message: 'last word', version: versions[3] })
      }
      worker.close()
    })

    it('of two review completes sent back to back the first is applied and its result kept; the second is a repeat', async () => {
      const worker = await TestWorker.connect(base, wtoken)
      const runs = await runMany(worker)
      const replies = await burstEach(worker, runs, ({ id, attempt }) => [
        { op: 'complete', process_id: id, attempt, review: true, result_summary: { draft: 1 } },
        { op: 'complete', process_id: id, attempt, review: true },
      ])
      for (const [i, { id }] of runs.entries()) {
        const [first, second] = replies[i]!
        expect(first).toMatchObject({ op: 'ack' })
        expect(first!.repeated).toBeUndefined()
        expect(second).toMatchObject({ op: 'ack', repeated: true })
        expect(await get(id)).toMatchObject({ status: 'waiting_review', result_summary: { draft: 1 }, version: first!.version })
      }
      worker.close()
    })

    it('a progress sent after complete is refused and changes nothing', async () => {
      const worker = await TestWorker.connect(base, wtoken)
      const runs = await runMany(worker)
      const replies = await burstEach(worker, runs, ({ id, attempt }) => [
        { op: 'progress', process_id: id, attempt, progress: 50 },
        { op: 'complete', process_id: id, attempt },
        { op: 'progress', process_id: id, attempt, progress: 99, message: 'too late' },
      ])
      for (const [i, { id }] of runs.entries()) {
        const [progress, complete, late] = replies[i]!
        expect(progress).toMatchObject({ op: 'ack' })
        expect(complete).toMatchObject({ op: 'ack' })
        expect(late).toMatchObject({ op: 'error', code: 'invalid_transition' })
        expect(await get(id)).toMatchObject({ status: 'completed', progress: 100, message: 'Completed', version: complete!.version })
      }
      worker.close()
    })

    it('start then progress, heartbeat and fail sent back to back are applied in order', async () => {
      const worker = await TestWorker.connect(base, wtoken)
      await worker.request({ op: 'hello', worker_id: named('ord-starter') })
      const type = freshType()
      const created = await Promise.all(Array.from({ length: N }, () => create(type)))
      const replies = await burstEach(worker, created, ({ id }) => [
        { op: 'start', process_id: id },
        { op: 'progress', process_id: id, progress: 10 },
        { op: 'heartbeat', process_id: id },
        { op: 'fail', process_id: id, error: 'row 3 is bad' },
      ])
      for (const [i, { id }] of created.entries()) {
        expect(replies[i]!.map((r) => r.op)).toEqual(['ack', 'ack', 'ack', 'ack'])
        expect(await get(id)).toMatchObject({ status: 'failed', progress: 10, error: 'row 3 is bad', worker_id: named('ord-starter') })
      }
      worker.close()
    })

    it('a frame sent right after hello acts as the new worker id', async () => {
      const type = freshType()
      const p = await create(type)
      const first = await TestWorker.connect(base, wtoken)
      await first.request({ op: 'hello', worker_id: named('ord-returning') })
      const run = (await first.request({ op: 'claim', types: [type] })).process
      first.close()
      const again = await TestWorker.connect(base, wtoken)
      const [hello, progress, complete] = await burst(again, [
        { op: 'hello', worker_id: named('ord-returning') },
        { op: 'progress', process_id: p.id, attempt: run.attempts, progress: 60 },
        { op: 'complete', process_id: p.id, attempt: run.attempts },
      ])
      expect(hello).toMatchObject({ op: 'ack', worker_id: named('ord-returning') })
      expect(progress).toMatchObject({ op: 'ack' })
      expect(complete).toMatchObject({ op: 'ack' })
      expect(await get(p.id)).toMatchObject({ status: 'completed', worker_id: named('ord-returning') })
      again.close()
    })

    it('frames sent before a hello still act as the worker id they were sent under', async () => {
      const worker = await TestWorker.connect(base, wtoken)
      await worker.request({ op: 'hello', worker_id: named('ord-before') })
      const [{ id, attempt }] = await runMany(worker, 1)
      const [progress, log, hello, late] = await burst(worker, [
        { op: 'progress', process_id: id!, attempt, progress: 40 },
        { op: 'log', process_id: id!, attempt, message: 'still mine' },
        { op: 'hello', worker_id: named('ord-after') },
        { op: 'log', process_id: id!, attempt, message: 'not mine any more' },
      ])
      expect([progress!.op, log!.op, hello!.op]).toEqual(['ack', 'ack', 'ack'])
      expect(late).toMatchObject({ op: 'error', code: 'not_owner' })
      expect(await get(id!)).toMatchObject({ status: 'running', progress: 40, message: 'still mine' })
      worker.close()
    })

    it('frames about other processes, and claims, never wait for one process', async () => {
      const worker = await TestWorker.connect(base, wtoken)
      const [a, b] = await runMany(worker, 2)
      // A long claim on the same socket holds back nothing.
      const waiting = worker.request({ op: 'claim', types: [freshType()], wait_ms: 3000 })
      // A's frames queue up behind each other; B's go straight through.
      const aFrames = burst(worker, [
        { op: 'progress', process_id: a!.id, attempt: a!.attempt, progress: 1 },
        { op: 'progress', process_id: a!.id, attempt: a!.attempt, progress: 2 },
        { op: 'log', process_id: a!.id, attempt: a!.attempt, message: 'a' },
      ])
      const t0 = Date.now()
      expect((await worker.request({ op: 'log', process_id: b!.id, attempt: b!.attempt, message: 'b' })).op).toBe('ack')
      expect((await worker.request({ op: 'claim', types: [freshType()], wait_ms: 0 })).process).toBeNull()
      expect(Date.now() - t0).toBeLessThan(1000)
      expect((await aFrames).map((r) => r.op)).toEqual(['ack', 'ack', 'ack'])
      expect((await waiting).process).toBeNull()
      expect(server.gateway.orderedProcesses).toBe(0)
      worker.close()
    })

    it('keeps applying, in order, the frames a worker sent just before it closed', async () => {
      const worker = await TestWorker.connect(base, wtoken)
      const runs = await runMany(worker, 10)
      for (const { id, attempt } of runs) {
        for (const frame of [
          { op: 'progress', process_id: id, attempt, progress: 70 },
          { op: 'log', process_id: id, attempt, message: 'closing' },
          { op: 'complete', process_id: id, attempt, result_summary: { closed: true } },
        ]) {
          worker.ws.send(JSON.stringify(frame))
        }
      }
      worker.close()
      for (const { id } of runs) {
        let current = await get(id)
        for (let i = 0; i < 100 && current.status === 'running'; i++) {
          await Bun.sleep(20)
          current = await get(id)
        }
        expect(current).toMatchObject({ status: 'completed', result_summary: { closed: true } })
        expect((await events(id)).map((e) => e.message)).toEqual(['Queued', 'Started', 'closing', 'Completed'])
      }
    })
  })
}

describe('worker gateway: frame order and coalescing', () => {
  const coalescing = servers['PROGRESS_PERSIST_MS=100']
  const base = coalescing.url
  const { get } = restAs(base, tenant.token)

  it('still coalesces a burst of progress frames into a few writes, each acked with the write that carried it', async () => {
    const worker = await TestWorker.connect(base, wtoken)
    const runs = await runMany(worker, 10)
    const writesBefore = coalescing.services.metrics.counters.progress_writes
    const replies = await burstEach(worker, runs, ({ id, attempt }) =>
      Array.from({ length: 40 }, (_, i) => ({ op: 'progress', process_id: id, attempt, progress: i + 1 })),
    )
    expect(replies.flat().every((r) => r.op === 'ack')).toBe(true)
    const writes = coalescing.services.metrics.counters.progress_writes - writesBefore
    expect(writes / runs.length).toBeLessThan(5) // 40 frames of a process in ≤ 4 row writes
    for (const [i, { id }] of runs.entries()) expect((await get(id)).version).toBe(replies[i]!.at(-1)!.version)
    worker.close()
  })
})
