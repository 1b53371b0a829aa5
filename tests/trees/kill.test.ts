// kill -9 in the middle of 10,000-child trees: two instances and a worker process on each run two parents of
// 5,000 children (one created through each instance, one of them with a finalize run). Server A and its worker
// are killed with SIGKILL once 30 % of the children have completed, and a new worker starts on a third
// instance; server B and its worker the same at 60 %, a new worker on a fourth. The killed workers' leases time
// out and their children run again. After each kill, while the other instance works on, and at the end, every
// parent's counts equal a recount of its children; every tree ends completed exactly once.
import { afterAll, describe, expect, it } from 'bun:test'
import { driftedParents } from '../../src/processes/queries/trees'
import { BUN, hasPostgres, hasRedis, ROOT, redisPrefix, seededDatabase, spawnServer, waitFor } from '../support/helpers'

const enabled = hasPostgres && hasRedis
const TREES = 2
const CHILDREN = 5_000
const TOTAL = TREES * CHILDREN

describe.skipIf(!enabled)('SIGKILL of servers and workers mid-tree', async () => {
  if (!enabled) return
  const { url, db, tenant, wtoken } = await seededDatabase()
  const env = {
    DATABASE_URL: url,
    REDIS_URL: process.env.REDIS_URL,
    REDIS_PREFIX: redisPrefix(),
    PROGRESS_PERSIST_MS: '50',
    JOB_TIMEOUT_MS: '1500',
    SWEEP_INTERVAL_MS: '100',
    RATE_LIMIT_PER_TOKEN_PER_S: '0',
    RATE_LIMIT_PER_WORKSPACE_PER_S: '0',
  }
  // Every worker process is stopped by its PID when the file ends, passed or failed (a failed run left them
  // running otherwise).
  const spawned: ReturnType<typeof Bun.spawn>[] = []
  afterAll(() => {
    for (const w of spawned) if (w.exitCode === null && !w.killed) w.kill('SIGKILL')
  })
  const worker = (server: string, id: string) => {
    const w = Bun.spawn([BUN, 'tests/trees/kill-worker.ts'], {
      cwd: ROOT,
      env: { ...process.env, SERVER_URL: server, WORKER_TOKEN: wtoken, WORKER_ID: id },
      stdout: 'ignore',
      stderr: 'ignore',
    })
    spawned.push(w)
    return w
  }
  const completed = async () =>
    (await db.sql<{ n: number }[]>`select count(*)::int as n from processes where type = 'kill_child' and status = 'completed'`)[0]!.n
  const poll = { pollMs: 100 }

  it('every parent ends completed once and its counts equal a recount', async () => {
    const started = Date.now()
    // The instances that replace the killed ones are up before the kills, so the trees are still mid-way when
    // their workers start: on a busy machine a server's start took seconds, and B alone finished the rest meanwhile.
    const [a, b, a2, b2] = await Promise.all([spawnServer(env), spawnServer(env), spawnServer(env), spawnServer(env)])
    const parents: number[] = []
    for (const [i, base] of [a.url, b.url].entries()) {
      const res = await fetch(`${base}/processes`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          type: 'kill_parent',
          finalize: i === 1,
          children: Array.from({ length: CHILDREN }, (_, n) => ({ type: 'kill_child', max_attempts: 10, metadata: { n } })),
        }),
      })
      expect(res.status).toBe(201)
      parents.push(((await res.json()) as { id: number }).id)
    }
    const workers = [worker(a.url, 'kill-wa'), worker(b.url, 'kill-wb')]
    const atKill: number[] = []
    for (const [share, server, w, next, id] of [
      [0.3, a, workers[0]!, a2, 'kill-wa2'],
      [0.6, b, workers[1]!, b2, 'kill-wb2'],
    ] as const) {
      await waitFor(async () => (await completed()) >= share * TOTAL, 40_000, `${share * 100} % of the children completed`, poll)
      server.proc.kill('SIGKILL')
      w.kill('SIGKILL')
      await Promise.all([server.proc.exited, w.exited])
      workers.push(worker(next.url, id))
      atKill.push(await completed())
      // Mid-tree, the other instance still at work: the exact counts equal a recount in one snapshot.
      expect(await driftedParents(db.sql)).toEqual([])
    }
    expect(atKill[1]!).toBeLessThan(TOTAL)
    await waitFor(
      async () => (await db.sql`select 1 from processes where id = any(${parents}::bigint[]) and status = 'completed'`).length === TREES,
      45_000,
      'both parents completed',
      poll,
    )
    // Every count of every parent (the split of the unfinished too: none is left) against a recount.
    expect(await driftedParents(db.sql, { split: true })).toEqual([])
    const rows = await db.sql`
      select id, status, progress, children_total, children_pending, children_running, children_completed, children_failed
        from processes where id = any(${parents}::bigint[]) order by id`
    for (const r of rows)
      expect(r).toMatchObject({
        status: 'completed',
        progress: 100,
        children_total: CHILDREN,
        children_pending: 0,
        children_running: 0,
        children_completed: CHILDREN,
        children_failed: 0,
      })
    const [{ n: unfinished }] = await db.sql<{ n: number }[]>`select count(*)::int as n from processes where type = 'kill_child' and status <> 'completed'`
    expect(unfinished).toBe(0)
    // Each parent changed status exactly as the fan-in says, and ended once: pending, running, waiting
    // (running), then completed — or, with finalize, pending again, its second run, then completed.
    const expected = [
      ['pending', 'running', 'running', 'completed'],
      ['pending', 'running', 'running', 'pending', 'running', 'completed'],
    ]
    for (const [i, id] of parents.entries()) {
      const events = await db.sql<{ status: string }[]>`select status from process_events where process_id = ${id} order by id`
      expect(events.map((e) => e.status)).toEqual(expected[i]!)
    }
    const [fin] = await db.sql`select attempts, result_summary from processes where id = ${parents[1]!}`
    expect(fin).toMatchObject({ attempts: 2, result_summary: { finalized: true } })
    // The kills cost some children a run (their leases timed out): they ran again, never twice to completion.
    const [{ n: reran }] = await db.sql<{ n: number }[]>`select count(*)::int as n from processes where type = 'kill_child' and attempts > 1`
    const [{ n: doubled }] = await db.sql<{ n: number }[]>`
      select count(*)::int as n from (select process_id from process_events e join processes p on p.id = e.process_id
        where p.type = 'kill_child' and e.status = 'completed' group by process_id having count(*) > 1) x`
    expect(doubled).toBe(0)
    for (const w of workers) w.kill('SIGKILL')
    console.log(
      `kill -9 mid-tree: ${atKill.join(' and ')} of ${TOTAL} children completed at the two kills, ${reran} ran again; recount matched; ${((Date.now() - started) / 1000).toFixed(1)} s`,
    )
  }, 150_000)
})
