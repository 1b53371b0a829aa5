// Property-based fuzzing (fast-check) of every route — params, query, body and the headers that matter
// (Authorization, cookie, Idempotency-Key, If-None-Match, Last-Event-ID, Content-Type) — through the
// in-process handler, and of worker frames over a real WebSocket. Thousands of cases: never a 5xx, never an
// `internal` frame error, the server keeps answering, nothing of another workspace leaks or changes.
import { describe, expect } from 'bun:test'
import fc from 'fast-check'
import type { Sql } from '../../src/db/client'
import { claimNext } from '../../src/processes/queries/claims'
import { insertProcess } from '../../src/processes/queries/create'
import { transitionProcess, userTransition, workerTransition } from '../../src/processes/queries/transitions'
import { STATUSES } from '../../src/processes/states'
import { OPS } from '../../src/workers/model'
import { createTenant, inProcessApp, listeningServer, workerToken } from '../support/helpers'
import { TestWorker } from '../support/worker-client'
import { reportAfterAll, scenario } from './report'

const HTTP_RUNS = 2000
const FRAME_RUNS = 1500
reportAfterAll([7])

/** One process in each status (pending optional), leased, when running, to `holder`. */
async function processesInEveryStatus(sql: Sql, workspaceId: number, type: string, holder: string, withPending: boolean) {
  const ids: number[] = []
  const make = async (to: 'running' | 'waiting_review' | 'completed' | 'failed' | 'cancelled') => {
    const p = await insertProcess(sql, { workspaceId, type, metadata: { secret: `${type}-${to}` }, createdBy: null })
    if (to === 'cancelled') return (await transitionProcess(sql, p.id, userTransition(sql, 'cancel', [workspaceId])))!.id
    const run = ((await claimNext(sql, { workerId: holder, types: [type], max: 1 }))[0] ?? null)!
    if (to === 'waiting_review') await transitionProcess(sql, run.id, workerTransition(sql, 'review', holder, undefined))
    if (to === 'completed') await transitionProcess(sql, run.id, workerTransition(sql, 'complete', holder, undefined, { result_summary: { secret: 1 } }))
    if (to === 'failed') await transitionProcess(sql, run.id, workerTransition(sql, 'fail', holder, undefined, { error: 'secret failure' }))
    return run.id
  }
  for (const to of ['running', 'waiting_review', 'completed', 'failed', 'cancelled'] as const) ids.push(await make(to))
  if (withPending) ids.push((await insertProcess(sql, { workspaceId, type, metadata: {}, createdBy: null })).id)
  return ids
}

describe('fuzzing every route and every worker frame', async () => {
  const { handle, db } = await inProcessApp({ PROGRESS_PERSIST_MS: '0' })
  const sql = db.sql
  // The victim: another tenant whose processes the fuzzer must never see nor touch. None is pending, so no
  // worker may legitimately claim one; the running one is leased to a worker id the fuzzer cannot produce.
  const victim = await createTenant(sql)
  const victimHolder = `victim-holder-${crypto.randomUUID()}`
  // A type of its own: seeing it anywhere in an answer to the fuzzer is a leak.
  const victimType = `victim.${crypto.randomUUID().slice(0, 8)}`
  const victimIds = await processesInEveryStatus(sql, victim.workspaceId, victimType, victimHolder, false)
  const attacker = await createTenant(sql)
  const attackerIds = await processesInEveryStatus(sql, attacker.workspaceId, 'own_job', 'own-holder', true)
  const wtoken = await workerToken(sql)
  const server = await listeningServer({ PROGRESS_PERSIST_MS: '0' }, db)

  async function snapshot() {
    const processes = await sql`select * from processes where workspace_id = ${victim.workspaceId} order by id`
    const events =
      await sql`select e.* from process_events e join processes p on p.id = e.process_id where p.workspace_id = ${victim.workspaceId} order by e.id`
    const members = await sql`select * from memberships where workspace_id = ${victim.workspaceId} order by user_id`
    const tokens = await sql`select id, user_id, revoked_at, expires_at from api_tokens where user_id = ${victim.userId} order by id`
    const keys = await sql`select * from idempotency_keys where user_id = ${victim.userId}`
    return JSON.stringify({ processes, events, members, tokens, keys })
  }
  // A victim's workspace or process id in a response body is a leak.
  const leaks = (text: string) => new RegExp(`"workspace_id":${victim.workspaceId}[,}]`).test(text) || text.includes(victimHolder) || text.includes(victimType)

  // ---------------------------------------------------------------------------------------------
  // HTTP: the in-process handler, every route, anything in every part of the request.

  const text = fc.string({ maxLength: 40 })
  const anyText = fc.oneof(text, fc.string({ unit: 'binary', maxLength: 20 }), fc.string({ unit: 'grapheme', maxLength: 10 }))
  const junk = fc.oneof(anyText, fc.jsonValue({ maxDepth: 2 }))
  // Mostly ids that exist (the caller's own and the victim's), sometimes anything.
  const someId = fc.oneof(
    { weight: 5, arbitrary: fc.constantFrom(...attackerIds).map(String) },
    { weight: 4, arbitrary: fc.constantFrom(...victimIds).map(String) },
    fc.integer({ min: -5, max: 1_000_000 }).map(String),
    fc.constantFrom(
      '0',
      '-1',
      '1.5',
      '1e3',
      '0x10',
      ' 1',
      '1 ',
      '+1',
      '٣',
      '9007199254740993',
      '99999999999999999999',
      'NaN',
      'Infinity',
      'null',
      '%00',
      '..',
      'stream',
    ),
    anyText.map(encodeURIComponent),
  )
  // Every route with its own method most of the time; any method, any path some of the time.
  const endpoint = fc.oneof(
    {
      weight: 8,
      arbitrary: fc.oneof(
        fc
          .constantFrom(['GET', '/processes'], ['GET', '/processes/stream'], ['POST', '/processes'], ['GET', '/me'])
          .map(([method, path]) => ({ method: method!, path: path! })),
        fc
          .tuple(someId, fc.constantFrom(['GET', ''], ['GET', '/events'], ['GET', '/stream'], ['POST', '/retry'], ['POST', '/cancel'], ['POST', '/review']))
          .map(([id, [method, rest]]) => ({ method: method!, path: `/processes/${id}${rest}` })),
      ),
    },
    fc.record({
      method: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD'),
      path: fc.oneof(
        fc.constantFrom(
          '/processes',
          '/processes/stream',
          '/processes/stats',
          '/workers',
          '/me',
          '/health',
          '/ready',
          '/metrics',
          '/openapi/json',
          '/workers/ws',
          '/',
          '/app.js',
          '//processes',
          '/processes/',
          '/PROCESSES',
        ),
        fc
          .tuple(someId, fc.constantFrom('', '/events', '/stream', '/retry', '/cancel', '/review', '/events/', '/x'))
          .map(([id, rest]) => `/processes/${id}${rest}`),
        fc.webPath(),
      ),
    }),
  )
  const queryValue = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        String(victim.workspaceId),
        String(attacker.workspaceId),
        ...STATUSES,
        'running,pending',
        'own_job',
        'victim_job',
        '1',
        '50',
        '200',
        '1h',
        '7d',
        ...victimIds.map(String),
        ...attackerIds.map(String),
      ),
    },
    fc.integer({ min: -10, max: 300 }).map(String),
    anyText,
  )
  const query = fc.array(
    fc.tuple(fc.constantFrom('workspace_id', 'status', 'type', 'limit', 'before', 'after', 'last_event_id', 'token', 'window', '__proto__'), queryValue),
    { maxLength: 4 },
  )
  const jsonBody = fc.oneof(
    {
      weight: 6,
      arbitrary: fc
        .record(
          {
            type: fc.oneof({ weight: 3, arbitrary: fc.constantFrom('own_job', 'fuzz.job-1', 'victim_job') }, fc.constantFrom('A', '', 'a'.repeat(65)), junk),
            metadata: fc.oneof({ weight: 3, arbitrary: fc.dictionary(text, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }) }, junk),
            workspace_id: fc.oneof(fc.constantFrom(victim.workspaceId, attacker.workspaceId, 0, -1, 1.5), junk),
            decision: fc.oneof({ weight: 3, arbitrary: fc.constantFrom('approve', 'discard') }, junk),
            message: fc.oneof({ weight: 3, arbitrary: text }, fc.constant('m'.repeat(2001)), junk),
          },
          { requiredKeys: [] },
        )
        .map((o) => JSON.stringify(o)),
    },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)) },
    anyText,
    fc.constantFrom(
      '{',
      '{"type":',
      'null',
      '[]',
      '""',
      '{"type":"x"}{"type":"y"}',
      '\u0000',
      '{"__proto__":{"x":1},"type":"own_job"}',
      JSON.stringify({ type: 'own_job', metadata: { big: 'x'.repeat(1024 * 1024) } }),
    ),
  )
  const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined })
  const headers = fc.record(
    {
      authorization: fc.option(
        fc.oneof(
          { weight: 20, arbitrary: fc.constant(`Bearer ${attacker.token}`) },
          fc.constantFrom(
            `Bearer ${attacker.token}x`,
            `bearer   ${attacker.token}  `,
            `Bearer ${wtoken}`,
            'Bearer ',
            'Basic dXNlcjpwYXNz',
            `Bearer ${'a'.repeat(600)}`,
            '',
          ),
          text.map((t) => `Bearer ${t}`),
        ),
        { nil: undefined, freq: 12 },
      ),
      cookie: optional(
        fc.oneof(
          fc.constant(`ps_session=${encodeURIComponent(attacker.token)}`),
          fc.constantFrom('ps_session=%E0%A4%A', 'ps_session=', 'a=b; ps_session=zz'),
          text,
        ),
      ),
      'idempotency-key': optional(fc.oneof(fc.constantFrom('k1', 'k2', 'x'.repeat(300)), text)),
      'if-none-match': optional(
        fc.oneof(
          fc.constantFrom('*', '"1"', '"2", W/"3"', 'W/"1"', '""', '"'),
          fc.nat(20).map((n) => `"${n}"`),
          text,
        ),
      ),
      'last-event-id': optional(fc.oneof(fc.nat(50).map(String), fc.constantFrom('-1', '1e3', '9'.repeat(40), ' 3 '), text)),
      'content-type': optional(
        fc.constantFrom(
          'application/json',
          'text/plain',
          'application/x-www-form-urlencoded',
          'multipart/form-data; boundary=x',
          'application/json; charset=latin1',
          'garbage',
        ),
      ),
      'x-request-id': optional(text),
      origin: optional(fc.constantFrom('http://evil.example', 'null')),
    },
    { requiredKeys: [] },
  )
  const request = fc.record({ endpoint, query, body: optional(jsonBody), headers })

  // ---------------------------------------------------------------------------------------------
  // Worker frames: a real server and a real `ws` client. Mostly a well-formed frame of a known op with
  // plausible values, then one field dropped or replaced by junk; sometimes garbage.

  const good = {
    ref: fc.oneof(text, fc.integer()),
    process_id: fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom(...attackerIds) },
      { weight: 3, arbitrary: fc.constantFrom(...victimIds) },
      fc.integer({ min: 1, max: 1_000_000 }),
    ),
    worker_id: fc.constantFrom('fuzz-worker', 'own-holder', 'w:1@x/y', 'other.worker'),
    types: fc.array(fc.constantFrom('own_job', victimType, 'fuzz.job-1'), { maxLength: 2 }),
    // Never a real wait: a claim that finds nothing would hold the fuzzer for wait_ms.
    wait_ms: fc.constantFrom(0, 1),
    progress: fc.integer({ min: 0, max: 100 }),
    message: fc.oneof(text, fc.constant(null)),
    attempt: fc.integer({ min: 0, max: 3 }),
    result_summary: fc.oneof(fc.dictionary(text, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }), fc.constant(null)),
    review: fc.boolean(),
    error: text,
  }
  const fields = Object.keys(good) as Array<keyof typeof good>
  const frame = fc
    .tuple(
      fc.oneof({ weight: 12, arbitrary: fc.constantFrom(...OPS) }, text),
      fc.record(good, { requiredKeys: ['process_id', 'worker_id', 'progress', 'message', 'error'] }),
      fc.option(
        fc.tuple(
          fc.constantFrom(...fields),
          fc.oneof(junk, fc.constant(undefined), fc.constantFrom(-1, 1.5, 2 ** 53, 101, 30_001, '1', 'r'.repeat(250), 'm'.repeat(4001))),
        ),
      ),
    )
    .map(([op, values, mutation]) => {
      const f: Record<string, unknown> = { op, ...values }
      if (mutation) f[mutation[0]] = mutation[1]
      return JSON.stringify(f)
    })
  const rawFrame = fc.oneof(
    { weight: 12, arbitrary: frame },
    fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
    anyText,
    fc.constant(JSON.stringify({ op: 'log', ref: 'big', process_id: attackerIds[0], message: 'x'.repeat(70 * 1024) })),
  )

  scenario(
    {
      n: 7,
      scenario: 'Fuzzing',
      injected: `fast-check: ${HTTP_RUNS} random requests (every route; params, query, body, Authorization, cookie, Idempotency-Key, If-None-Match, Last-Event-ID, Content-Type) + ${FRAME_RUNS} random worker frames`,
      invariant: 'no 5xx, every error in the contract shape, no internal frame error, server and socket stay up, another workspace unseen and unchanged',
    },
    async () => {
      const before = await snapshot()
      const statuses = new Map<number, number>()

      await fc.assert(
        fc.asyncProperty(request, async (r) => {
          const { method, path } = r.endpoint
          const url = new URL(`http://test.local${path.startsWith('/') ? path : `/${path}`}`)
          for (const [k, v] of r.query) url.searchParams.append(k, v)
          const init: RequestInit = {
            method,
            headers: Object.fromEntries(Object.entries(r.headers).filter(([, v]) => v !== undefined)) as Record<string, string>,
          }
          if (r.body !== undefined && method !== 'GET' && method !== 'HEAD') init.body = r.body
          const response = await handle(new Request(url, init))
          statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1)
          const type = response.headers.get('content-type') ?? ''
          if (type.startsWith('text/event-stream')) {
            // A stream that opened is one the caller may see: never another workspace's.
            expect(victimIds.map(String)).not.toContain(url.pathname.split('/')[2])
            await response.body?.cancel()
          }
          const body = type.startsWith('text/event-stream') ? '' : await response.text()
          if (response.status >= 500) throw new Error(`${response.status} for ${JSON.stringify(r)}: ${body.slice(0, 300)}`)
          if (response.status >= 400 && method !== 'HEAD') {
            const parsed = JSON.parse(body)
            expect(typeof parsed.error.code).toBe('string')
            expect(typeof parsed.error.message).toBe('string')
          }
          // /metrics is the operators' endpoint (a Prometheus scrape, no auth, never exposed to tenants): its
          // job metrics are labelled by process type by design (queue depth, wait/run time, completions and
          // failures per type), so the victim's type may appear there; its workspace id and worker never do.
          const checked = url.pathname === '/metrics' ? body.replaceAll(`type="${victimType}"`, 'type="…"') : body
          expect({ request: r, leak: leaks(checked) }).toEqual({ request: r, leak: false })
        }),
        { numRuns: HTTP_RUNS },
      )

      const worker = await TestWorker.connect(server.url, wtoken)
      await worker.request({ op: 'hello', worker_id: 'fuzz-worker' })
      const codes = new Map<string, number>()
      await fc.assert(
        fc.asyncProperty(rawFrame, async (text) => {
          const reply = await worker.raw(text)
          const key = reply.op === 'error' ? `error ${reply.code}` : reply.op
          codes.set(key, (codes.get(key) ?? 0) + 1)
          expect({ frame: text.slice(0, 300), reply }).toMatchObject({ reply: { op: expect.stringMatching(/^(ack|claimed|error)$/) } })
          expect({ frame: text.slice(0, 300), code: reply.code }).not.toMatchObject({ code: 'internal' })
          expect({ frame: text.slice(0, 300), leak: leaks(JSON.stringify(reply)) }).toEqual({ frame: text.slice(0, 300), leak: false })
          expect(worker.closeCode).toBeNull()
        }),
        { numRuns: FRAME_RUNS },
      )
      // Still up and working: the socket, the worker protocol, the HTTP side.
      expect(worker.closeCode).toBeNull()
      expect((await worker.request({ op: 'claim', types: ['nothing_here'] })).op).toBe('claimed')
      expect((await fetch(`${server.url}/health`)).status).toBe(200)
      expect((await handle(new Request('http://test.local/processes', { headers: { authorization: `Bearer ${attacker.token}` } }))).status).toBe(200)
      worker.close()

      expect(await snapshot()).toBe(before)
      const httpSummary = [...statuses]
        .sort(([a], [b]) => a - b)
        .map(([s, n]) => `${s}×${n}`)
        .join(' ')
      return `${HTTP_RUNS + FRAME_RUNS} cases; HTTP ${httpSummary}; frames ${[...codes].map(([c, n]) => `${c}×${n}`).join(', ')}`
    },
  )
})
