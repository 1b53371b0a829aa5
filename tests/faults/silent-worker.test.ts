// Fault: a worker that stops answering mid-process (its socket stays open, nothing more is sent). The lease
// sweep, running on two instances at once, fails the process exactly once; after a retry, a late frame of the
// old attempt is refused with `not_owner`, whatever it says, and the new run completes.
import { describe, expect } from 'bun:test'
import { createTenant, hasRedis, listeningServer, redisPrefix, testDatabase, waitFor, workerToken } from '../support/helpers'
import { TestWorker } from '../support/worker-client'
import { Traffic } from './clients'
import { reportAfterAll, scenario } from './report'

const JOB_TIMEOUT_MS = 800
reportAfterAll([4])

describe('a worker that stops answering', async () => {
  const { db } = await testDatabase()
  // Two instances on one database: two lease sweeps race for the same expired process. With Redis they
  // share one hub (one prefix), so the instance that sweeps tells the worker's instance.
  const env = { JOB_TIMEOUT_MS: String(JOB_TIMEOUT_MS), SWEEP_INTERVAL_MS: '50', PROGRESS_PERSIST_MS: '20', REDIS_PREFIX: redisPrefix() }
  const [a, b] = [await listeningServer(env, db), await listeningServer(env, db)]
  const tenant = await createTenant(db.sql)
  const wtoken = await workerToken(db.sql)
  const traffic = new Traffic()

  scenario(
    {
      n: 4,
      scenario: 'Silent worker',
      injected: `worker stops sending mid-process (socket left open); lease ${JOB_TIMEOUT_MS} ms, sweeps on 2 instances every 50 ms`,
      invariant: 'the sweep fails the process once (exactly one failed event); after a retry every late frame of the old attempt gets not_owner',
    },
    async () => {
      const ids: number[] = []
      for (let i = 0; i < 3; i++)
        ids.push((await traffic.json(`${a.url}/processes`, { method: 'POST', token: tenant.token, body: JSON.stringify({ type: 'silent' }) })).body.id)
      const silent = await TestWorker.connect(a.url, wtoken)
      await silent.request({ op: 'hello', worker_id: 'silent-worker' })
      const runs = []
      for (const _ of ids) runs.push((await silent.request({ op: 'claim', types: ['silent'] })).process)
      for (const run of runs) expect((await silent.request({ op: 'progress', process_id: run.id, progress: 40, attempt: run.attempts })).op).toBe('ack')
      // A healthy worker on B keeps one of the three alive with heartbeats: only the silent ones may time out.
      const kept = runs[2]!
      const healthy = await TestWorker.connect(b.url, wtoken)
      await healthy.request({ op: 'hello', worker_id: 'silent-worker' })
      let beating = true
      const beats: string[] = []
      const heartbeats = (async () => {
        while (beating) {
          beats.push((await healthy.request({ op: 'heartbeat', process_id: kept.id, attempt: kept.attempts })).op)
          await Bun.sleep(100)
        }
      })()

      // Silence. The sweep fails each silent process, once, with "timed out"; the silent worker is told.
      const startedAt = Date.now()
      await waitFor(
        async () => (await db.sql`select 1 from processes where id = any(${ids.slice(0, 2)}::bigint[]) and status = 'failed'`).length === 2,
        10_000,
        'the sweep to fail the silent processes',
      )
      const failedAfterMs = Date.now() - startedAt
      // Many more sweeps on both instances: nothing more happens to a failed process.
      await Bun.sleep(1000)
      for (const run of runs.slice(0, 2)) {
        const events = await db.sql<{ status: string; message: string }[]>`select status, message from process_events where process_id = ${run.id} order by id`
        expect(events.map((e) => e.status)).toEqual(['pending', 'running', 'failed'])
        expect(events.at(-1)!.message).toBe('timed out')
        // Told at once, whichever instance swept (across instances only through Redis: without it each is alone).
        if (hasRedis) expect((await silent.nextCancel(run.id, 3000)).status).toBe('failed')
      }
      beating = false
      await heartbeats
      expect(beats.filter((op) => op !== 'ack')).toEqual([])
      expect((await db.sql`select status from processes where id = ${kept.id}`)[0]!.status).toBe('running')

      // A retry; a new run of the same process, by another worker and by the same worker id alike.
      const [first, second] = runs as [any, any]
      for (const run of [first, second])
        expect((await traffic.json(`${b.url}/processes/${run.id}/retry`, { method: 'POST', token: tenant.token })).status).toBe(200)
      const other = await TestWorker.connect(b.url, wtoken)
      await other.request({ op: 'hello', worker_id: 'other-worker' })
      const rerun1 = (await other.request({ op: 'claim', types: ['silent'] })).process
      expect(rerun1).toMatchObject({ id: first.id, attempts: 2 })
      const back = await TestWorker.connect(a.url, wtoken)
      await back.request({ op: 'hello', worker_id: 'silent-worker' })
      const rerun2 = (await back.request({ op: 'claim', types: ['silent'] })).process
      expect(rerun2).toMatchObject({ id: second.id, attempts: 2, worker_id: 'silent-worker' })

      // The silent worker wakes up and sends what it had: every frame of attempt 1 is refused, whoever holds
      // the new run, on either instance.
      const late = (id: number) => [
        { op: 'progress', process_id: id, progress: 90, attempt: 1 },
        { op: 'heartbeat', process_id: id, attempt: 1 },
        { op: 'log', process_id: id, message: 'late line', attempt: 1 },
        { op: 'complete', process_id: id, attempt: 1, result_summary: { late: true } },
        { op: 'complete', process_id: id, attempt: 1, review: true },
        { op: 'fail', process_id: id, error: 'late failure', attempt: 1 },
      ]
      let refused = 0
      for (const [worker, run] of [
        [silent, first],
        [silent, second],
        [back, second],
      ] as const) {
        for (const frame of late(run.id)) {
          expect({ frame, reply: await worker.request(frame) }).toMatchObject({ frame, reply: { op: 'error', code: 'not_owner' } })
          refused++
        }
      }
      // The new runs are untouched by all that, and complete normally.
      expect((await other.request({ op: 'complete', process_id: first.id, attempt: 2 })).op).toBe('ack')
      expect((await back.request({ op: 'complete', process_id: second.id, attempt: 2 })).op).toBe('ack')
      for (const run of [first, second]) {
        const events = await db.sql<{ status: string }[]>`select status from process_events where process_id = ${run.id} order by id`
        expect(events.map((e) => e.status)).toEqual(['pending', 'running', 'failed', 'pending', 'running', 'completed'])
        const [p] = await db.sql`select status, progress, attempts, result_summary from processes where id = ${run.id}`
        expect(p).toMatchObject({ status: 'completed', progress: 100, attempts: 2, result_summary: null })
      }
      expect(traffic.serverErrors).toEqual([])
      for (const w of [silent, healthy, other, back]) w.close()
      return `failed after ${failedAfterMs} ms, 1 failed event each after ~40 more sweeps, ${refused} late frames refused not_owner`
    },
  )
})
