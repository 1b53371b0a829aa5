// Queues (README: Queues) in-process: pause and resume (a workspace's, over REST; every workspace's, by the
// CLI), the claim barrier that makes a pause hold for claims already in flight, GET /queues, a per-type rate
// limit, and unique_key on create. Across instances: tests/queues/instances.test.ts.
import { afterAll, describe, expect, it } from 'bun:test'
import { createApiToken, createUser } from '../../src/auth/queries'
import { runCommand } from '../../src/cli'
import { claimNext } from '../../src/processes/queries/claims'
import { createTenant, inProcessApp, sleep, waitFor } from '../support/helpers'

const RATE = { max: 3, per_ms: 400 }
// Registered before the database's hooks, so audit and pool close (afterAll hooks run in order) before the
// database is dropped: closing them on a dropped database took seconds.
let release = async () => {}
afterAll(() => release())
const { s, request, db } = await inProcessApp({ TYPE_DEFAULTS: JSON.stringify({ rated: { rate: RATE } }) })
const { sql } = s
release = async () => {
  await s.audit.stop()
  await db.close()
}
const a = await createTenant(sql)
const b = await createTenant(sql)

const create = (token: string, body: object, headers: Record<string, string> = {}) => request('POST', '/processes', { token, body, headers })
const claim = (types: string[] | null, max = 10) =>
  sql.begin((tx) => claimNext(tx, { workerId: 'queue-test', types, max, served: s.queue.turns(), rate: s.queue.rate }))

async function tokenWithRole(workspaceId: number, role: string) {
  const user = await createUser(sql, `${role}-${Math.random().toString(36).slice(2)}@example.com`, workspaceId, role)
  return (await createApiToken(sql, user.id, role, null)).token
}

describe('pause and resume', () => {
  it('stops claims of a type in one workspace at once, and only there; resume gives it back', async () => {
    const [pa, pb, other] = [
      (await create(a.token, { type: 'pausable' })).body,
      (await create(b.token, { type: 'pausable' })).body,
      (await create(a.token, { type: 'unpaused' })).body,
    ]
    const paused = await request('POST', '/queues/pausable/pause', { token: a.token })
    expect(paused.status).toBe(200)
    expect(paused.body).toMatchObject({ type: 'pausable', workspace_id: a.workspaceId, paused: true })
    const got = (await claim(['pausable', 'unpaused'])).map((p) => p.id).sort((x, y) => x - y)
    expect(got).toEqual([pb.id, other.id].sort((x, y) => x - y))
    const queues = (await request('GET', '/queues', { token: a.token })).body
    expect(queues.queues.find((q: any) => q.type === 'pausable')).toMatchObject({
      pending: 1,
      due: 1,
      running: 0,
      paused: true,
      paused_in: 'workspace',
      rate: null,
    })
    expect(queues.queues.find((q: any) => q.type === 'unpaused')).toMatchObject({ pending: 0, running: 1, paused: false, paused_in: null })
    expect((await request('POST', '/queues/pausable/resume', { token: a.token })).body).toMatchObject({ paused: false })
    expect((await claim(['pausable'])).map((p) => p.id)).toEqual([pa.id])
    const audited = await sql`select route, status from audit_log where route like '/queues/%' and user_id = ${a.userId} order by id`
    expect(audited.map((r) => `${r.route} ${r.status}`)).toEqual(['/queues/:type/pause 200', '/queues/:type/resume 200'])
  })

  it('needs admin or owner to pause (403 for a member or a viewer), and 422 for a bad type', async () => {
    for (const role of ['member', 'viewer']) {
      const token = await tokenWithRole(a.workspaceId, role)
      expect({ role, status: (await request('POST', '/queues/x/pause', { token })).status }).toEqual({ role, status: 403 })
      expect({ role, status: (await request('GET', '/queues', { token })).status }).toEqual({ role, status: 200 })
    }
    expect((await request('POST', '/queues/x/pause', { token: await tokenWithRole(a.workspaceId, 'admin') })).status).toBe(200)
    expect((await request('POST', '/queues/Not%20A%20Type/pause', { token: a.token })).status).toBe(422)
  })

  it('pauses a type in every workspace from the CLI, for operators', async () => {
    const pa = (await create(a.token, { type: 'global_pause' })).body
    const pb = (await create(b.token, { type: 'global_pause' })).body
    expect(await runCommand(sql, ['pause-type', '--type', 'global_pause'])).toMatchObject({ type: 'global_pause', workspace_id: null, paused: true })
    expect(await claim(['global_pause'])).toEqual([])
    expect((await request('GET', '/queues', { token: b.token })).body.queues.find((q: any) => q.type === 'global_pause')).toMatchObject({
      paused: true,
      paused_in: 'all',
    })
    // A workspace's own resume does not lift an operator's pause.
    await request('POST', '/queues/global_pause/resume', { token: a.token })
    expect(await claim(['global_pause'])).toEqual([])
    expect(await runCommand(sql, ['resume-type', '--type', 'global_pause'])).toMatchObject({ paused: false, was_paused: true, pending: 2 })
    expect((await claim(['global_pause'])).map((p) => p.id).sort((x, y) => x - y)).toEqual([pa.id, pb.id])
  })

  it.skipIf(db.kind !== 'postgres')('waits for a claim already in flight, so nothing is handed out once the pause has answered', async () => {
    let release = () => {}
    let holding = false
    const inFlight = sql.begin(async (tx) => {
      await claimNext(tx, { workerId: 'slow-claim', types: ['barrier'], max: 1 })
      holding = true
      await new Promise<void>((resolve) => (release = resolve))
    })
    await waitFor(() => holding, 5000, 'the claim transaction')
    let answered = false
    const pausing = request('POST', '/queues/barrier/pause', { token: a.token }).then((r) => {
      answered = true
      return r
    })
    await sleep(300)
    expect(answered).toBe(false)
    release()
    await inFlight
    expect((await pausing).status).toBe(200)
  })
})

describe('rate limits', () => {
  it('hands out at most TYPE_DEFAULTS.<type>.rate.max claims per window, and more in the next one', async () => {
    for (let i = 0; i < 20; i++) await create(a.token, { type: 'rated' })
    const deadline = Date.now() + RATE.per_ms * 3
    let claimed = 0
    while (Date.now() < deadline) {
      claimed += (await claim(['rated'])).length
      await sleep(25)
    }
    const perWindow = await sql<{ w: number; n: number }[]>`
      select floor(extract(epoch from started_at) * 1000 / ${RATE.per_ms})::float8 as w, count(*)::int as n
        from processes where type = 'rated' and started_at is not null group by 1 order by 1`
    expect(perWindow.length).toBeGreaterThanOrEqual(3)
    for (const { n } of perWindow) expect(n).toBeLessThanOrEqual(RATE.max)
    expect(claimed).toBe(perWindow.reduce((sum, w) => sum + w.n, 0))
    expect(claimed).toBeGreaterThanOrEqual(RATE.max * 2)
    const q = (await request('GET', '/queues', { token: a.token })).body.queues.find((x: any) => x.type === 'rated')
    expect(q.rate).toEqual(RATE)
    // A claim of other types too is not held back by the spent window.
    const free = (await create(a.token, { type: 'not_rated' })).body
    expect((await claim(null, 100)).map((p) => p.id)).toContain(free.id)
  })
})

describe('unique_key', () => {
  it('returns the pending or running process holding the key (200, Unique-Replayed), and makes a new one once it has finished', async () => {
    const first = await create(a.token, { type: 'uniq', unique_key: 'import-42' })
    expect(first.status).toBe(201)
    const again = await create(a.token, { type: 'uniq', unique_key: 'import-42', metadata: { other: true } })
    expect(again.status).toBe(200)
    expect(again.headers.get('unique-replayed')).toBe('true')
    expect(again.body.id).toBe(first.body.id)
    // Another workspace has keys of its own.
    expect((await create(b.token, { type: 'uniq', unique_key: 'import-42' })).status).toBe(201)
    // Running still holds it; finished does not.
    await claim(['uniq'])
    expect((await create(a.token, { type: 'uniq', unique_key: 'import-42' })).body.id).toBe(first.body.id)
    await sql`update processes set status = 'completed', finished_at = now() where id = ${first.body.id}`
    const fresh = await create(a.token, { type: 'uniq', unique_key: 'import-42' })
    expect(fresh.status).toBe(201)
    expect(fresh.body.id).not.toBe(first.body.id)
    expect((await sql`select count(*)::int as n from processes where workspace_id = ${a.workspaceId} and unique_key = 'import-42'`)[0]!.n).toBe(2)
  })

  it('answers a batch item by item: unique_replayed names the items answered with an existing process', async () => {
    const holder = (await create(a.token, { type: 'uniq_batch', unique_key: 'held' })).body
    const res = await request('POST', '/processes/batch', {
      token: a.token,
      body: {
        processes: [
          { type: 'uniq_batch', unique_key: 'k1' },
          { type: 'uniq_batch' },
          { type: 'uniq_batch', unique_key: 'k1' },
          { type: 'uniq_batch', unique_key: 'held' },
        ],
      },
    })
    expect(res.status).toBe(201)
    expect(res.headers.get('unique-replayed')).toBe('true')
    expect(res.body.unique_replayed).toEqual([2, 3])
    const ids = res.body.processes.map((p: any) => p.id)
    expect(ids[2]).toBe(ids[0])
    expect(ids[3]).toBe(holder.id)
    expect(new Set(ids).size).toBe(3)
    const all = await request('POST', '/processes/batch', { token: a.token, body: { processes: [{ type: 'uniq_batch', unique_key: 'k1' }] } })
    expect(all.status).toBe(200)
    expect(all.body).toEqual({ processes: [expect.objectContaining({ id: ids[0] })], unique_replayed: [0] })
  })

  it('is distinct from Idempotency-Key, which replays the first answer as it was', async () => {
    const made = await create(a.token, { type: 'uniq_idem', unique_key: 'u1' }, { 'idempotency-key': 'k-a' })
    const replay = await create(a.token, { type: 'uniq_idem', unique_key: 'u1' }, { 'idempotency-key': 'k-a' })
    expect([replay.status, replay.headers.get('idempotent-replayed'), replay.headers.get('unique-replayed'), replay.body.id]).toEqual([
      201,
      'true',
      null,
      made.body.id,
    ])
    const held = await create(a.token, { type: 'uniq_idem', unique_key: 'u1' }, { 'idempotency-key': 'k-b' })
    expect([held.status, held.headers.get('idempotent-replayed'), held.headers.get('unique-replayed')]).toEqual([200, null, 'true'])
    const heldAgain = await create(a.token, { type: 'uniq_idem', unique_key: 'u1' }, { 'idempotency-key': 'k-b' })
    expect([heldAgain.status, heldAgain.headers.get('idempotent-replayed'), heldAgain.headers.get('unique-replayed'), heldAgain.body.id]).toEqual([
      200,
      'true',
      'true',
      made.body.id,
    ])
  })

  it('refuses to retry a failed process while another holds its key (409), and retries it once that one is gone', async () => {
    const failed = (await create(a.token, { type: 'uniq_retry', unique_key: 'r1' })).body
    await sql`update processes set status = 'failed', finished_at = now() where id = ${failed.id}`
    const holder = (await create(a.token, { type: 'uniq_retry', unique_key: 'r1' })).body
    const refused = await request('POST', `/processes/${failed.id}/retry`, { token: a.token })
    expect(refused.status).toBe(409)
    expect(refused.body.error.message).toContain('unique_key')
    await request('POST', `/processes/${holder.id}/cancel`, { token: a.token })
    expect((await request('POST', `/processes/${failed.id}/retry`, { token: a.token })).body.status).toBe('pending')
  })

  it('makes one process when 10 creates with the same key race', async () => {
    const results = await Promise.all(Array.from({ length: 10 }, () => create(a.token, { type: 'uniq_race', unique_key: 'race' })))
    expect(results.filter((r) => r.status === 201)).toHaveLength(1)
    expect(results.filter((r) => r.status === 200)).toHaveLength(9)
    expect(new Set(results.map((r) => r.body.id)).size).toBe(1)
  })

  it('answers 422 for an empty or too long unique_key', async () => {
    expect((await create(a.token, { type: 'x', unique_key: '' })).status).toBe(422)
    expect((await create(a.token, { type: 'x', unique_key: 'k'.repeat(256) })).status).toBe(422)
  })
})
