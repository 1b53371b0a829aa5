// Fault: SIGKILL of the instance a worker is connected to, in the middle of its process. The worker
// reconnects to the other instance with the same worker_id, keeps its lease and completes; the streams that
// were on the dead instance reconnect to the other one (Last-Event-ID) and, like the rest, end with `done`.
import { describe, expect } from 'bun:test'
import { hasPostgres, hasRedis, redisPrefix, seededDatabase, spawnServer, waitFor } from '../support/helpers'
import { TestWorker } from '../support/worker-client'
import { openStream, versionsIncrease } from '../support/sse-client'
import { Traffic } from './clients'
import { reportAfterAll, scenario, skipped } from './report'

const enabled = hasPostgres && hasRedis
const row = {
  n: 3,
  scenario: 'Instance killed',
  injected: 'SIGKILL of instance A while its worker is mid-process (progress frames in flight); streams on A and B',
  invariant:
    'worker reconnects to B with the same worker_id, keeps its lease (same attempt, never failed), completes; every stream ends with done, its ids and progress never going back; the kill loses at most one write-behind interval of progress, no acked log line or terminal frame',
}
reportAfterAll([3])
if (!enabled) skipped(row, 'needs DATABASE_URL and REDIS_URL')

const WORKER_ID = 'kill-test-worker'
const PERSIST_MS = 100

describe.skipIf(!enabled)('SIGKILL of the instance holding a worker', async () => {
  if (!enabled) return
  const { url, db, tenant, wtoken } = await seededDatabase()
  // A short lease: the worker must be back on B and reporting well within it, or the sweep fails the process.
  const env = {
    DATABASE_URL: url,
    REDIS_URL: process.env.REDIS_URL,
    REDIS_PREFIX: redisPrefix(),
    PROGRESS_PERSIST_MS: String(PERSIST_MS),
    SSE_MAX_MS: '60000',
    SSE_RETRY_MS: '200',
    JOB_TIMEOUT_MS: '4000',
    SWEEP_INTERVAL_MS: '100',
  }
  const [a, b] = await Promise.all([spawnServer(env), spawnServer(env)])
  const traffic = new Traffic()
  // What a load balancer would route to: the live instances, A first while it lives.
  const alive = [a.url, b.url]
  const bases = () => [...alive]

  scenario(row, async () => {
    const p = (await traffic.json(`${a.url}/processes`, { method: 'POST', token: tenant.token, body: JSON.stringify({ type: 'kill_test' }) })).body
    // A second process the worker finishes (acked) just before the kill: a terminal frame is never lost.
    const other = (await traffic.json(`${a.url}/processes`, { method: 'POST', token: tenant.token, body: JSON.stringify({ type: 'kill_other' }) })).body
    const streamsA = [0, 1].map(() => openStream(() => `${bases()[0]}/processes/${p.id}/stream`, tenant.token, { onResponse: traffic.record }))
    const streamsB = [0, 1].map(() => openStream(`${b.url}/processes/${p.id}/stream`, tenant.token, { onResponse: traffic.record }))
    const streams = [...streamsA, ...streamsB]
    await waitFor(() => streams.every((s) => s.messages.length >= 1), 5000, 'every stream to get its snapshot')

    // The worker: on a dropped connection it goes to the next live instance and says hello with the same id.
    let worker = await TestWorker.connect(a.url, wtoken)
    expect((await worker.request({ op: 'hello', worker_id: WORKER_ID })).processes).toEqual([])
    const run = (await worker.request({ op: 'claim', types: ['kill_test'] })).process
    expect(run).toMatchObject({ id: p.id, worker_id: WORKER_ID, attempts: 1 })
    const reconnects: Array<{ to: string; hello: Record<string, any> }> = []
    const send = async (frame: Record<string, unknown>) => {
      for (;;) {
        const reply = await Promise.race([worker.request(frame, 5000), worker.until(() => worker.closeCode !== null, 5000).then(() => null)]).catch(() => null)
        if (reply) return reply
        // No reply: the instance is gone. Reconnect elsewhere and resend (progress is idempotent).
        const to = bases().find((base) => base !== a.url || a.proc.exitCode === null)!
        worker = await TestWorker.connect(to, wtoken)
        reconnects.push({ to, hello: await worker.request({ op: 'hello', worker_id: WORKER_ID }) })
      }
    }

    const otherRun = (await worker.request({ op: 'claim', types: ['kill_other'] })).process
    let lastAcked = 0
    let killedAt = 0
    const ackedAt: Array<{ n: number; at: number }> = []
    let rowAtKill: { progress: number } | null = null
    for (let n = 1; n <= 60; n++) {
      if (n === 19) {
        // Records acked just before the kill: a log line (an event) and a terminal frame.
        expect(await send({ op: 'log', process_id: p.id, message: 'before the kill', attempt: run.attempts })).toMatchObject({ op: 'ack' })
        expect(await send({ op: 'complete', process_id: other.id, attempt: otherRun.attempts })).toMatchObject({ op: 'ack' })
      }
      if (n === 20) {
        // Mid-process, with a frame on the wire: kill A outright (no shutdown, no flush).
        void worker.request({ op: 'progress', process_id: p.id, progress: n, attempt: run.attempts }).catch(() => {})
        a.proc.kill('SIGKILL')
        killedAt = Date.now()
        alive.splice(alive.indexOf(a.url), 1)
        await a.proc.exited
        rowAtKill = (await db.sql<{ progress: number }[]>`select progress from processes where id = ${p.id}`)[0]!
      }
      const reply = await send({ op: 'progress', process_id: p.id, progress: n, attempt: run.attempts })
      expect(reply).toMatchObject({ op: 'ack' })
      if (killedAt === 0) ackedAt.push({ n, at: Date.now() })
      lastAcked = n
      await Bun.sleep(20)
    }
    const complete = await send({ op: 'complete', process_id: p.id, attempt: run.attempts, result_summary: { survived: true } })
    expect(complete).toMatchObject({ op: 'ack' })
    await a.proc.exited
    expect(a.proc.signalCode).toBe('SIGKILL')

    // The worker moved to B once, with the same id, and B handed it its lease back.
    expect(reconnects).toEqual([{ to: b.url, hello: expect.objectContaining({ op: 'ack', worker_id: WORKER_ID, processes: [p.id] }) }])
    // Every stream ends with done on the final state; the ones that were on A got there through B.
    await waitFor(() => streams.every((s) => s.done.length === 1), 10_000, 'done on every stream')
    for (const s of streams) {
      expect(s.done[0]!.data).toMatchObject({
        id: p.id,
        status: 'completed',
        progress: 100,
        attempts: 1,
        worker_id: WORKER_ID,
        result_summary: { survived: true },
      })
      expect(versionsIncrease(s)).toBe(true)
    }
    for (const s of streamsA) {
      expect(s.opens).toBe(2)
      // The reconnect named the last version it had (a state may arrive after the kill was ordered, before it
      // took effect), so B sent only what was newer.
      expect(s.lastEventIds[1]).toBe(String(s.messages[s.messagesBefore[1]! - 1]!.data.version))
      expect(s.messages.slice(s.messagesBefore[1]).every((m) => m.data.version > Number(s.lastEventIds[1]))).toBe(true)
    }
    // Every stream's progress only went forward, across the kill and its reconnect.
    for (const s of streams) {
      const progress = s.messages.map((m) => m.data.progress as number)
      expect(progress.every((v, i) => i === 0 || v >= progress[i - 1]!)).toBe(true)
    }
    // The kill lost at most one write-behind interval of progress: what was acked an interval (and the time a
    // write takes on a busy machine) before it was in the row.
    const settled = ackedAt.filter((a) => a.at <= killedAt - PERSIST_MS - 300).at(-1)
    if (settled) expect(rowAtKill!.progress).toBeGreaterThanOrEqual(settled.n)
    // Records acked before the kill were committed before their acks.
    expect(await db.sql`select message from process_events where process_id = ${p.id} and message = 'before the kill'`).toHaveLength(1)
    expect((await db.sql`select status from processes where id = ${other.id}`)[0]).toMatchObject({ status: 'completed' })
    // One run, never failed or restarted: pending → running → completed, and the last acked progress kept.
    const events = await db.sql<{ status: string }[]>`select status from process_events where process_id = ${p.id} order by id`
    expect(events.map((e) => e.status)).toEqual(['pending', 'running', 'running', 'completed'])
    const [final] = await db.sql`select status, attempts, worker_id from processes where id = ${p.id}`
    expect(final).toMatchObject({ status: 'completed', attempts: 1, worker_id: WORKER_ID })
    expect(lastAcked).toBe(60)
    expect(traffic.serverErrors).toEqual([])
    worker.close()
    return `worker back on B ${reconnects.length}×, ${streams.length} streams ended with done, ${streamsA.length} of them via reconnect`
  })
})
