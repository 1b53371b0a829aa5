// Public (end-user) tokens: minted by a member's API token, read-only, scoped to process ids and/or
// tags of one workspace; `?access_token=` on stream routes only; never in a log line; revocation and expiry
// close their streams within AUTH_CACHE_MS. Against a real server (and, with Redis, a second instance).
import { afterAll, describe, expect, it } from 'bun:test'
import { createUser, createApiToken } from '../../src/auth/queries'
import { Logger } from '../../src/ops/log'
import { startServer } from '../../src/server'
import { createTenant, hasRedis, listeningServer, redisPrefix, testConfig, testDatabase, waitFor, workerToken } from '../support/helpers'
import { readFrames } from '../support/sse-client'
import { TestWorker } from '../support/worker-client'

const { db } = await testDatabase()
const env = { AUTH_CACHE_MS: '300', PROGRESS_PERSIST_MS: '50', SSE_MAX_MS: '60000', REDIS_PREFIX: redisPrefix() }
// Instance A logs every request line into `logged`, to show no token ever reaches a log.
const logged: string[] = []
const a = await startServer(testConfig({ ...env, LOG_LEVEL: 'info' }), { db, log: new Logger('info', (text) => logged.push(text)) })
afterAll(() => a.stop())
const b = hasRedis ? await listeningServer(env, db) : null
const tenant = await createTenant(db.sql)
const other = await createTenant(db.sql)
const wtoken = await workerToken(db.sql)
const bearer = (token: string) => ({ authorization: `Bearer ${token}`, 'content-type': 'application/json' })
const api = (path: string, init: RequestInit = {}, token = tenant.token, base = a.url) =>
  fetch(`${base}${path}`, { ...init, headers: { ...bearer(token), ...(init.headers as object) } })
const createIn = async (token: string, body: object) => (await (await api('/processes', { method: 'POST', body: JSON.stringify(body) }, token)).json()) as any
const mint = (body: object, token = tenant.token) => api('/tokens/public', { method: 'POST', body: JSON.stringify(body) }, token)
const minted = async (body: object) => {
  const response = await mint(body)
  expect(response.status).toBe(201)
  return (await response.json()) as { id: number; token: string; expires_at: string }
}
const asPublic = (path: string, token: string, init: RequestInit = {}) =>
  fetch(`${a.url}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers as object) } })

const mine = await createIn(tenant.token, { type: 'pub_job', tags: ['user:42'] })
const sibling = await createIn(tenant.token, { type: 'pub_job', tags: ['user:43'] })
const theirs = await createIn(other.token, { type: 'pub_job', tags: ['user:42'] })

describe('minting', () => {
  it('gives 201 {id, token, expires_at}: 15 minutes by default, at most 24 h', async () => {
    const before = Date.now()
    const t = await minted({ process_ids: [mine.id] })
    expect(t.token).toStartWith('ppt_')
    const ttl = Date.parse(t.expires_at) - before
    expect(ttl).toBeGreaterThan(14 * 60_000)
    expect(ttl).toBeLessThan(16 * 60_000)
    expect((await mint({ tags: ['user:42'], ttl_s: 86_401 })).status).toBe(422)
    expect((await mint({})).status).toBe(422)
    expect((await mint({ tags: ['bad tag'] })).status).toBe(422)
  })

  it('needs a member role or more; a viewer, a public token and no token are refused', async () => {
    const viewer = await createUser(db.sql, `viewer-${Date.now()}@example.com`, tenant.workspaceId, 'viewer')
    const { token: viewerToken } = await createApiToken(db.sql, viewer.id, 'viewer', null)
    expect((await mint({ process_ids: [mine.id] }, viewerToken)).status).toBe(403)
    const t = await minted({ process_ids: [mine.id] })
    expect((await mint({ process_ids: [mine.id] }, t.token)).status).toBe(403)
    expect((await fetch(`${a.url}/tokens/public`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })).status).toBe(401)
  })
})

describe('what a public token reads', () => {
  it('reads GET, events, output and the stream of a process it covers by id', async () => {
    const t = await minted({ process_ids: [mine.id] })
    const got = await asPublic(`/processes/${mine.id}`, t.token)
    expect(got.status).toBe(200)
    expect(((await got.json()) as any).id).toBe(mine.id)
    expect((await asPublic(`/processes/${mine.id}/events`, t.token)).status).toBe(200)
    expect((await asPublic(`/processes/${mine.id}/output`, t.token)).status).toBe(200)
    // The stream as an EventSource opens it: the token in ?access_token=, no header.
    const { frames } = await readFrames(await fetch(`${a.url}/processes/${mine.id}/stream?access_token=${t.token}`), { maxMs: 300 })
    expect(frames.find((f) => f.data)?.data.id).toBe(mine.id)
  })

  it('another process of the workspace is 404 (no hint it exists), by id and by tag', async () => {
    const byId = await minted({ process_ids: [mine.id] })
    for (const path of [`/processes/${sibling.id}`, `/processes/${sibling.id}/events`, `/processes/${sibling.id}/output`]) {
      expect((await asPublic(path, byId.token)).status).toBe(404)
    }
    expect((await fetch(`${a.url}/processes/${sibling.id}/stream?access_token=${byId.token}`)).status).toBe(404)
    const byTag = await minted({ tags: ['user:42'] })
    expect((await asPublic(`/processes/${mine.id}`, byTag.token)).status).toBe(200)
    expect((await asPublic(`/processes/${sibling.id}`, byTag.token)).status).toBe(404)
  })

  it('lists and streams the workspace only as far as it covers', async () => {
    const t = await minted({ tags: ['user:42'] })
    const list = (await (await asPublic('/processes', t.token)).json()) as any[]
    expect(list.map((p) => p.id)).toEqual([mine.id])
    const { frames } = await readFrames(await fetch(`${a.url}/processes/stream?access_token=${t.token}`), { maxMs: 400 })
    expect(frames.filter((f) => f.data).map((f) => f.data.id)).toEqual([mine.id])
  })

  it('is 403 on every write route and every route that is not a read of its processes', async () => {
    const t = await minted({ process_ids: [mine.id] })
    const json = { 'content-type': 'application/json' }
    for (const [method, path, body] of [
      ['POST', '/processes', { type: 'x' }],
      ['POST', `/processes/${mine.id}/cancel`, undefined],
      ['POST', `/processes/${mine.id}/retry`, undefined],
      ['POST', '/processes/batch', { processes: [{ type: 'x' }] }],
      ['GET', '/processes/stats', undefined],
      ['GET', '/me', undefined],
      ['GET', '/webhooks', undefined],
      ['DELETE', `/tokens/public/${t.id}`, undefined],
    ] as const) {
      const response = await asPublic(path, t.token, { method, headers: body ? json : {}, body: body ? JSON.stringify(body) : undefined })
      expect([method, path, response.status]).toEqual([method, path, 403])
    }
    expect((await asPublic(`/processes/${mine.id}`, tenant.token)).status).toBe(200)
  })

  it('never reaches another workspace, even a process with its tag', async () => {
    const t = await minted({ tags: ['user:42'], process_ids: [theirs.id] })
    expect((await asPublic(`/processes/${theirs.id}`, t.token)).status).toBe(404)
    expect((await fetch(`${a.url}/processes/${theirs.id}/stream?access_token=${t.token}`)).status).toBe(404)
    expect((await asPublic(`/processes?workspace_id=${other.workspaceId}`, t.token)).status).toBe(403)
  })

  it('is taken from ?access_token= on stream routes only, and no other token is', async () => {
    const t = await minted({ process_ids: [mine.id] })
    expect((await fetch(`${a.url}/processes/${mine.id}?access_token=${t.token}`)).status).toBe(401)
    expect((await fetch(`${a.url}/processes/${mine.id}/stream?access_token=${tenant.token}`)).status).toBe(401)
  })

  it('is 401 once expired, and an open stream closes within AUTH_CACHE_MS of revocation or expiry', async () => {
    const short = await minted({ process_ids: [mine.id], ttl_s: 1 })
    const stream = fetch(`${a.url}/processes/${mine.id}/stream?access_token=${short.token}`)
    const open = readFrames(await stream, { maxMs: 5000 })
    await Bun.sleep(1400)
    expect((await asPublic(`/processes/${mine.id}`, short.token)).status).toBe(401)
    const ended = await open
    expect(ended.ended).toBe(true)
    // Revoked: within AUTH_CACHE_MS (300 ms here, checked every half of it).
    const revocable = await minted({ process_ids: [mine.id] })
    const watching = readFrames(await fetch(`${a.url}/processes/${mine.id}/stream?access_token=${revocable.token}`), { maxMs: 5000 })
    await Bun.sleep(100)
    const revokedAt = Date.now()
    expect((await api(`/tokens/public/${revocable.id}`, { method: 'DELETE' })).status).toBe(200)
    const result = await watching
    expect(result.ended).toBe(true)
    expect(Date.now() - revokedAt).toBeLessThan(1500)
    await waitFor(async () => (await asPublic(`/processes/${mine.id}`, revocable.token)).status === 401, 2000, 'the revoked token refused')
    // Another workspace's member cannot revoke it.
    const kept = await minted({ process_ids: [mine.id] })
    expect((await api(`/tokens/public/${kept.id}`, { method: 'DELETE' }, other.token)).status).toBe(404)
  })

  it('never appears in a log line', async () => {
    const t = await minted({ process_ids: [mine.id] })
    await readFrames(await fetch(`${a.url}/processes/${mine.id}/stream?access_token=${t.token}`), { maxMs: 200 })
    await asPublic(`/processes/${mine.id}`, t.token)
    await fetch(`${a.url}/processes/${sibling.id}/stream?access_token=${t.token}`)
    await Bun.sleep(150) // the logger writes every 50 ms
    const text = logged.join('')
    expect(text).toContain('/processes/:id/stream')
    expect(text).not.toContain(t.token)
    expect(text).not.toContain('access_token')
    const audit = await db.sql`select count(*)::int as n from audit_log where route like '%access_token%' or user_agent like ${`%${t.token}%`}`
    expect(audit[0]!.n).toBe(0)
  })
})

describe.skipIf(!hasRedis)('public tokens across instances', () => {
  it("a token minted on one instance reads on the other, and follows a worker's live output there", async () => {
    const type = `pub_live_${Date.now() % 100000}`
    const p = await createIn(tenant.token, { type, tags: ['user:77'] })
    const t = await minted({ tags: ['user:77'] })
    const worker = await TestWorker.connect(a.url, wtoken)
    const run = (await worker.request({ op: 'claim', types: [type] })).process
    const frames = readFrames(await fetch(`${b!.url}/processes/${p.id}/stream?access_token=${t.token}`), { maxMs: 3000, untilDone: true })
    await Bun.sleep(150)
    await worker.request({ op: 'output', process_id: p.id, attempt: run.attempts, chunk: 'hi' })
    await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts })
    const got = (await frames).frames.filter((f) => f.data)
    expect(got.map((f) => f.event ?? 'state')).toEqual(['state', 'output', 'done'])
    expect((await fetch(`${b!.url}/processes/${sibling.id}`, { headers: { authorization: `Bearer ${t.token}` } })).status).toBe(404)
    worker.close()
  })
})
