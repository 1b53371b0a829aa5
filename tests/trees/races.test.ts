// Races in trees, each repeated: two "instances" are two servers' worth of services on two
// connection pools of one database, and a real listening server for the worker's spawn.
import { afterAll, describe, expect, it } from 'bun:test'
import { createHandler } from '../../src/app'
import { openDatabase } from '../../src/db/client'
import { claimNext } from '../../src/processes/queries/claims'
import { completeProcesses } from '../../src/processes/queries/completions'
import { failProcesses } from '../../src/processes/queries/failures'
import { driftedParents } from '../../src/processes/queries/trees'
import { buildServices, startServer } from '../../src/server'
import { createTenant, hasPostgres, quietLogger, requester, testConfig, testDatabase, workerToken } from '../support/helpers'
import { uniqueType } from '../processes/drive'
import { TestWorker } from '../support/worker-client'

const ROUNDS = 15
const { db, url } = await testDatabase()
const db2 = hasPostgres ? await openDatabase({ url, dataDir: '', poolMax: 10 }) : db
afterAll(() => (db2 === db ? undefined : db2.close()))
const env = { RATE_LIMIT_PER_TOKEN_PER_S: '0', RATE_LIMIT_PER_WORKSPACE_PER_S: '0' }
const one = await buildServices(testConfig(env), { db, log: quietLogger() })
const two = await buildServices(testConfig(env), { db: db2, log: quietLogger() })
const [r1, r2] = [requester(createHandler(one.services)), requester(createHandler(two.services))]
const t = await createTenant(db.sql)
const W = 'race-worker'
const noBackoff = { baseMs: 0, maxMs: 0, byType: {} }
const write = (r: { id: number; attempts: number }) => ({
  id: r.id,
  worker_id: W,
  attempt: r.attempts,
  worker_token_id: null,
  review: false,
  version: null,
  base: null,
})

async function tree(n: number, o: Record<string, unknown> = {}) {
  const type = uniqueType('rp')
  const childType = uniqueType('rc')
  const res = await r1('POST', '/processes', { token: t.token, body: { type, ...o, children: Array.from({ length: n }, () => ({ type: childType })) } })
  expect(res.status).toBe(201)
  return { parent: res.body, type, childType }
}
const statusOf = async (id: number) => (await db.sql`select status from processes where id = ${id}`)[0]!.status

describe('tree races', () => {
  it('the last two children finishing at once on two instances complete the parent once', async () => {
    for (let i = 0; i < ROUNDS; i++) {
      const a = await tree(2)
      await completeProcesses(db.sql, (await claimNext(db.sql, { workerId: W, types: [a.type], max: 1 })).map(write))
      const [c1, c2] = await claimNext(db.sql, { workerId: W, types: [a.childType], max: 2 })
      await Promise.all([completeProcesses(db.sql, [write(c1!)]), completeProcesses(db2.sql, [write(c2!)])])
      expect(await statusOf(a.parent.id)).toBe('completed')
      const completions = await db.sql`select 1 from process_events where process_id = ${a.parent.id} and status = 'completed'`
      expect(completions).toHaveLength(1)
    }
    expect(await driftedParents(db.sql)).toEqual([])
  })

  it("the parent's own return racing its last child's completion never leaves it waiting", async () => {
    for (let i = 0; i < ROUNDS; i++) {
      const a = await tree(1)
      const [p] = await claimNext(db.sql, { workerId: W, types: [a.type], max: 1 })
      const [c] = await claimNext(db.sql, { workerId: W, types: [a.childType], max: 1 })
      await Promise.all([completeProcesses(db.sql, [write(p!)]), completeProcesses(db2.sql, [write(c!)])])
      expect(await statusOf(a.parent.id)).toBe('completed')
    }
  })

  it('a child retried while its parent is cancelled: refused, or cancelled with it — never left to run', async () => {
    const outcomes = new Set<number>()
    for (let i = 0; i < ROUNDS; i++) {
      const a = await tree(1)
      const [c] = await claimNext(db.sql, { workerId: W, types: [a.childType], max: 1 })
      await failProcesses(db.sql, [{ ...write(c!), error: 'x', progress: null }], noBackoff)
      const [cancel, retry] = await Promise.all([
        r1('POST', `/processes/${a.parent.id}/cancel`, { token: t.token }),
        r2('POST', `/processes/${c!.id}/retry`, { token: t.token }),
      ])
      expect(cancel.status).toBe(200)
      expect([200, 409]).toContain(retry.status)
      outcomes.add(retry.status)
      expect(['failed', 'cancelled']).toContain(await statusOf(c!.id))
    }
    expect(await driftedParents(db.sql)).toEqual([])
  })

  it("a parent's finalize racing a late child: it waits for the child, then completes", async () => {
    for (let i = 0; i < 5; i++) {
      const a = await tree(2, { finalize: true, child_failures: 'tolerate' })
      await completeProcesses(db.sql, (await claimNext(db.sql, { workerId: W, types: [a.type], max: 1 })).map(write))
      const [c1, c2] = await claimNext(db.sql, { workerId: W, types: [a.childType], max: 2 })
      await failProcesses(db.sql, [{ ...write(c1!), error: 'x', progress: null }], noBackoff)
      await completeProcesses(db.sql, [write(c2!)])
      expect(await statusOf(a.parent.id)).toBe('pending')
      // The finalize claim and a user's retry of the failed child, at once.
      // (A claim skips a row another transaction has locked: it looks again, as a waiting claim would.)
      const claimParent = async () => {
        for (;;) {
          const [p] = await claimNext(db.sql, { workerId: W, types: [a.type], max: 1 })
          if (p) return p
          await Bun.sleep(2)
        }
      }
      const [fin, retry] = await Promise.all([claimParent(), r2('POST', `/processes/${c1!.id}/retry`, { token: t.token })])
      expect(retry.status).toBe(200)
      const done = await completeProcesses(db.sql, [write(fin!)])
      expect(done[0]).toMatchObject({ status: 'running', worker_id: null, message: 'waiting for 1 of 2 children' })
      await completeProcesses(db.sql, (await claimNext(db.sql, { workerId: W, types: [a.childType], max: 1 })).map(write))
      const [row] = await db.sql`select status, attempts from processes where id = ${a.parent.id}`
      expect(row).toMatchObject({ status: 'completed', attempts: 2 })
    }
  })

  it('spawn racing a cancel: the children land before it (and are cancelled) or are refused', async () => {
    const server = await startServer(testConfig(env), { db, log: quietLogger() })
    afterAll(() => server.stop())
    const wt = await workerToken(db.sql)
    const w = await TestWorker.connect(server.url, wt)
    await w.request({ op: 'hello', worker_id: 'spawn-race' })
    for (let i = 0; i < ROUNDS; i++) {
      const type = uniqueType('sr')
      const p = (await r1('POST', '/processes', { token: t.token, body: { type } })).body
      const claimed = await w.request({ op: 'claim', types: [type] })
      const [spawned] = await Promise.all([
        w.request({ op: 'spawn', process_id: p.id, attempt: claimed.process.attempts, children: [{ type: `${type}_c` }, { type: `${type}_c` }] }),
        r2('POST', `/processes/${p.id}/cancel`, { token: t.token }),
      ])
      const kids = await db.sql`select status from processes where parent_id = ${p.id}`
      if (spawned.op === 'ack') expect(kids.map((k) => k.status)).toEqual(['cancelled', 'cancelled'])
      else {
        expect(spawned.code).toBe('cancelled')
        expect(kids).toHaveLength(0)
      }
    }
    w.ws.close()
    expect(await driftedParents(db.sql)).toEqual([])
  })
})
