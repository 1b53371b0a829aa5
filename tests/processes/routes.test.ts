// The REST routes (README: API) through the full in-process handler: every route's success and every error code.
import { beforeAll, describe, expect, it } from 'bun:test'
import { addMember, createWorkspace } from '../../src/auth/queries'
import { claimNext } from '../../src/processes/queries/claims'
import { getProcesses } from '../../src/processes/queries/reads'
import { appendLog } from '../../src/processes/queries/reports'
import { createTenant, inProcessApp, type Tenant } from '../support/helpers'
import { createPending, processIn, uniqueType, WORKER_ID } from './drive'

// METADATA_MAX_BYTES off: the body-limit cases send 1 MiB of metadata (the cap has its own tests, tests/security/bounds.test.ts).
const { s, handle, request } = await inProcessApp({ METADATA_MAX_BYTES: '0' })
const { sql } = s

let a: Tenant
let b: Tenant

beforeAll(async () => {
  a = await createTenant(sql)
  b = await createTenant(sql)
})

/** Every error is the contract's JSON body and nothing else. */
function expectError(res: { status: number; body: any; headers: Headers }, status: number, code: string) {
  expect(res.status).toBe(status)
  expect(res.headers.get('content-type')).toStartWith('application/json')
  expect(Object.keys(res.body)).toEqual(['error'])
  expect(res.body.error.code).toBe(code)
  expect(typeof res.body.error.message).toBe('string')
  expect(res.body.error.message.length).toBeGreaterThan(0)
  for (const key of Object.keys(res.body.error)) expect(['code', 'message', 'details', 'request_id']).toContain(key)
  expect(JSON.stringify(res.body)).not.toContain('    at ')
}

const raw = (method: string, path: string, init: RequestInit & { token?: string } = {}) => {
  const headers = new Headers(init.headers)
  if (init.token) headers.set('authorization', `Bearer ${init.token}`)
  return handle(new Request(`http://test.local${path}`, { ...init, method, headers }))
}

async function parsed(response: Response) {
  const text = await response.text()
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null }
}

const countProcesses = async (where: { type: string }) =>
  ((await sql<{ n: number }[]>`select count(*)::int as n from processes where type = ${where.type}`) as { n: number }[])[0]!.n

describe('authentication', () => {
  const routes: Array<[string, string, unknown?]> = [
    ['GET', '/processes'],
    ['GET', '/processes/1'],
    ['GET', '/processes/1/events'],
    ['GET', '/processes/1/stream'],
    ['GET', '/processes/stream'],
    ['POST', '/processes', { type: 'x' }],
    ['POST', '/processes/1/retry'],
    ['POST', '/processes/1/cancel'],
    ['POST', '/processes/1/review', { decision: 'approve' }],
  ]

  it('returns 401 with WWW-Authenticate: Bearer on every route when no token is sent', async () => {
    for (const [method, path, body] of routes) {
      const res = await request(method, path, { body })
      expectError(res, 401, 'unauthenticated')
      expect(res.headers.get('www-authenticate')).toBe('Bearer')
    }
  })

  it('returns 401 for an unknown token', async () => {
    const res = await request('GET', '/processes', { token: 'ps_not-a-real-token' })
    expectError(res, 401, 'unauthenticated')
    expect(res.headers.get('www-authenticate')).toBe('Bearer')
  })

  it('returns 401 for a malformed Authorization header', async () => {
    for (const header of ['Basic dXNlcjpwYXNz', 'Bearer', 'Bearer  ', `Bearer ${a.token} extra`, a.token, `Token ${a.token}`]) {
      const res = await request('GET', '/processes', { headers: { authorization: header } })
      expectError(res, 401, 'unauthenticated')
      expect(res.headers.get('www-authenticate')).toBe('Bearer')
    }
  })

  it('returns 401 for an absurdly long token', async () => {
    const res = await request('GET', '/processes', { token: 'x'.repeat(100_000) })
    expectError(res, 401, 'unauthenticated')
  })

  it('authenticates with the ps_session cookie', async () => {
    const res = await request('GET', '/processes', { headers: { cookie: `theme=dark; ps_session=${encodeURIComponent(a.token)}` } })
    expect(res.status).toBe(200)
    expect(Array.isArray(res.body)).toBe(true)
  })

  it('returns 401 for an unknown or empty ps_session cookie', async () => {
    for (const cookie of ['ps_session=nope', 'ps_session=', 'ps_session=%E0%A4%A', 'other=1']) {
      const res = await request('GET', '/processes', { headers: { cookie } })
      expectError(res, 401, 'unauthenticated')
    }
  })

  it('answers an anonymous invalid request with 401, not 422', async () => {
    expectError(await request('GET', '/processes/abc'), 401, 'unauthenticated')
    expectError(await request('POST', '/processes', { body: { type: 'BAD' } }), 401, 'unauthenticated')
    expectError(await request('POST', '/processes', { body: '{not json' }), 401, 'unauthenticated')
    expectError(await request('POST', '/processes/1/review', { token: 'ps_unknown', body: '{not json' }), 401, 'unauthenticated')
  })
})

describe('errors', () => {
  it('returns 400 bad_request for unparseable JSON', async () => {
    expectError(await request('POST', '/processes', { token: a.token, body: '{"type": "x",' }), 400, 'bad_request')
    const p = await processIn(sql, request, a.token, 'waiting_review')
    expectError(await request('POST', `/processes/${p.id}/review`, { token: a.token, body: '{decision}' }), 400, 'bad_request')
  })

  it('returns 403 for a workspace_id the caller is not a member of', async () => {
    expectError(await request('GET', `/processes?workspace_id=${b.workspaceId}`, { token: a.token }), 403, 'forbidden')
    expectError(await request('GET', `/processes/stream?workspace_id=${b.workspaceId}`, { token: a.token }), 403, 'forbidden')
    expectError(await request('POST', '/processes', { token: a.token, body: { type: 'x', workspace_id: b.workspaceId } }), 403, 'forbidden')
    expectError(await request('GET', '/processes?workspace_id=999999999', { token: a.token }), 403, 'forbidden')
  })

  it('returns 404 for an unknown process id on every id route', async () => {
    const id = 987_654_321
    expectError(await request('GET', `/processes/${id}`, { token: a.token }), 404, 'not_found')
    expectError(await request('GET', `/processes/${id}`, { token: a.token, headers: { 'if-none-match': '"1"' } }), 404, 'not_found')
    expectError(await request('GET', `/processes/${id}/events`, { token: a.token }), 404, 'not_found')
    expectError(await request('GET', `/processes/${id}/stream`, { token: a.token }), 404, 'not_found')
    expectError(await request('POST', `/processes/${id}/retry`, { token: a.token }), 404, 'not_found')
    expectError(await request('POST', `/processes/${id}/cancel`, { token: a.token }), 404, 'not_found')
    expectError(await request('POST', `/processes/${id}/review`, { token: a.token, body: { decision: 'approve' } }), 404, 'not_found')
    expectError(await request('GET', `/processes/${Number.MAX_SAFE_INTEGER}`, { token: a.token }), 404, 'not_found')
  })

  it('returns 404 for an unknown route, with or without a token, and 405 for a known path with another method', async () => {
    expectError(await request('GET', '/nope'), 404, 'not_found')
    expectError(await request('GET', '/processes/1/nope', { token: a.token }), 404, 'not_found')
    const wrongMethod = await request('DELETE', '/processes/1', { token: a.token })
    expectError(wrongMethod, 405, 'method_not_allowed')
    expect(wrongMethod.headers.get('allow')).toBe('GET, HEAD')
  })

  it('returns 409 invalid_transition for an action the status does not allow', async () => {
    const p = await createPending(request, a.token)
    const res = await request('POST', `/processes/${p.id}/retry`, { token: a.token })
    expectError(res, 409, 'invalid_transition')
    // What happened and what is allowed, in a user's words (not "Cannot move a pending process to pending").
    expect(res.body.error.message).toBe('This process is pending (waiting for a worker); only failed processes can be retried.')
    expect(res.body.error.details).toEqual({ status: 'pending', to: 'pending' })
  })

  describe('413 for a body over 1 MiB', () => {
    const big = JSON.stringify({ type: 'big', metadata: { blob: 'x'.repeat(1024 * 1024) } })

    it('refuses a declared Content-Length over 1 MiB', async () => {
      const res = await parsed(await raw('POST', '/processes', { token: a.token, body: big, headers: { 'content-type': 'application/json' } }))
      expectError(res, 413, 'payload_too_large')
      expect(await countProcesses({ type: 'big' })).toBe(0)
    })

    it('refuses a chunked body (no Content-Length) once it passes 1 MiB', async () => {
      const chunk = new TextEncoder().encode('x'.repeat(64 * 1024))
      let sent = 0
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent === 0) controller.enqueue(new TextEncoder().encode('{"type":"big","metadata":{"blob":"'))
          if (sent > 2 * 1024 * 1024) controller.close()
          else controller.enqueue(chunk)
          sent += chunk.byteLength
        },
      })
      const req = new Request('http://test.local/processes', {
        method: 'POST',
        headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/json' },
        body,
        // @ts-expect-error Bun accepts duplex for streamed request bodies
        duplex: 'half',
      })
      expect(req.headers.get('content-length')).toBeNull()
      const res = await parsed(await handle(req))
      expectError(res, 413, 'payload_too_large')
      // Read up to the limit, not to the end of the 2 MiB stream.
      expect(sent).toBeLessThan(2 * 1024 * 1024)
      expect(await countProcesses({ type: 'big' })).toBe(0)
    })

    it('accepts a chunked body under 1 MiB', async () => {
      const type = uniqueType('chunked')
      const bytes = new TextEncoder().encode(JSON.stringify({ type, metadata: { blob: 'y'.repeat(200_000) } }))
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let i = 0; i < bytes.length; i += 10_000) controller.enqueue(bytes.slice(i, i + 10_000))
          controller.close()
        },
      })
      const res = await parsed(
        await handle(
          new Request('http://test.local/processes', {
            method: 'POST',
            headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/json' },
            body,
            // @ts-expect-error Bun accepts duplex for streamed request bodies
            duplex: 'half',
          }),
        ),
      )
      expect(res.status).toBe(201)
      expect(res.body.metadata.blob).toHaveLength(200_000)
    })

    it('accepts a body just under 1 MiB with Content-Length', async () => {
      const type = uniqueType('large')
      const envelope = JSON.stringify({ type, metadata: { blob: '' } })
      const body = JSON.stringify({ type, metadata: { blob: 'z'.repeat(1024 * 1024 - envelope.length) } })
      expect(body.length).toBe(1024 * 1024)
      const res = await request('POST', '/processes', { token: a.token, body })
      expect(res.status).toBe(201)
    })
  })

  describe('422 invalid_request', () => {
    it('rejects a non-numeric, zero, fractional or too large id on every id route', async () => {
      for (const id of ['abc', '0', '-1', '1.5', '1e3x', '9007199254740992', '99999999999999999999']) {
        expectError(await request('GET', `/processes/${id}`, { token: a.token }), 422, 'invalid_request')
        expectError(await request('GET', `/processes/${id}/events`, { token: a.token }), 422, 'invalid_request')
        expectError(await request('GET', `/processes/${id}/stream`, { token: a.token }), 422, 'invalid_request')
        expectError(await request('POST', `/processes/${id}/retry`, { token: a.token }), 422, 'invalid_request')
        expectError(await request('POST', `/processes/${id}/cancel`, { token: a.token }), 422, 'invalid_request')
        expectError(await request('POST', `/processes/${id}/review`, { token: a.token, body: { decision: 'approve' } }), 422, 'invalid_request')
      }
    })

    it('rejects a bad list query', async () => {
      for (const query of [
        'limit=0',
        'limit=201',
        'limit=abc',
        'limit=1.5',
        'status=bogus',
        'status=running,bogus',
        'status=',
        'status=running,',
        'type=Not-A-Type',
        'before=abc',
        'before=0',
        'workspace_id=abc',
      ]) {
        const res = await request('GET', `/processes?${query}`, { token: a.token })
        expectError(res, 422, 'invalid_request')
        expect(res.body.error.message).not.toContain('body')
      }
    })

    it('accepts the limit bounds 1 and 200', async () => {
      expect((await request('GET', '/processes?limit=1', { token: a.token })).status).toBe(200)
      expect((await request('GET', '/processes?limit=200', { token: a.token })).status).toBe(200)
    })

    it('rejects a bad events query', async () => {
      const p = await createPending(request, a.token)
      for (const query of ['limit=0', 'limit=1001', 'after=-1', 'after=x']) {
        expectError(await request('GET', `/processes/${p.id}/events?${query}`, { token: a.token }), 422, 'invalid_request')
      }
    })

    it('rejects a create body with a bad type, a non-object metadata or an unknown field', async () => {
      const bodies: unknown[] = [
        {},
        { type: '' },
        { type: 'Upper' },
        { type: '1starts_with_digit' },
        { type: 'has space' },
        { type: 'a'.repeat(65) },
        { type: 42 },
        { type: 'ok', metadata: [] },
        { type: 'ok', metadata: [1, 2] },
        { type: 'ok', metadata: 'text' },
        { type: 'ok', metadata: 7 },
        { type: 'ok', metadata: null },
        { type: 'ok', unknown: true },
        { type: 'ok', workspace_id: 'one' },
        [],
        'just a string',
      ]
      const before = await countProcesses({ type: 'ok' })
      for (const body of bodies) {
        const res = await request('POST', '/processes', { token: a.token, body: JSON.stringify(body) })
        expectError(res, 422, 'invalid_request')
      }
      expect(await countProcesses({ type: 'ok' })).toBe(before)
    })

    it('rejects metadata nested deeper than 64 levels, even 100 000 deep, and keeps serving', async () => {
      const nested = (levels: number) => `{"type":"deep","metadata":{"a":${'['.repeat(levels)}${']'.repeat(levels)}}}`
      expect((await request('POST', '/processes', { token: a.token, body: nested(63) })).status).toBe(201)
      for (const levels of [64, 20_000, 100_000]) {
        const res = await request('POST', '/processes', { token: a.token, body: nested(levels) })
        expectError(res, 422, 'invalid_request')
        expect(res.body.error.message).toContain('/metadata')
      }
      expect((await request('GET', '/processes?type=deep', { token: a.token })).body).toHaveLength(1)
    })

    it('rejects metadata that Postgres cannot store: U+0000 or an unpaired surrogate, in a key or a value, or a number beyond double range', async () => {
      for (const body of [
        { type: 'ok', metadata: { note: 'a\u0000b' } },
        { type: 'ok', metadata: { 'key\u0000': 1 } },
        { type: 'ok', metadata: { list: [{ deep: '\ud800' }] } },
        { type: 'ok', metadata: { '\udc00': true } },
      ]) {
        expectError(await request('POST', '/processes', { token: a.token, body }), 422, 'invalid_request')
      }
      // 1e400 parses as Infinity, which JSON can only store as null: refused, not silently changed.
      for (const body of ['{"type":"ok","metadata":{"big":1e400}}', '{"type":"ok","metadata":{"list":[1,-1e999]}}']) {
        const res = await request('POST', '/processes', { token: a.token, body })
        expectError(res, 422, 'invalid_request')
        expect(res.body.error.message).toContain('finite')
      }
      expect((await request('POST', '/processes', { token: a.token, body: '{"type":"ok","metadata":{"big":1.7e308,"small":5e-324}}' })).status).toBe(201)
      const emoji = await request('POST', '/processes', { token: a.token, body: { type: 'ok', metadata: { note: '\u{1F600} ünïcödé' } } })
      expect(emoji.status).toBe(201)
      expect(emoji.body.metadata.note).toBe('\u{1F600} ünïcödé')
    })

    it('rejects a review message with U+0000, and stores one with an unpaired surrogate without a 500', async () => {
      const p = await processIn(sql, request, a.token, 'waiting_review')
      expectError(
        await request('POST', `/processes/${p.id}/review`, { token: a.token, body: { decision: 'approve', message: 'ok\u0000' } }),
        422,
        'invalid_request',
      )
      const res = await request('POST', `/processes/${p.id}/review`, { token: a.token, body: '{"decision":"approve","message":"half \\ud800"}' })
      expect(res.status).toBe(200)
      expect(res.body.status).toBe('completed')
    })

    it('answers odd input with a 4xx, never a 500', async () => {
      const p = await createPending(request, a.token)
      const odd: Array<[string, string, { body?: unknown; headers?: Record<string, string> }]> = [
        ['GET', '/processes?status=running&status=failed', {}],
        ['GET', '/processes?limit=50&limit=60', {}],
        ['GET', '/processes?before=9007199254740993', {}],
        ['GET', '/processes?workspace_id=', {}],
        ['GET', `/processes/${p.id}?x=%ZZ`, {}],
        ['GET', `/processes/${p.id}`, { headers: { 'if-none-match': ',,, W/' } }],
        ['GET', `/processes/${p.id}/events?after=${Number.MAX_SAFE_INTEGER}`, {}],
        ['POST', '/processes', { body: { type: 'x' }, headers: { 'idempotency-key': 'k'.repeat(300) } }],
        ['POST', '/processes', { body: { type: 'x' }, headers: { 'idempotency-key': '' } }],
        ['POST', '/processes', { body: '', headers: { 'content-type': 'application/json' } }],
        ['POST', '/processes', { body: 'null' }],
        ['POST', '/processes', { body: '{"type":"x","metadata":{"__proto__":{"polluted":true}}}' }],
        ['POST', '/processes', { body: JSON.stringify({ type: 'x' }), headers: { 'content-type': 'text/plain' } }],
        ['POST', `/processes/${p.id}/review`, { body: '[]' }],
        ['POST', `/processes/${p.id}/cancel`, { body: 'not json at all', headers: { 'content-type': 'application/json' } }],
      ]
      for (const [method, path, o] of odd) {
        const res = await request(method, path, { token: a.token, ...o })
        expect({ path, status: res.status < 500 }).toEqual({ path, status: true })
        if (res.status >= 400) expectError(res, res.status, res.body.error.code)
      }
      expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    })

    it('accepts a type of exactly 64 characters', async () => {
      const type = 'a'.repeat(64)
      const res = await request('POST', '/processes', { token: a.token, body: { type } })
      expect(res.status).toBe(201)
      expect(res.body.type).toBe(type)
    })

    it('rejects a review body with a bad decision or an unknown field', async () => {
      const p = await processIn(sql, request, a.token, 'waiting_review')
      for (const body of [{}, { decision: 'maybe' }, { decision: 'approve', extra: 1 }, { decision: 'approve', message: 5 }]) {
        expectError(await request('POST', `/processes/${p.id}/review`, { token: a.token, body }), 422, 'invalid_request')
      }
      expect((await request('GET', `/processes/${p.id}`, { token: a.token })).body.status).toBe('waiting_review')
    })
  })
})

describe('GET /processes', () => {
  let t: Tenant
  const ids: Record<string, number> = {}

  beforeAll(async () => {
    t = await createTenant(sql)
    ids.pending = (await processIn(sql, request, t.token, 'pending')).id
    ids.running = (await processIn(sql, request, t.token, 'running')).id
    ids.failed = (await processIn(sql, request, t.token, 'failed')).id
    ids.completed = (await processIn(sql, request, t.token, 'completed')).id
    ids.special = (await createPending(request, t.token, 'special.kind')).id
  })

  it('lists the active workspace newest first, with summary fields only', async () => {
    const res = await request('GET', '/processes', { token: t.token })
    expect(res.status).toBe(200)
    expect(res.body.map((p: { id: number }) => p.id)).toEqual([ids.special, ids.completed, ids.failed, ids.running, ids.pending])
    for (const item of res.body) {
      for (const key of ['id', 'type', 'status', 'progress', 'created_at', 'updated_at']) expect(item).toHaveProperty(key)
      expect(item).not.toHaveProperty('metadata')
      expect(item).not.toHaveProperty('result_summary')
      expect(item).not.toHaveProperty('heartbeat_at')
      expect(typeof item.id).toBe('number')
      expect(typeof item.version).toBe('number')
      expect(typeof item.workspace_id).toBe('number')
      expect(item.workspace_id).toBe(t.workspaceId)
      expect(new Date(item.created_at).toISOString()).toBe(item.created_at)
    }
    expect(res.headers.get('link')).toBeNull()
  })

  it('filters by one status', async () => {
    const res = await request('GET', '/processes?status=running', { token: t.token })
    expect(res.body.map((p: { id: number }) => p.id)).toEqual([ids.running])
  })

  it('filters by several comma-separated statuses', async () => {
    const res = await request('GET', '/processes?status=failed,completed,running', { token: t.token })
    expect(res.body.map((p: { id: number }) => p.id)).toEqual([ids.completed, ids.failed, ids.running])
  })

  it('filters by type, alone and with a status', async () => {
    const res = await request('GET', '/processes?type=special.kind', { token: t.token })
    expect(res.body.map((p: { id: number }) => p.id)).toEqual([ids.special])
    const none = await request('GET', '/processes?type=special.kind&status=running', { token: t.token })
    expect(none.status).toBe(200)
    expect(none.body).toEqual([])
  })

  it('honours limit and links the next page with before=<last id>, keeping the filters', async () => {
    const res = await request('GET', '/processes?limit=2&status=pending,running,failed,completed', { token: t.token })
    expect(res.body.map((p: { id: number }) => p.id)).toEqual([ids.special, ids.completed])
    const link = res.headers.get('link')!
    const match = /^<([^>]+)>; rel="next"$/.exec(link)
    expect(match).not.toBeNull()
    const next = new URL(match![1]!, 'http://test.local')
    expect(next.pathname).toBe('/processes')
    expect(next.searchParams.get('before')).toBe(String(ids.completed))
    expect(next.searchParams.get('limit')).toBe('2')
    expect(next.searchParams.get('status')).toBe('pending,running,failed,completed')

    const page2 = await request('GET', `${next.pathname}${next.search}`, { token: t.token })
    expect(page2.body.map((p: { id: number }) => p.id)).toEqual([ids.failed, ids.running])
    const last = await request('GET', `/processes?limit=2&before=${ids.running}`, { token: t.token })
    expect(last.body.map((p: { id: number }) => p.id)).toEqual([ids.pending])
    expect(last.headers.get('link')).toBeNull()
  })

  it('sends no Link header when the page holds exactly the rest', async () => {
    const res = await request('GET', '/processes?limit=5', { token: t.token })
    expect(res.body).toHaveLength(5)
    expect(res.headers.get('link')).toBeNull()
  })

  it('pages through 250 processes with no duplicate and no gap, even while new ones arrive', async () => {
    const bulk = await createTenant(sql)
    const created = await sql<{ id: number }[]>`
      insert into processes (workspace_id, type, created_by)
      select ${bulk.workspaceId}, 'bulk', ${bulk.userId} from generate_series(1, 250)
      returning id`
    const expected = created.map((r) => r.id).sort((x, y) => y - x)

    const seen: number[] = []
    let path: string | null = '/processes?limit=60'
    let pages = 0
    while (path) {
      const res = await request('GET', path, { token: bulk.token })
      expect(res.status).toBe(200)
      seen.push(...res.body.map((p: { id: number }) => p.id))
      // Newer work created mid-way must not shift the pages already planned.
      if (pages === 1) await createPending(request, bulk.token, 'bulk')
      const link = res.headers.get('link')
      path = link ? /^<([^>]+)>/.exec(link)![1]! : null
      pages++
    }
    expect(pages).toBe(5)
    expect(seen).toEqual(expected)
    expect(new Set(seen).size).toBe(250)
  })

  it('lists another workspace of the caller when asked by workspace_id, and the first membership by default', async () => {
    const u = await createTenant(sql)
    const second = await createWorkspace(sql, 'second')
    await addMember(sql, u.userId, second.id, 'member')
    const primary = await createPending(request, u.token)
    const secondary = await request('POST', '/processes', { token: u.token, body: { type: 'elsewhere', workspace_id: second.id } })
    expect(secondary.status).toBe(201)
    expect(secondary.body.workspace_id).toBe(second.id)
    const listed = await request('GET', `/processes?workspace_id=${second.id}`, { token: u.token })
    expect(listed.status).toBe(200)
    expect(listed.body.map((p: { id: number }) => p.id)).toEqual([secondary.body.id])
    const byDefault = await request('GET', '/processes', { token: u.token })
    expect(byDefault.body.map((p: { id: number }) => p.id)).toEqual([primary.id])
  })
})

describe('GET /processes/:id', () => {
  it('returns the full process with numeric ids and an ETag from its version', async () => {
    const p = await processIn(sql, request, a.token, 'completed')
    const res = await request('GET', `/processes/${p.id}`, { token: a.token })
    expect(res.status).toBe(200)
    expect(res.body).toEqual(p)
    expect(res.body.metadata).toEqual({ source: 'test' })
    expect(res.body.result_summary).toEqual({ rows: 3 })
    expect(res.body).not.toHaveProperty('heartbeat_at')
    for (const key of ['id', 'workspace_id', 'version', 'progress', 'attempts', 'created_by']) expect(typeof res.body[key]).toBe('number')
    expect(res.headers.get('etag')).toBe(`"${p.version}"`)
  })

  it('renders the same process as the rest of the API (Postgres writes this JSON), whatever its text holds', async () => {
    const metadata = {
      file: 'naïve "quoted" \\ back\\slash\n\t✓ 🚀',
      nested: { list: [1, 2.5, -3e-7, true, null, { deep: 'x' }], empty: {} },
      big: 1234567890123,
    }
    const created = await request('POST', '/processes', { token: a.token, body: { type: uniqueType(), metadata } })
    const running = (await claimNext(sql, { workerId: WORKER_ID, types: [created.body.type], max: 1 }))[0] ?? null
    await appendLog(sql, running!.id, { workerId: WORKER_ID, attempt: running!.attempts, message: 'line "one"\nline <two> & ü' })
    const res = await request('GET', `/processes/${created.body.id}`, { token: a.token })
    expect(res.status).toBe(200)
    const [fromRows] = await getProcesses(sql, [created.body.id])
    expect(res.body).toEqual(fromRows!)
    expect(res.body.metadata).toEqual(metadata)
    expect(res.body.message).toBe('line "one"\nline <two> & ü')
    for (const key of ['created_at', 'updated_at', 'started_at']) expect(res.body[key]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    expect(res.body.finished_at).toBeNull()
    expect(Object.keys(res.body).sort()).toEqual(Object.keys(fromRows!).sort())
  })

  it('answers a matching If-None-Match with 304 and no body', async () => {
    const p = await createPending(request, a.token)
    for (const header of ['"1"', 'W/"1"', '"7", "1"', '"7",W/"1"', '*']) {
      const response = await raw('GET', `/processes/${p.id}`, { token: a.token, headers: { 'if-none-match': header } })
      expect(response.status).toBe(304)
      expect(await response.text()).toBe('')
      expect(response.headers.get('etag')).toBe('"1"')
    }
  })

  it('answers a stale If-None-Match with 200 and the new ETag after a change', async () => {
    const p = await createPending(request, a.token)
    const first = await request('GET', `/processes/${p.id}`, { token: a.token })
    const etag = first.headers.get('etag')!
    expect((await request('GET', `/processes/${p.id}`, { token: a.token, headers: { 'if-none-match': etag } })).status).toBe(304)
    await request('POST', `/processes/${p.id}/cancel`, { token: a.token })
    const after = await request('GET', `/processes/${p.id}`, { token: a.token, headers: { 'if-none-match': etag } })
    expect(after.status).toBe(200)
    expect(after.body.status).toBe('cancelled')
    expect(after.headers.get('etag')).toBe('"2"')
    expect((await request('GET', `/processes/${p.id}`, { token: a.token, headers: { 'if-none-match': '"2"' } })).status).toBe(304)
  })

  it('changes the ETag on a progress-only change', async () => {
    const p = await processIn(sql, request, a.token, 'running')
    const before = (await request('GET', `/processes/${p.id}`, { token: a.token })).headers.get('etag')
    await appendLog(sql, p.id, { workerId: WORKER_ID, attempt: p.attempts, message: 'half way' })
    const after = await request('GET', `/processes/${p.id}`, { token: a.token, headers: { 'if-none-match': before! } })
    expect(after.status).toBe(200)
    expect(after.body.message).toBe('half way')
  })
})

describe('GET /processes/:id/events', () => {
  it('lists the events ascending, with after and limit', async () => {
    const p = await processIn(sql, request, a.token, 'running')
    for (const line of ['one', 'two', 'three']) await appendLog(sql, p.id, { workerId: WORKER_ID, attempt: p.attempts, message: line })
    const all = await request('GET', `/processes/${p.id}/events`, { token: a.token })
    expect(all.status).toBe(200)
    expect(all.body.map((e: { status: string; message: string }) => [e.status, e.message])).toEqual([
      ['pending', 'Queued'],
      ['running', 'Started'],
      ['running', 'one'],
      ['running', 'two'],
      ['running', 'three'],
    ])
    const eventIds = all.body.map((e: { id: number }) => e.id)
    expect([...eventIds].sort((x: number, y: number) => x - y)).toEqual(eventIds)
    for (const event of all.body) {
      expect(Object.keys(event).sort()).toEqual(['created_at', 'id', 'message', 'stack', 'status'])
      expect(typeof event.id).toBe('number')
    }

    const after = await request('GET', `/processes/${p.id}/events?after=${eventIds[1]}`, { token: a.token })
    expect(after.body.map((e: { id: number }) => e.id)).toEqual(eventIds.slice(2))
    const limited = await request('GET', `/processes/${p.id}/events?limit=2`, { token: a.token })
    expect(limited.body.map((e: { id: number }) => e.id)).toEqual(eventIds.slice(0, 2))
    const both = await request('GET', `/processes/${p.id}/events?after=${eventIds[0]}&limit=2`, { token: a.token })
    expect(both.body.map((e: { id: number }) => e.id)).toEqual(eventIds.slice(1, 3))
    const none = await request('GET', `/processes/${p.id}/events?after=${eventIds[4]}`, { token: a.token })
    expect(none.body).toEqual([])
  })
})

describe('GET /processes/:id/stream', () => {
  it('opens an SSE stream for a visible process', async () => {
    const p = await createPending(request, a.token)
    const response = await raw('GET', `/processes/${p.id}/stream`, { token: a.token })
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toStartWith('text/event-stream')
    expect(response.headers.get('cache-control')).toContain('no-cache')
    const reader = response.body!.getReader()
    let text = ''
    while (!text.includes('data: ')) text += new TextDecoder().decode((await reader.read()).value)
    await reader.cancel()
    expect(text).toStartWith('retry: ')
    expect(text).toContain(`"id":${p.id}`)
  })
})

describe('GET /processes/stream', () => {
  it("opens the workspace stream with the caller's active processes only", async () => {
    const theirs = await createPending(request, a.token)
    const mine = await createPending(request, b.token)
    const response = await raw('GET', '/processes/stream', { token: b.token })
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toStartWith('text/event-stream')
    const reader = response.body!.getReader()
    let text = ''
    while (!text.includes(`"id":${mine.id},`)) text += new TextDecoder().decode((await reader.read()).value)
    await reader.cancel()
    // The snapshot goes in id order, so the other workspace's older process would have come first.
    expect(text).not.toContain(`"id":${theirs.id},`)
    expect(text).not.toContain(`"workspace_id":${a.workspaceId},`)
  })
})

describe('POST /processes', () => {
  it('creates a pending process with 201 and a Location header', async () => {
    const type = uniqueType('create')
    const res = await request('POST', '/processes', { token: a.token, body: { type, metadata: { file: 'a.csv', nested: { n: [1, 2] } } } })
    expect(res.status).toBe(201)
    expect(res.headers.get('location')).toBe(`/processes/${res.body.id}`)
    expect(res.body).toMatchObject({
      type,
      status: 'pending',
      progress: 0,
      workspace_id: a.workspaceId,
      created_by: a.userId,
      metadata: { file: 'a.csv', nested: { n: [1, 2] } },
      result_summary: null,
      error: null,
      attempts: 0,
      version: 1,
      worker_id: null,
      started_at: null,
      finished_at: null,
    })
    expect(typeof res.body.id).toBe('number')
    const got = await request('GET', res.headers.get('location')!, { token: a.token })
    expect(got.body).toEqual(res.body)
  })

  it('defaults metadata to an empty object', async () => {
    const res = await request('POST', '/processes', { token: a.token, body: { type: uniqueType() } })
    expect(res.status).toBe(201)
    expect(res.body.metadata).toEqual({})
  })

  it('replays the first response for a repeated Idempotency-Key and creates nothing', async () => {
    const type = uniqueType('idem')
    const headers = { 'idempotency-key': `key-${type}` }
    const first = await request('POST', '/processes', { token: a.token, headers, body: { type, metadata: { n: 1 } } })
    expect(first.status).toBe(201)
    await request('POST', `/processes/${first.body.id}/cancel`, { token: a.token })
    // The same body: a different one with this key is refused with 422 since the attack pass (tests/security).
    const again = await request('POST', '/processes', { token: a.token, headers, body: { type, metadata: { n: 1 } } })
    expect(again.status).toBe(201)
    expect(again.body).toEqual(first.body)
    expect(again.headers.get('location')).toBe(first.headers.get('location'))
    expect(await countProcesses({ type })).toBe(1)
  })

  it('creates exactly one process for 10 concurrent requests with one Idempotency-Key', async () => {
    const type = uniqueType('idem_race')
    const headers = { 'idempotency-key': `race-${type}` }
    const results = await Promise.all(Array.from({ length: 10 }, () => request('POST', '/processes', { token: a.token, headers, body: { type } })))
    for (const res of results) expect(res.status).toBe(201)
    expect(new Set(results.map((r) => r.body.id)).size).toBe(1)
    expect(await countProcesses({ type })).toBe(1)
  })

  it('keeps the same Idempotency-Key of different users independent', async () => {
    const type = uniqueType('idem_users')
    const headers = { 'idempotency-key': 'shared-key' }
    const mine = await request('POST', '/processes', { token: a.token, headers, body: { type } })
    const theirs = await request('POST', '/processes', { token: b.token, headers, body: { type } })
    expect(mine.status).toBe(201)
    expect(theirs.status).toBe(201)
    expect(theirs.body.id).not.toBe(mine.body.id)
    expect(theirs.body.workspace_id).toBe(b.workspaceId)
    expect(await countProcesses({ type })).toBe(2)
  })

  it('creates a new process for a different Idempotency-Key', async () => {
    const type = uniqueType('idem_two')
    const one = await request('POST', '/processes', { token: a.token, headers: { 'idempotency-key': `${type}-1` }, body: { type } })
    const two = await request('POST', '/processes', { token: a.token, headers: { 'idempotency-key': `${type}-2` }, body: { type } })
    expect(two.body.id).not.toBe(one.body.id)
    expect(await countProcesses({ type })).toBe(2)
  })
})

describe('POST /processes/:id/cancel, retry, review', () => {
  it('cancels a pending process', async () => {
    const p = await createPending(request, a.token)
    const res = await request('POST', `/processes/${p.id}/cancel`, { token: a.token })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ id: p.id, status: 'cancelled', version: 2 })
    expect(res.body.finished_at).not.toBeNull()
  })

  it('retries a failed process back to pending with its run cleared', async () => {
    const p = await processIn(sql, request, a.token, 'failed')
    expect(p.error).toBe('boom')
    const res = await request('POST', `/processes/${p.id}/retry`, { token: a.token })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({
      id: p.id,
      status: 'pending',
      progress: 0,
      error: null,
      result_summary: null,
      started_at: null,
      finished_at: null,
      worker_id: null,
      attempts: 1,
      version: p.version + 1,
    })
  })

  it('approves and discards a process waiting for review', async () => {
    const p = await processIn(sql, request, a.token, 'waiting_review')
    const approved = await request('POST', `/processes/${p.id}/review`, { token: a.token, body: { decision: 'approve', message: 'Looks right' } })
    expect(approved.status).toBe(200)
    expect(approved.body).toMatchObject({ status: 'completed', message: 'Looks right', result_summary: { rows: 3 } })
    const q = await processIn(sql, request, a.token, 'waiting_review')
    const discarded = await request('POST', `/processes/${q.id}/review`, { token: a.token, body: { decision: 'discard' } })
    expect(discarded.status).toBe(200)
    expect(discarded.body.status).toBe('cancelled')
  })

  it('returns 409 when cancelling a completed process', async () => {
    const p = await processIn(sql, request, a.token, 'completed')
    const cancel = await request('POST', `/processes/${p.id}/cancel`, { token: a.token })
    expectError(cancel, 409, 'invalid_transition')
    expect(cancel.body.error.message).toBe('This process is already completed; only pending or running processes can be cancelled.')
    expect(cancel.body.error.details).toEqual({ status: 'completed', to: 'cancelled' })
    const retry = await request('POST', `/processes/${p.id}/retry`, { token: a.token })
    expect(retry.body.error.message).toBe('This process is already completed; only failed processes can be retried.')
  })

  it('returns 409 when reviewing a process that is not waiting for review', async () => {
    const p = await processIn(sql, request, a.token, 'running')
    const approve = await request('POST', `/processes/${p.id}/review`, { token: a.token, body: { decision: 'approve' } })
    expectError(approve, 409, 'invalid_transition')
    expect(approve.body.error.message).toBe('This process is running; only processes waiting for review can be approved.')
    const discard = await request('POST', `/processes/${p.id}/review`, { token: a.token, body: { decision: 'discard' } })
    expect(discard.body.error.message).toBe('This process is running; only processes waiting for review can be discarded.')
    expect(discard.body.error.details).toEqual({ status: 'running', to: 'cancelled' })
  })
})

describe('workspace isolation', () => {
  it("answers 404 on every route for another workspace's process and leaves it untouched", async () => {
    for (const status of ['pending', 'failed', 'waiting_review'] as const) {
      const p = await processIn(sql, request, a.token, status)
      const own = await request('GET', `/processes/${p.id}`, { token: a.token })
      const checks = [
        await request('GET', `/processes/${p.id}`, { token: b.token }),
        await request('GET', `/processes/${p.id}`, { token: b.token, headers: { 'if-none-match': `"${p.version}"` } }),
        await request('GET', `/processes/${p.id}/events`, { token: b.token }),
        await request('GET', `/processes/${p.id}/stream`, { token: b.token }),
        await request('POST', `/processes/${p.id}/retry`, { token: b.token }),
        await request('POST', `/processes/${p.id}/cancel`, { token: b.token }),
        await request('POST', `/processes/${p.id}/review`, { token: b.token, body: { decision: 'approve' } }),
        await request('POST', `/processes/${p.id}/review`, { token: b.token, body: { decision: 'discard' } }),
      ]
      for (const res of checks) {
        expectError(res, 404, 'not_found')
        expect(JSON.stringify(res.body)).not.toContain(status)
      }
      const after = await request('GET', `/processes/${p.id}`, { token: a.token })
      expect(after.body).toEqual(own.body)
    }
  })

  it("never lists another workspace's processes", async () => {
    const p = await createPending(request, a.token)
    const mine = await request('GET', '/processes?limit=200', { token: b.token })
    expect(mine.status).toBe(200)
    expect(mine.body.map((x: { id: number }) => x.id)).not.toContain(p.id)
    for (const item of mine.body) expect(item.workspace_id).toBe(b.workspaceId)
    const filtered = await request('GET', `/processes?type=${p.type}`, { token: b.token })
    expect(filtered.body).toEqual([])
    expectError(await request('GET', `/processes?workspace_id=${a.workspaceId}`, { token: b.token }), 403, 'forbidden')
  })
})
