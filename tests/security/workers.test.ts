// The worker side, attacked with real WebSocket clients against a listening server: leases bound
// to the token that claimed them, revoked tokens' open sockets closed, scoped tokens, the waiting-claim cap,
// a worker that never reads, and every connect audited.
import { describe, expect, it } from 'bun:test'
import { connect, type Socket } from 'node:net'
import { createWorkerToken, revokeToken } from '../../src/auth/queries'
import { createTenant, listeningServer, restAs, testDatabase, waitFor, within, workerToken } from '../support/helpers'
import { connectWorker } from '@processes/client/worker'
import { TestWorker } from '../support/worker-client'

const AUTH_CACHE_MS = 1000
const { db } = await testDatabase()
const server = await listeningServer(
  { AUTH_CACHE_MS: String(AUTH_CACHE_MS), MAX_WAITING_CLAIMS_PER_SOCKET: '5', MAX_WORKER_BUFFERED_BYTES: String(64 * 1024), MAX_SOCKETS_PER_WORKER_TOKEN: '3' },
  db,
)
// Servers of their own for two settings, made at the top like the others: made inside a test (its afterAll
// registered mid-run), one found the file's database connection already ended in a full run.
const capped = await listeningServer({ MAX_LOG_EVENTS_PER_PROCESS: '3' }, db)
const strict = await listeningServer({ WORKER_TOKEN_IN_QUERY: 'off' }, db)
const base = server.url
const tenant = await createTenant(db.sql)
const { create, get } = restAs(base, tenant.token)
let seq = 0
const freshType = () => `sec_${seq++}`

async function metric(name: string): Promise<number> {
  const text = await (await fetch(server.metricsUrl!)).text()
  const line = text.split('\n').find((l) => l.startsWith(`processes_${name} `))
  return line ? Number(line.split(' ')[1]) : NaN
}

/** A WebSocket client by hand on a plain TCP socket, so it can stop reading (pause) like a stuck worker. */
async function rawWorkerSocket(token: string): Promise<Socket> {
  const url = new URL(base)
  const socket = connect(Number(url.port), url.hostname)
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  socket.write(
    `GET /workers/ws HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('base64')}\r\n` +
      `Sec-WebSocket-Version: 13\r\nAuthorization: Bearer ${token}\r\n\r\n`,
  )
  const head = await new Promise<string>((resolve) => socket.once('data', (d) => resolve(String(d))))
  expect(head).toStartWith('HTTP/1.1 101')
  return socket
}

function maskedTextFrame(text: string): Buffer {
  const payload = Buffer.from(text)
  const header = payload.length < 126 ? Buffer.from([0x81, 0x80 | payload.length]) : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 255])
  const mask = Buffer.from([1, 2, 3, 4])
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!))
  return Buffer.concat([header, mask, masked])
}

describe('leases belong to the worker token that took them', () => {
  it("refuses a second token's hello with another worker's id, and every frame it sends about that process", async () => {
    const type = freshType()
    const owner = await TestWorker.connect(base, await workerToken(db.sql))
    expect((await owner.request({ op: 'hello', worker_id: 'victim-1' })).op).toBe('ack')
    const p = await create(type)
    const claimed = await owner.request({ op: 'claim', types: [type], wait_ms: 0 })
    expect(claimed.process.id).toBe(p.id)

    const intruder = await TestWorker.connect(base, await workerToken(db.sql))
    expect(await intruder.request({ op: 'hello', worker_id: 'victim-1' })).toMatchObject({ op: 'error', code: 'not_owner' })
    // Even without the hello (or with one sent before the claim), frames naming the process are refused.
    for (const frame of [
      { op: 'complete', process_id: p.id, result_summary: { stolen: true } },
      { op: 'fail', process_id: p.id, error: 'stolen' },
      { op: 'progress', process_id: p.id, progress: 50 },
      { op: 'heartbeat', process_id: p.id },
      { op: 'log', process_id: p.id, message: 'stolen' },
    ]) {
      expect(await intruder.request(frame)).toMatchObject({ op: 'error', code: 'not_owner' })
    }
    expect((await get(p.id)).status).toBe('running')
    // The owner still finishes it.
    expect((await owner.request({ op: 'complete', process_id: p.id })).op).toBe('ack')
    expect((await get(p.id)).status).toBe('completed')
    owner.close()
    intruder.close()
  })

  it('refuses a second token that said hello with the id before the first one claimed', async () => {
    const type = freshType()
    const intruder = await TestWorker.connect(base, await workerToken(db.sql))
    expect((await intruder.request({ op: 'hello', worker_id: 'victim-2' })).op).toBe('ack')
    const owner = await TestWorker.connect(base, await workerToken(db.sql))
    expect((await owner.request({ op: 'hello', worker_id: 'victim-2' })).op).toBe('ack')
    const p = await create(type)
    expect((await owner.request({ op: 'claim', types: [type], wait_ms: 0 })).process.id).toBe(p.id)
    expect(await intruder.request({ op: 'complete', process_id: p.id })).toMatchObject({ op: 'error', code: 'not_owner' })
    // A user's cancel is pushed to the owner's socket only.
    await fetch(`${base}/processes/${p.id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${tenant.token}` } })
    await owner.nextCancel(p.id)
    await intruder.request({ op: 'claim', types: [freshType()], wait_ms: 0 }) // a round trip after the cancel
    expect(intruder.pushes.some((f) => f.process_id === p.id)).toBe(false)
    owner.close()
    intruder.close()
  })

  it('does not put the lease token in the API JSON', async () => {
    const type = freshType()
    const owner = await TestWorker.connect(base, await workerToken(db.sql))
    const p = await create(type)
    const claimed = await owner.request({ op: 'claim', types: [type], wait_ms: 0 })
    expect(claimed.process).not.toHaveProperty('worker_token_id')
    expect(await get(p.id)).not.toHaveProperty('worker_token_id')
    owner.close()
  })
})

describe('revocation reaches open sockets', () => {
  it('closes a revoked worker token’s open socket within AUTH_CACHE_MS (1008)', async () => {
    const { id, token } = await createWorkerToken(db.sql, 'to revoke')
    const worker = await TestWorker.connect(base, token)
    expect((await worker.request({ op: 'hello', worker_id: 'revoked-1' })).op).toBe('ack')
    await revokeToken(db.sql, id, 'worker')
    // Deadline: AUTH_CACHE_MS plus a generous margin for a loaded machine (not a timing assertion).
    await waitFor(() => worker.closeCode !== null, AUTH_CACHE_MS + 15_000, 'the revoked socket to close')
    expect(worker.closeCode).toBe(1008)
    // New connects are refused too, once the look-up cache (AUTH_CACHE_MS) has let go of it.
    await waitFor(
      async () =>
        (await TestWorker.connect(base, token).then(
          (w) => {
            w.close()
            return 101
          },
          (e) => e.status,
        )) === 401,
      AUTH_CACHE_MS + 15_000,
      'a refused connect',
    )
  })
})

describe('scoped worker tokens', () => {
  it('claims, starts and reports only processes of its workspaces and types; others are not_found', async () => {
    const other = await createTenant(db.sql)
    const type = freshType()
    const otherType = freshType()
    const scoped = await createWorkerToken(db.sql, 'scoped', { workspaceIds: [tenant.workspaceId], types: [type] })
    const worker = await TestWorker.connect(base, scoped.token)
    const foreignWs = await restAs(base, other.token).create(type)
    const foreignType = await create(otherType)
    // Neither is claimable: not the other workspace's, not another type (even when the claim asks for it).
    expect((await worker.request({ op: 'claim', wait_ms: 0 })).process).toBeNull()
    expect((await worker.request({ op: 'claim', types: [otherType], wait_ms: 0 })).process).toBeNull()
    for (const id of [foreignWs.id, foreignType.id]) {
      expect(await worker.request({ op: 'start', process_id: id })).toMatchObject({ op: 'error', code: 'not_found' })
      expect(await worker.request({ op: 'complete', process_id: id })).toMatchObject({ op: 'error', code: 'not_found' })
    }
    const mine = await create(type)
    expect((await worker.request({ op: 'claim', wait_ms: 0 })).process.id).toBe(mine.id)
    expect((await worker.request({ op: 'complete', process_id: mine.id })).op).toBe('ack')
    expect((await restAs(base, other.token).get(foreignWs.id)).status).toBe('pending')
    expect((await get(foreignType.id)).status).toBe('pending')
    worker.close()
  })
})

describe('limits on one token', () => {
  it('refuses a socket beyond MAX_SOCKETS_PER_WORKER_TOKEN with 429 before the upgrade; a closed one frees its place; another token is not touched', async () => {
    const token = await workerToken(db.sql)
    const upgrade = (t: string) =>
      fetch(`${base}/workers/ws`, {
        headers: {
          authorization: `Bearer ${t}`,
          upgrade: 'websocket',
          connection: 'Upgrade',
          'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
          'sec-websocket-version': '13',
        },
      })
    const open = await Promise.all([1, 2, 3].map(() => TestWorker.connect(base, token)))
    const refused = await upgrade(token)
    expect(refused.status).toBe(429)
    expect(refused.headers.get('retry-after')).toBe('1')
    expect(((await refused.json()) as any).error.code).toBe('rate_limited')
    // The three open ones still work.
    for (const w of open) expect((await w.request({ op: 'claim', types: [freshType()], wait_ms: 0 })).op).toBe('claimed')
    // Another token has places of its own.
    const other = await TestWorker.connect(base, await workerToken(db.sql))
    expect((await other.request({ op: 'claim', types: [freshType()], wait_ms: 0 })).op).toBe('claimed')
    other.close()
    // Closing one frees its place (the server sees the close a moment later).
    open[0]!.close()
    let again: TestWorker | null = null
    await waitFor(async () => (again = await TestWorker.connect(base, token).catch(() => null)) !== null, 10_000, 'a place freed by the closed socket')
    expect((await again!.request({ op: 'claim', types: [freshType()], wait_ms: 0 })).op).toBe('claimed')
    for (const w of [again!, open[1]!, open[2]!]) w.close()
  })
})

describe('limits on one socket', () => {
  it('refuses claims beyond MAX_WAITING_CLAIMS_PER_SOCKET with rate_limited, and the waiting ones still work', async () => {
    const type = freshType()
    const worker = await TestWorker.connect(base, await workerToken(db.sql))
    const waiting = Array.from({ length: 5 }, () => worker.request({ op: 'claim', types: [type], wait_ms: 20_000 }))
    await waitFor(async () => (await metric('worker_frames_in_flight')) >= 5, 10_000, 'five claims waiting')
    expect(await worker.request({ op: 'claim', types: [type], wait_ms: 20_000 })).toMatchObject({ op: 'error', code: 'rate_limited' })
    // A claim that does not wait is not capped.
    expect((await worker.request({ op: 'claim', types: [type], wait_ms: 0 })).op).toBe('claimed')
    const p = await create(type)
    const replies = await within(Promise.any(waiting), 15_000, null)
    expect(replies?.process?.id).toBe(p.id)
    worker.close()
  })

  it('closes a worker that never reads its replies instead of buffering them without bound', async () => {
    const before = await metric('worker_sockets_closed_slow_total')
    const socket = await rawWorkerSocket(await workerToken(db.sql))
    // Never read: the kernel buffers fill, then the server's send buffer would grow with every reply.
    socket.pause()
    const frame = maskedTextFrame(JSON.stringify({ op: 'nope', padding: 'x'.repeat(200) }))
    const burst = Buffer.concat(Array.from({ length: 500 }, () => frame))
    let sentBytes = 0
    for (let round = 0; round < 400 && (await metric('worker_sockets_closed_slow_total')) === before; round++) {
      if (socket.destroyed) break
      socket.write(burst)
      sentBytes += burst.length
      await Bun.sleep(20)
    }
    await waitFor(async () => (await metric('worker_sockets_closed_slow_total')) > before, 20_000, 'the server to close the non-reading worker')
    // What the server holds for workers is bounded by the cap (64 KiB here), not by what was sent.
    expect(await metric('worker_send_buffered_bytes')).toBeLessThan(1024 * 1024)
    expect(sentBytes).toBeGreaterThan(0)
    socket.destroy()
  })
})

describe('audit of worker connects', () => {
  it('writes a row for each accepted and refused connect, naming the worker token when valid', async () => {
    const { id, token } = await createWorkerToken(db.sql, 'audited')
    const worker = await TestWorker.connect(base, token)
    await expect(TestWorker.connect(base, 'psw_nope')).rejects.toMatchObject({ status: 401 })
    await server.services.audit.flush()
    const accepted = await db.sql`select status from audit_log where route = '/workers/ws' and worker_token_id = ${id}`
    expect(accepted.map((r) => r.status)).toEqual([101])
    const refused = await db.sql`select count(*)::int as n from audit_log where route = '/workers/ws' and status = 401 and worker_token_id is null`
    expect(refused[0]!.n).toBeGreaterThanOrEqual(1)
    worker.close()
  })
})

describe('start honours run_at', () => {
  it('refuses to start a delayed process before its run_at, and starts it once due', async () => {
    const response = await fetch(`${base}/processes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type: freshType(), delay_ms: 1500 }),
    })
    const p = (await response.json()) as { id: number }
    const worker = await TestWorker.connect(base, await workerToken(db.sql))
    expect((await worker.request({ op: 'hello', worker_id: 'early-starter' })).op).toBe('ack')
    const early = await worker.request({ op: 'start', process_id: p.id })
    expect(early).toMatchObject({ op: 'error', code: 'invalid_transition' })
    expect(early.message).toContain('run_at')
    expect((await get(p.id)).status).toBe('pending')
    await waitFor(async () => (await worker.request({ op: 'start', process_id: p.id })).op === 'ack', 5000, 'the start once due')
    expect((await get(p.id)).status).toBe('running')
    worker.close()
  })
})

describe('log lines per process are capped', () => {
  it('refuses a log frame past MAX_LOG_EVENTS_PER_PROCESS with invalid_message, and the process goes on', async () => {
    const type = freshType()
    const p = await restAs(capped.url, tenant.token).create(type)
    const worker = await TestWorker.connect(capped.url, await workerToken(db.sql))
    expect((await worker.request({ op: 'hello', worker_id: 'chatty' })).op).toBe('ack')
    const claimed = (await worker.request({ op: 'claim', types: [type] })).process
    expect(claimed.id).toBe(p.id)
    for (let i = 0; i < 3; i++) expect((await worker.request({ op: 'log', process_id: p.id, message: `line ${i}` })).op).toBe('ack')
    const refused = await worker.request({ op: 'log', process_id: p.id, message: 'one too many' })
    expect(refused).toMatchObject({ op: 'error', code: 'invalid_message' })
    expect(refused.message).toContain('MAX_LOG_EVENTS_PER_PROCESS')
    expect((await worker.request({ op: 'complete', process_id: p.id })).op).toBe('ack')
    const [{ n }] = await db.sql<{ n: number }[]>`select count(*)::int as n from process_events where process_id = ${p.id} and message like 'line %'`
    expect(n).toBe(3)
    worker.close()
  })
})

describe('the worker token stays out of URLs', () => {
  it('refuses ?token= with WORKER_TOKEN_IN_QUERY=off, and the SDK on Bun sends a header instead', async () => {
    const wtoken = await workerToken(db.sql)
    const inUrl = await fetch(`${strict.url}/workers/ws?token=${wtoken}`, { headers: { upgrade: 'websocket', connection: 'Upgrade' } })
    expect(inUrl.status).toBe(401)
    expect(((await inUrl.json()) as any).error.message).toContain('WORKER_TOKEN_IN_QUERY')
    const type = freshType()
    const p = await restAs(strict.url, tenant.token).create(type)
    const worker = connectWorker(strict.url, wtoken, { types: [type], handler: async () => ({ result_summary: { ok: true } }) })
    try {
      await waitFor(async () => (await restAs(strict.url, tenant.token).get(p.id)).status === 'completed', 10_000, 'the SDK worker completing the job')
    } finally {
      await worker.close()
    }
  }, 30_000)
})
