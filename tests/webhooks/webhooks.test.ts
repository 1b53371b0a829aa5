// Webhooks (README: Webhooks) against a real listening server and a real local receiver: the routes, the
// outbox written with the status change, Standard Webhooks signatures checked by the `standardwebhooks`
// package, retries with backoff, the delivery log, redelivery, no redirects, per-endpoint concurrency and
// timeouts, and the SSRF guard. The server allows private addresses (its receiver is on loopback), except in
// the tests of the guard itself.
import { afterAll, describe, expect, it } from 'bun:test'
import { Webhook as Verifier } from 'standardwebhooks'
import { createApiToken, createUser } from '../../src/auth/queries'
import { EDGES, transitionProcess } from '../../src/processes/queries/transitions'
import { checkWebhookUrl } from '../../src/webhooks/routes'
import { sendDelivery } from '../../src/webhooks/sender'
import { isBlockedAddress } from '../../src/webhooks/ssrf'
import { createTenant, listeningServer, sleep, testDatabase, waitFor, workerToken } from '../support/helpers'
import { TestWorker } from '../support/worker-client'

interface Received {
  path: string
  headers: Record<string, string>
  body: string
  at: number
}

/** The receiver: records every request; each path answers as its test needs. */
const received: Received[] = []
const answers = new Map<string, (n: number) => Response | Promise<Response>>()
const inFlight = new Map<string, number>()
const maxInFlight = new Map<string, number>()
const receiver = Bun.serve({
  port: 0,
  hostname: '127.0.0.1',
  async fetch(request) {
    const path = new URL(request.url).pathname
    const body = await request.text()
    received.push({ path, headers: Object.fromEntries(request.headers), body, at: Date.now() })
    const n = received.filter((r) => r.path === path).length
    inFlight.set(path, (inFlight.get(path) ?? 0) + 1)
    maxInFlight.set(path, Math.max(maxInFlight.get(path) ?? 0, inFlight.get(path)!))
    try {
      return await (answers.get(path)?.(n) ?? new Response('ok'))
    } finally {
      inFlight.set(path, inFlight.get(path)! - 1)
    }
  },
})
afterAll(() => void receiver.stop(true))
const at = (path: string) => `http://127.0.0.1:${receiver.port}${path}`
const to = (path: string) => received.filter((r) => r.path === path)

// Registered before the database's hooks, so the server stops (afterAll hooks run in order) before its
// database is dropped: stopping on a dropped database took 5 s.
let stopServer = async () => {}
afterAll(() => stopServer())
const { db } = await testDatabase()
const server = await listeningServer(
  {
    WEBHOOK_ALLOW_PRIVATE: 'on',
    WEBHOOK_POLL_MS: '50',
    WEBHOOK_RETRY_BASE_MS: '50',
    WEBHOOK_RETRY_MAX_MS: '200',
    WEBHOOK_RETRY_WINDOW_MS: '1500',
    WEBHOOK_TIMEOUT_MS: '700',
    WEBHOOK_ENDPOINT_CONCURRENCY: '2',
  },
  db,
)
stopServer = server.stop
const { sql } = server.services
const tenant = await createTenant(sql)
const other = await createTenant(sql)
const auth = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }
const api = async (method: string, path: string, body?: unknown, headers: Record<string, string> = auth) => {
  const response = await fetch(`${server.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await response.text()
  return { status: response.status, body: text ? JSON.parse(text) : null }
}
const hook = async (path: string, events: string[], extra: object = {}) => {
  const res = await api('POST', '/webhooks', { url: at(path), events, ...extra })
  expect(res.status).toBe(201)
  return res.body as { id: number; secret: string }
}
const create = async (type: string, metadata: object = {}) => (await api('POST', '/processes', { type, metadata })).body
const deliveries = async (webhookId: number) => (await api('GET', `/webhooks/${webhookId}/deliveries`)).body as any[]

describe('the webhook routes', () => {
  it('creates a webhook whose whsec_ secret is shown once, and never again', async () => {
    const res = await api('POST', '/webhooks', { url: at('/routes'), events: ['process.completed'], types: ['csv_import'] })
    expect(res.status).toBe(201)
    expect(res.body.secret).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/)
    expect(res.body).toMatchObject({ url: at('/routes'), events: ['process.completed'], types: ['csv_import'], tags: null, enabled: true })
    expect((await api('GET', `/webhooks/${res.body.id}`)).body.secret).toBeUndefined()
    expect((await api('GET', '/webhooks')).body.every((w: any) => w.secret === undefined)).toBe(true)
    const patched = await api('PATCH', `/webhooks/${res.body.id}`, { enabled: false, tags: ['vip'] })
    expect(patched.body).toMatchObject({ enabled: false, tags: ['vip'] })
    expect((await api('DELETE', `/webhooks/${res.body.id}`)).status).toBe(204)
    expect((await api('GET', `/webhooks/${res.body.id}`)).status).toBe(404)
  })

  it('answers 422 for a URL that is not http(s), carries credentials, or names an unknown event', async () => {
    for (const [body, words] of [
      [{ url: 'ftp://example.com/x', events: ['process.completed'] }, 'http or https'],
      [{ url: 'not a url', events: ['process.completed'] }, 'not a URL'],
      [{ url: 'https://user:pw@example.com/', events: ['process.completed'] }, 'credentials'],
      [{ url: 'https://example.com/', events: ['process.finished'] }, '/events'],
      [{ url: 'https://example.com/', events: [] }, '/events'],
    ] as const) {
      const res = await api('POST', '/webhooks', body)
      expect({ body, status: res.status }).toEqual({ body, status: 422 })
      expect(res.body.error.message).toContain(words)
    }
  })

  it("needs admin or owner, and hides another workspace's webhooks (404)", async () => {
    const member = await createUser(sql, `m-${Date.now()}@example.com`, tenant.workspaceId, 'member')
    const token = (await createApiToken(sql, member.id, 'm', null)).token
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }
    expect((await api('POST', '/webhooks', { url: at('/x'), events: ['process.created'] }, headers)).status).toBe(403)
    expect((await api('GET', '/webhooks', undefined, headers)).status).toBe(403)
    const mine = await hook('/hidden', ['process.created'])
    const theirs = { authorization: `Bearer ${other.token}`, 'content-type': 'application/json' }
    for (const [method, path] of [
      ['GET', `/webhooks/${mine.id}`],
      ['PATCH', `/webhooks/${mine.id}`],
      ['DELETE', `/webhooks/${mine.id}`],
      ['GET', `/webhooks/${mine.id}/deliveries`],
    ]) {
      const res = await api(method!, path!, method === 'PATCH' ? { enabled: false } : undefined, theirs)
      expect({ method, status: res.status }).toEqual({ method, status: 404 })
    }
    await api('DELETE', `/webhooks/${mine.id}`)
  })
})

describe('deliveries', () => {
  it('sends each subscribed status change, signed in the Standard Webhooks format, with the process as it was then', async () => {
    const { id, secret } = await hook('/signed', ['process.created', 'process.running', 'process.completed'], { types: ['signed_job'] })
    const p = await create('signed_job', { file: 'a.csv' })
    const worker = await TestWorker.connect(server.url, await workerToken(sql))
    const run = (await worker.request({ op: 'claim', types: ['signed_job'] })).process
    await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts, result_summary: { rows: 3 } })
    worker.close()
    await waitFor(() => to('/signed').length === 3, 10_000, 'three deliveries')
    const verifier = new Verifier(secret)
    const bodies = to('/signed').map((r) => verifier.verify(r.body, r.headers) as any)
    expect(bodies.map((b) => b.type).sort()).toEqual(['process.completed', 'process.created', 'process.running'])
    for (const b of bodies) {
      expect(b.data.id).toBe(p.id)
      expect(b.data.status).toBe({ 'process.created': 'pending', 'process.running': 'running', 'process.completed': 'completed' }[b.type as string])
      expect(Date.parse(b.timestamp)).toBe(Date.parse(b.data.updated_at))
    }
    expect(bodies.find((b) => b.type === 'process.completed').data.result_summary).toEqual({ rows: 3 })
    // A tampered body or a wrong secret fails verification.
    const [first] = to('/signed')
    expect(() => verifier.verify(first!.body.replace('signed_job', 'other_job'), first!.headers)).toThrow()
    expect(() => new Verifier(`whsec_${Buffer.alloc(24, 1).toString('base64')}`).verify(first!.body, first!.headers)).toThrow()
    // The log: every delivery succeeded on its first attempt, with its answer and latency; Webhook-Id is its message id.
    await waitFor(async () => (await deliveries(id)).every((d) => d.state === 'succeeded'), 5000, 'the log to say succeeded')
    const log = await deliveries(id)
    expect(log.map((d) => d.attempts)).toEqual([1, 1, 1])
    for (const d of log) {
      expect(d.log).toEqual([{ attempt: 1, at: expect.any(String), status: 200, latency_ms: expect.any(Number), error: null }])
      expect(to('/signed').map((r) => r.headers['webhook-id'])).toContain(d.message_id)
    }
  })

  it('writes the delivery in the transaction of the status change: one rolled back leaves none', async () => {
    const { id } = await hook('/outbox', ['process.cancelled'])
    const p = await create('outbox_job')
    const count = async () => (await sql<{ n: number }[]>`select count(*)::int as n from webhook_deliveries where webhook_id = ${id}`)[0]!.n
    const cancel = { ...EDGES.cancel, message: 'Cancelled', set: sql`, finished_at = now()` }
    await sql
      .begin(async (tx) => {
        expect((await transitionProcess(tx, p.id, cancel))?.status).toBe('cancelled')
        // Not visible outside the transaction (embedded PGlite has one connection: the transaction holds it).
        if (db.kind === 'postgres') expect(await count()).toBe(0)
        throw new Error('roll back')
      })
      .catch(() => {})
    expect(await count()).toBe(0)
    await sleep(200) // the loop polls every 50 ms: nothing was there to send
    expect(to('/outbox')).toEqual([])
    await sql.begin((tx) => transitionProcess(tx, p.id, cancel))
    expect(await count()).toBe(1)
    await waitFor(() => to('/outbox').length === 1, 5000, 'the committed change delivered')
  })

  it('filters by type and by metadata.tags', async () => {
    await hook('/filtered', ['process.created'], { types: ['filter_a'], tags: ['vip', 'beta'] })
    await create('filter_a', { tags: ['vip'] })
    await create('filter_a', { tags: ['other'] })
    await create('filter_a', {})
    await create('filter_b', { tags: ['vip'] })
    await create('filter_a', { tags: 'vip' }) // not an array: no match
    const last = await create('filter_a', { tags: ['x', 'beta'] })
    await waitFor(() => to('/filtered').some((r) => JSON.parse(r.body).data.id === last.id), 5000, 'the last matching one')
    await sleep(150)
    expect(to('/filtered').map((r) => JSON.parse(r.body).data.metadata.tags)).toEqual([['vip'], ['x', 'beta']])
  })

  it('retries a failing endpoint with backoff until it answers, logging each attempt; redelivers on request with the same Webhook-Id', async () => {
    answers.set('/flaky', (n) => new Response('nope', { status: n <= 2 ? 503 : 200 }))
    const { id } = await hook('/flaky', ['process.created'])
    await create('flaky_job')
    await waitFor(async () => (await deliveries(id))[0]?.state === 'succeeded', 5000, 'success on the third attempt')
    const [d] = await deliveries(id)
    expect(d.log.map((a: any) => [a.attempt, a.status, a.error])).toEqual([
      [1, 503, 'HTTP 503'],
      [2, 503, 'HTTP 503'],
      [3, 200, null],
    ])
    const ids = new Set(to('/flaky').map((r) => r.headers['webhook-id']))
    expect(ids).toEqual(new Set([d.message_id]))
    // Redelivery: sent again at once, same Webhook-Id, a fourth attempt in the log.
    const again = await api('POST', `/webhooks/${id}/deliveries/${d.id}/redeliver`)
    expect(again.status).toBe(200)
    expect(again.body.state).toBe('pending')
    await waitFor(() => to('/flaky').length === 4, 5000, 'the redelivery')
    expect(to('/flaky')[3]!.headers['webhook-id']).toBe(d.message_id)
    expect(to('/flaky')[3]!.body).toBe(to('/flaky')[0]!.body)
    await waitFor(async () => (await deliveries(id))[0]?.attempts === 4, 5000, 'the fourth attempt logged')
    expect((await api('POST', `/webhooks/${id}/deliveries/999999/redeliver`)).status).toBe(404)
  })

  it('marks a delivery failed once its retries would pass WEBHOOK_RETRY_WINDOW_MS', async () => {
    answers.set('/dead', () => new Response('down', { status: 500 }))
    const { id } = await hook('/dead', ['process.created'])
    await create('dead_job')
    await waitFor(async () => (await deliveries(id))[0]?.state === 'failed', 10_000, 'failed')
    const [d] = await deliveries(id)
    expect(d.attempts).toBeGreaterThanOrEqual(4)
    expect(d.log.every((a: any) => a.status === 500)).toBe(true)
    const times = d.log.map((a: any) => Date.parse(a.at))
    // Backoff between attempts (50 ms doubling to 200 ms, jittered to 50–100 %), all within the window.
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(20)
    // No attempt is scheduled past the window; one due inside it may run a poll interval (50 ms) and a busy
    // event loop late (a full run under load saw 1,521 ms).
    expect(times.at(-1)! - times[0]!).toBeLessThanOrEqual(1500 + 300)
  })

  it('does not follow redirects: a 3xx is a failed attempt', async () => {
    answers.set('/moved', () => new Response(null, { status: 302, headers: { location: at('/moved-here') } }))
    const { id } = await hook('/moved', ['process.created'])
    await create('moved_job')
    await waitFor(async () => ((await deliveries(id))[0]?.log.length ?? 0) >= 1, 5000, 'an attempt')
    const [d] = await deliveries(id)
    expect(d.log[0]).toMatchObject({ status: 302, error: 'HTTP 302 (redirects are not followed)' })
    expect(to('/moved-here')).toEqual([])
    await api('DELETE', `/webhooks/${id}`)
  })

  it("holds a slow endpoint to WEBHOOK_ENDPOINT_CONCURRENCY sends and times them out, while another workspace's endpoint is served", async () => {
    let release = () => {}
    const released = new Promise<void>((resolve) => (release = resolve))
    answers.set('/slow', async () => {
      await Promise.race([released, sleep(3000)])
      return new Response('late')
    })
    const slow = await hook('/slow', ['process.created'], { types: ['slow_job'] })
    const theirs = { authorization: `Bearer ${other.token}`, 'content-type': 'application/json' }
    const fast = (await api('POST', '/webhooks', { url: at('/fast'), events: ['process.created'] }, theirs)).body
    for (let i = 0; i < 6; i++) await create('slow_job')
    await waitFor(() => (inFlight.get('/slow') ?? 0) === 2, 5000, 'two sends held by the slow endpoint')
    const sentAt = Date.now()
    const p = (await api('POST', '/processes', { type: 'fast_job' }, theirs)).body
    await waitFor(() => to('/fast').some((r) => JSON.parse(r.body).data.id === p.id), 5000, 'the other workspace served')
    // Served within a poll or two (50 ms each), not after the slow endpoint's 700 ms timeouts.
    expect(to('/fast').find((r) => JSON.parse(r.body).data.id === p.id)!.at - sentAt).toBeLessThan(500)
    // While the fast one was served, the slow one never had more than its two slots.
    expect(maxInFlight.get('/slow')).toBe(2)
    await waitFor(async () => (await deliveries(slow.id)).some((d) => d.log.some((a: any) => a.error?.startsWith('timed out'))), 5000, 'a timed-out attempt')
    const timedOut = (await deliveries(slow.id)).flatMap((d) => d.log).find((a: any) => a.error?.startsWith('timed out'))
    expect(timedOut).toMatchObject({ status: null, error: 'timed out after 700 ms' })
    expect(timedOut.latency_ms).toBeGreaterThanOrEqual(650)
    release()
    await api('DELETE', `/webhooks/${slow.id}`)
    await api('DELETE', `/webhooks/${fast.id}`, undefined, theirs)
  })
})

describe('the SSRF guard', () => {
  it('refuses loopback, private, CGNAT, link-local, metadata and reserved addresses, v4 and v6', () => {
    const blocked = [
      '127.0.0.1',
      '10.0.0.8',
      '172.20.1.1',
      '192.168.0.1',
      '100.64.1.1',
      '169.254.169.254',
      '0.0.0.0',
      '224.0.0.1',
      '::1',
      '::',
      'fe80::1',
      'fd00:ec2::254',
      '::ffff:127.0.0.1',
      '::ffff:a9fe:a9fe',
      '64:ff9b::a00:1',
      '2002:c0a8:101::1',
    ]
    const allowed = ['93.184.215.14', '8.8.8.8', '172.32.0.1', '2606:4700:4700::1111', '::ffff:8.8.8.8']
    for (const ip of blocked) expect({ ip, blocked: isBlockedAddress(ip) }).toEqual({ ip, blocked: true })
    for (const ip of allowed) expect({ ip, blocked: isBlockedAddress(ip) }).toEqual({ ip, blocked: false })
  })

  it('refuses a name that resolves to loopback at the attempt (nothing reaches the receiver), and a literal one at creation', async () => {
    const before = to('/guarded').length
    const result = await sendDelivery(
      { url: `http://localhost:${receiver.port}/guarded`, secret: 'whsec_AAAA', messageId: 'msg_1', payload: '{}' },
      { timeoutMs: 1000, allowPrivate: false },
    )
    expect(result.ok).toBe(false)
    expect(result.status).toBeNull()
    expect(result.error).toMatch(/localhost resolves to (127\.0\.0\.1|::1), a private, loopback/)
    expect(to('/guarded').length).toBe(before)
    // The same request with WEBHOOK_ALLOW_PRIVATE on goes through (the receiver is real).
    expect(
      (await sendDelivery({ url: at('/guarded'), secret: 'whsec_AAAA', messageId: 'msg_1', payload: '{}' }, { timeoutMs: 1000, allowPrivate: true })).ok,
    ).toBe(true)
    expect(() => checkWebhookUrl('http://127.0.0.1:9/x', false)).toThrow(/private, loopback/)
    expect(() => checkWebhookUrl('http://[::1]:9/x', false)).toThrow(/private, loopback/)
    expect(() => checkWebhookUrl('http://169.254.169.254/latest/meta-data', false)).toThrow(/private, loopback/)
    expect(checkWebhookUrl('http://127.0.0.1:9/x', true)).toBe('http://127.0.0.1:9/x')
    expect(checkWebhookUrl('https://hooks.example.com/in', false)).toBe('https://hooks.example.com/in')
  })
})
