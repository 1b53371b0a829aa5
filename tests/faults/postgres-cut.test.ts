// Fault: Postgres unreachable for 5 s, twice (a proxy between the server and Postgres blackholes, then
// refuses, new connections), while API clients and a worker keep working. The API answers 503 `unavailable`
// quickly; the worker's records (log lines, terminal frames) are refused and not acked, while its progress,
// live state fenced in memory with no database read, is still acked and written once Postgres is back; nothing
// acked is lost, nothing refused is applied later, and everything recovers by itself.
import { afterAll, describe, expect } from 'bun:test'
import { hasPostgres, seededDatabase, spawnServer, waitFor } from '../support/helpers'
import { TestWorker } from '../support/worker-client'
import { type CutMode, TcpProxy } from './proxy'
import { reportAfterAll, scenario, skipped } from './report'

const CUT_MS = 5000
const row = {
  n: 2,
  scenario: 'Postgres cut',
  injected: `Postgres cut twice for ${CUT_MS / 1000} s through a proxy: open connections destroyed, new ones blackholed (accepted, never answered), then refused`,
  invariant:
    'API 503 unavailable within 5 s, never 500; worker records refused, not acked, progress acked from memory; nothing acked lost, nothing refused applied; recovers by itself',
}
reportAfterAll([2])
if (!hasPostgres) skipped(row, 'needs DATABASE_URL')

interface Call {
  route: string
  startedAt: number
  ms: number
  status: number
  code?: string
  /** A create's Idempotency-Key. */
  key?: string
}

interface FrameReply {
  op: string
  message: string
  sentAt: number
  ms: number
  reply: Record<string, any>
}

describe.skipIf(!hasPostgres)('Postgres cut for 5 s', async () => {
  if (!hasPostgres) return
  const { url, db, tenant, wtoken } = await seededDatabase()
  const target = new URL(url)
  const proxy = await TcpProxy.start({ host: target.hostname, port: Number(target.port || 5432) })
  afterAll(() => proxy.close())
  // AUTH_CACHE_MS=0: every request looks its token up, so none is answered from memory during the cut.
  const server = await spawnServer({ DATABASE_URL: proxy.rewrite(url), REDIS_URL: '', PROGRESS_PERSIST_MS: '20', AUTH_CACHE_MS: '0' })
  const auth = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }

  async function call(route: string, path: string, init: RequestInit = {}): Promise<Call & { body: any }> {
    const startedAt = Date.now()
    let status = 0
    let body: any = null
    try {
      const response = await fetch(`${server.url}${path}`, { ...init, headers: { ...auth, ...(init.headers as object) }, signal: AbortSignal.timeout(15_000) })
      status = response.status
      if (response.headers.get('content-type')?.startsWith('text/event-stream')) await response.body?.cancel()
      else {
        const text = await response.text()
        body = text ? JSON.parse(text) : null
      }
    } catch (error) {
      status = -1 // no answer within 15 s: a hang
      body = { error: { code: String(error) } }
    }
    return { route, startedAt, ms: Date.now() - startedAt, status, code: body?.error?.code, body }
  }

  scenario(row, async () => {
    const created: number[] = []
    for (let i = 0; i < 5; i++) {
      const r = await call('POST /processes', '/processes', { method: 'POST', body: JSON.stringify({ type: 'pgcut', metadata: { i } }) })
      expect(r.status).toBe(201)
      created.push(r.body.id)
    }
    const worker = await TestWorker.connect(server.url, wtoken)
    await worker.request({ op: 'hello', worker_id: 'pgcut-worker' })
    const runs = new Map<number, number>() // process id → attempt
    for (let i = 0; i < 5; i++) {
      const p = (await worker.request({ op: 'claim', types: ['pgcut'] })).process
      runs.set(p.id, p.attempts)
    }
    expect([...runs.keys()].sort()).toEqual([...created].sort())
    // Two processes the worker finishes during the cuts; three it keeps reporting on throughout.
    const [finishBlackholed, finishRefused, ...busy] = [...runs.keys()] as [number, number, ...number[]]

    // Background traffic for the whole test: three API clients and one worker lane per busy process,
    // each one request at a time.
    const calls: Call[] = []
    const frames: FrameReply[] = []
    const lastAckedProgress = new Map<number, number>()
    let stop = false
    let seq = 0
    const apiLane = async () => {
      while (!stop) {
        const id = created[seq % created.length]!
        const n = seq++
        const r = await [
          () => call('GET /processes/:id', `/processes/${id}`),
          () => call('GET /processes/:id (etag)', `/processes/${id}`, { headers: { 'if-none-match': '"1"' } }),
          () => call('GET /processes', '/processes?limit=5'),
          () => call('GET /processes/:id/events', `/processes/${id}/events`),
          () =>
            call('POST /processes', '/processes', { method: 'POST', headers: { 'idempotency-key': `k-${n}` }, body: JSON.stringify({ type: 'pgcut_new' }) }),
          () => call('POST /processes/:id/cancel', `/processes/${created[0]! + 1_000_000}/cancel`, { method: 'POST' }),
          () => call('GET /processes/:id/stream', `/processes/${id}/stream`),
        ][n % 7]!()
        calls.push(r.route === 'POST /processes' ? { ...r, key: `k-${n}` } : r)
        if (r.route === 'POST /processes' && r.status === 201) created.push(r.body.id)
        await Bun.sleep(20)
      }
    }
    let logSeq = 0
    const workerLane = async (id: number) => {
      while (!stop) {
        const message = `line-${logSeq++}`
        const progress = logSeq % 100
        for (const frame of [
          { op: 'log', process_id: id, message, attempt: runs.get(id) },
          { op: 'progress', process_id: id, progress, attempt: runs.get(id) },
        ]) {
          const sentAt = Date.now()
          const reply = await worker.request(frame, 20_000).catch((error) => ({ op: 'timeout', code: String(error) }))
          frames.push({ op: frame.op, message, sentAt, ms: Date.now() - sentAt, reply })
          if (frame.op === 'progress' && reply.op === 'ack') lastAckedProgress.set(id, progress)
        }
        await Bun.sleep(20)
      }
    }
    const traffic = Promise.all([apiLane(), apiLane(), apiLane(), ...busy.map(workerLane)])

    const cuts: Array<{
      mode: CutMode
      cutAt: number
      restoredAt: number
      recoveredMs: number
      completeDuring: Record<string, any>
      completeAfter: Record<string, any>
      staleDuring: Record<string, any>
    }> = []
    for (const [mode, finishing] of [
      ['blackhole', finishBlackholed],
      ['refuse', finishRefused],
    ] as const) {
      await Bun.sleep(1000)
      const cutAt = Date.now()
      await proxy.cut(mode)
      // The worker finishes a process during the cut: refused, not acked.
      await Bun.sleep(1500)
      const completeDuring = await worker.request({ op: 'complete', process_id: finishing, attempt: runs.get(finishing), result_summary: { ok: true } }, 20_000)
      // Fencing needs no database either: progress of an attempt the lease does not hold is refused from memory.
      const staleDuring = await worker.request({ op: 'progress', process_id: busy[0]!, attempt: runs.get(busy[0]!)! + 1, progress: 99 }, 20_000)
      await Bun.sleep(Math.max(0, cutAt + CUT_MS - Date.now()))
      const restoredAt = Date.now()
      await proxy.restore()
      // Recovery by itself: the same server process, the same worker connection, nothing restarted.
      const why = (what: string) => () => (server.proc.exitCode === null ? what : `${what}; the server exited:\n${server.output()}`)
      await waitFor(async () => (await call('GET /processes/:id', `/processes/${finishing}`)).status === 200, 20_000, why('the API to answer 200 again'))
      await waitFor(async () => (await fetch(`${server.url}/ready`)).status === 200, 20_000, why('/ready to answer 200 again'))
      await waitFor(() => frames.some((f) => f.sentAt > restoredAt && f.reply.op === 'ack'), 20_000, why('a worker frame acked again'))
      const recoveredMs = Date.now() - restoredAt
      // As a worker would: `unavailable` means "not applied, try again"; under load a pooled connection may
      // still be coming back. Anything else (or no ack within 10 s) fails the test.
      let completeAfter: Record<string, any> = {}
      await waitFor(
        async () => {
          completeAfter = await worker.request({ op: 'complete', process_id: finishing, attempt: runs.get(finishing), result_summary: { ok: true } })
          return completeAfter.code !== 'unavailable'
        },
        10_000,
        'a complete that is not unavailable',
        { pollMs: 200 },
      ).catch(() => {}) // still unavailable after 10 s: the expectation on completeAfter below fails
      cuts.push({ mode, cutAt, restoredAt, recoveredMs, completeDuring, completeAfter, staleDuring })
    }
    await Bun.sleep(500)
    stop = true
    await traffic
    // A server that died says why.
    expect({ exited: server.proc.exitCode, output: server.proc.exitCode === null ? '' : server.output() }).toEqual({ exited: null, output: '' })

    // 1. Never a 500, never a hang: every answer within 5 s; every 503 says `unavailable`.
    expect(calls.filter((c) => c.status >= 500 && c.status !== 503)).toEqual([])
    expect(calls.filter((c) => c.status === -1)).toEqual([])
    const slowest = Math.max(...calls.map((c) => c.ms))
    expect(slowest).toBeLessThan(5000)
    for (const c of calls.filter((c) => c.status === 503)) expect(c.code).toBe('unavailable')
    expect(frames.filter((f) => f.reply.op === 'timeout')).toEqual([])
    expect(Math.max(...frames.map((f) => f.ms))).toBeLessThan(5000)
    expect(frames.filter((f) => f.reply.op === 'error' && f.reply.code !== 'unavailable')).toEqual([])
    let callsDuring = 0
    let framesDuring = 0
    const refused: string[] = []
    for (const cut of cuts) {
      // 2. During the cut (begun after it took effect, answered before the restore): 503 unavailable, and
      // worker frames get an `error` (unavailable), never an ack.
      const during = calls.filter((c) => c.startedAt > cut.cutAt + 100 && c.startedAt + c.ms < cut.restoredAt)
      expect(during.length).toBeGreaterThan(2)
      for (const c of during)
        expect({ mode: cut.mode, route: c.route, status: c.status, code: c.code }).toEqual({ mode: cut.mode, route: c.route, status: 503, code: 'unavailable' })
      const framesInCut = frames.filter((f) => f.sentAt > cut.cutAt + 100 && f.sentAt + f.ms < cut.restoredAt)
      const refusedFrames = framesInCut.filter((f) => f.op === 'log')
      expect(refusedFrames.length).toBeGreaterThan(0)
      for (const f of refusedFrames)
        expect({ mode: cut.mode, op: f.op, reply: f.reply.op, code: f.reply.code }).toEqual({ mode: cut.mode, op: f.op, reply: 'error', code: 'unavailable' })
      // Progress is fenced against the leases held in memory: accepted and acked with no database at all.
      const liveFrames = framesInCut.filter((f) => f.op === 'progress')
      expect(liveFrames.length).toBeGreaterThan(0)
      for (const f of liveFrames) expect({ mode: cut.mode, op: f.op, reply: f.reply.op }).toEqual({ mode: cut.mode, op: f.op, reply: 'ack' })
      expect(cut.completeDuring).toMatchObject({ op: 'error', code: 'unavailable' })
      expect(cut.staleDuring).toMatchObject({ op: 'error', code: 'not_owner' })
      expect({ mode: cut.mode, reply: cut.completeAfter }).toMatchObject({ mode: cut.mode, reply: { op: 'ack' } })
      callsDuring += during.length
      framesDuring += refusedFrames.length
      refused.push(
        ...frames.filter((f) => f.op === 'log' && f.reply.op === 'error' && f.sentAt > cut.cutAt + 100 && f.sentAt < cut.restoredAt).map((f) => f.message),
      )
    }

    // 3. Nothing acked is lost, nothing refused is applied later.
    const events = await db.sql<{ message: string }[]>`
      select message from process_events where process_id = any(${busy}::bigint[]) and message like 'line-%'`
    const logged = new Map<string, number>()
    for (const e of events) logged.set(e.message, (logged.get(e.message) ?? 0) + 1)
    const acked = frames.filter((f) => f.op === 'log' && f.reply.op === 'ack').map((f) => f.message)
    expect(acked.filter((m) => logged.get(m) !== 1)).toEqual([])
    expect(refused.length).toBeGreaterThan(0)
    expect(refused.filter((m) => logged.has(m))).toEqual([])
    // The last acked progress reaches the row (written behind, within an interval once Postgres answers).
    for (const id of busy) {
      const row = async () => (await db.sql`select progress, status from processes where id = ${id}`)[0]!
      await waitFor(async () => (await row()).progress === lastAckedProgress.get(id), 5000, `the last acked progress of ${id} written`).catch(() => {})
      const p = await row()
      expect({ id, progress: p.progress, status: p.status }).toEqual({ id, progress: lastAckedProgress.get(id)!, status: 'running' })
    }
    const createdRows = await db.sql<{ id: number }[]>`select id from processes where id = any(${created}::bigint[])`
    expect(createdRows.length).toBe(created.length)
    // A create refused with 503 created nothing, then or later — but for one already in flight when a cut
    // began: its commit may have landed with the reply lost in the cut connection (no client of any database
    // can tell), and that is what its Idempotency-Key is for. Each refused create is sent again with its key:
    // one that had been applied answers its first process (Idempotent-Replayed), never a second one, and only
    // a create in flight at a cut may be such a one; any other is created now. Then exactly these exist.
    const appliedThoughRefused: string[] = []
    let createdAfter = 0
    for (const c of calls.filter((c) => c.route === 'POST /processes' && c.status !== 201)) {
      const response = await fetch(`${server.url}/processes`, {
        method: 'POST',
        headers: { ...auth, 'idempotency-key': c.key! },
        body: JSON.stringify({ type: 'pgcut_new' }),
      })
      expect({ key: c.key, status: response.status }).toEqual({ key: c.key, status: 201 })
      await response.body?.cancel()
      if (response.headers.get('idempotent-replayed') !== 'true') createdAfter++
      else if (!cuts.some((cut) => c.startedAt <= cut.cutAt + 100 && c.startedAt + c.ms >= cut.cutAt)) appliedThoughRefused.push(c.key!)
    }
    expect(appliedThoughRefused).toEqual([])
    const [made] = await db.sql<{ n: number }[]>`select count(*)::int as n from processes where type = 'pgcut_new'`
    const refusedCreates = calls.filter((c) => c.route === 'POST /processes' && c.status !== 201).length
    // One process per key, none without one: every 201, and every refused create now answered by its key.
    expect(made!.n).toBe(calls.filter((c) => c.route === 'POST /processes' && c.status === 201).length + refusedCreates)
    // Three API lanes, one request each at a time: at most three creates in flight as a cut begins.
    expect(refusedCreates - createdAfter).toBeLessThanOrEqual(cuts.length * 3)
    for (const id of [finishBlackholed, finishRefused]) {
      const finished = await db.sql`select status from process_events where process_id = ${id} and status = 'completed'`
      expect(finished.length).toBe(1)
    }
    worker.close()
    const recovered = cuts.map((c) => `${c.mode} ${c.recoveredMs} ms`).join(', ')
    return `${calls.length} API calls (${callsDuring} during cuts, slowest ${slowest} ms), ${frames.length} frames (${framesDuring} refused), recovered: ${recovered}`
  })
})
