// kill -9 in the middle of trees: two instances and two worker processes run two parents of 500
// children each (1,000 children: the 10,000 shape at a size that runs in seconds); instance A and the
// worker on it are killed with SIGKILL mid-tree, a new A and a new worker come back; every tree then ends
// completed, and every parent's counts equal a recount of its children.
import { describe, expect, it } from 'bun:test'
import { driftedParents } from '../../src/processes/queries/trees'
import { BUN, hasPostgres, hasRedis, ROOT, redisPrefix, seededDatabase, spawnServer, waitFor } from '../support/helpers'

const enabled = hasPostgres && hasRedis
const CHILDREN = 500

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
  }
  const worker = (server: string, id: string) =>
    Bun.spawn([BUN, 'tests/trees/kill-worker.ts'], {
      cwd: ROOT,
      env: { ...process.env, SERVER_URL: server, WORKER_TOKEN: wtoken, WORKER_ID: id },
      stdout: 'ignore',
      stderr: 'ignore',
    })

  it('every parent ends completed and its counts equal a recount', async () => {
    const [a, b] = await Promise.all([spawnServer(env), spawnServer(env)])
    const parents: number[] = []
    for (const base of [a.url, b.url]) {
      const res = await fetch(`${base}/processes`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          type: 'kill_parent',
          children: Array.from({ length: CHILDREN }, (_, i) => ({ type: 'kill_child', max_attempts: 10, metadata: { i } })),
        }),
      })
      expect(res.status).toBe(201)
      parents.push(((await res.json()) as { id: number }).id)
    }
    const wa = worker(a.url, 'kill-wa')
    const wb = worker(b.url, 'kill-wb')
    const completed = async () =>
      (await db.sql<{ n: number }[]>`select count(*)::int as n from processes where type = 'kill_child' and status = 'completed'`)[0]!.n
    await waitFor(async () => (await completed()) >= 300, 20_000, '300 children completed before the kill')
    a.proc.kill('SIGKILL')
    wa.kill('SIGKILL')
    await Promise.all([a.proc.exited, wa.exited])
    const atKill = await completed()
    expect(atKill).toBeLessThan(2 * CHILDREN)
    const a2 = await spawnServer(env)
    const wa2 = worker(a2.url, 'kill-wa2')
    await waitFor(
      async () => (await db.sql`select status from processes where id = any(${parents}::bigint[]) and status = 'completed'`).length === 2,
      30_000,
      'both parents completed',
    )
    expect(await driftedParents(db.sql)).toEqual([])
    const rows = await db.sql`select id, status, progress, children_total, children_completed from processes where id = any(${parents}::bigint[])`
    for (const r of rows) expect(r).toMatchObject({ status: 'completed', progress: 100, children_total: CHILDREN, children_completed: CHILDREN })
    // Each parent changed status exactly as the fan-in says: pending, running, waiting (running), completed.
    for (const id of parents) {
      const events = await db.sql<{ status: string }[]>`select status from process_events where process_id = ${id} order by id`
      expect(events.map((e) => e.status)).toEqual(['pending', 'running', 'running', 'completed'])
    }
    wb.kill('SIGKILL')
    wa2.kill('SIGKILL')
    console.log(`kill -9 mid-tree: ${atKill} of ${2 * CHILDREN} children completed at the kill; recount matched`)
  }, 90_000)
})
