// Input handling (README: API, errors): whatever a client sends is answered with the API's 4xx, never a 500, a hang or a
// blocked server — deep nesting, bodies whatever their Content-Type, numbers in paths and queries, unknown
// query parameters, HEAD, odd Host headers, CORS — through the in-process handler, and over real sockets
// (fetch, raw TCP) where the socket is the point.
import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { connect } from 'node:net'
import { createHandler } from '../../src/app'
import { Logger } from '../../src/ops/log'
import { buildServices } from '../../src/server'
import { createTenant, inProcessApp, listeningServer, requester, testConfig, waitFor, workerToken, type Tenant } from '../support/helpers'
import { createPending, processIn } from './drive'

const ORIGIN = 'http://app.example'
const { s, db, handle, request } = await inProcessApp({ CORS_ORIGINS: ORIGIN })
const { sql } = s
const server = await listeningServer({ CORS_ORIGINS: ORIGIN }, db)

let a: Tenant
beforeAll(async () => {
  a = await createTenant(sql)
})

function expectError(res: { status: number; body: any }, status: number, code: string) {
  expect({ status: res.status, code: res.body?.error?.code }).toEqual({ status, code })
  expect(typeof res.body.error.message).toBe('string')
}

const countOfType = async (type: string) => (await sql<{ n: number }[]>`select count(*)::int as n from processes where type = ${type}`)[0]!.n

/** `levels` arrays nested in one another: `[[[…]]]`. */
const arrays = (levels: number) => '['.repeat(levels) + ']'.repeat(levels)

describe('deeply nested JSON', () => {
  it('refuses arrays nested beyond 64 levels in any field of any body at once, with 422 naming the limit', async () => {
    const p = await processIn(sql, request, a.token, 'waiting_review')
    const cases: Array<[string, string, string]> = [
      ['/processes', `{"type":${arrays(20_000)}}`, '/type'],
      ['/processes', `{"type":"csv_import","metadata":${arrays(100_000)}}`, '/metadata'],
      ['/processes', `{"type":"csv_import","metadata":{"a":${arrays(20_000)}}}`, '/metadata'],
      ['/processes', `{"type":"csv_import","workspace_id":${arrays(20_000)}}`, '/workspace_id'],
      [`/processes/${p.id}/review`, `{"decision":${arrays(20_000)}}`, '/decision'],
      ['/processes', arrays(100_000), '/'],
    ]
    for (const [path, body, field] of cases) {
      const started = performance.now()
      const res = await request('POST', path, { token: a.token, body })
      const ms = performance.now() - started
      expectError(res, 422, 'invalid_request')
      expect(res.body.error.message).toContain('nested deeper than 64 levels')
      expect(res.body.error.details).toEqual([{ path: field, message: 'nested deeper than 64 levels' }])
      // Seconds before (TypeBox and Elysia's error report walk the whole nest); a scan of the text now.
      expect({ path, field, ms: ms < 250 }).toEqual({ path, field, ms: true })
    }
    expect(await countOfType('csv_import')).toBe(0)
    expect((await request('GET', `/processes/${p.id}`, { token: a.token })).body.status).toBe('waiting_review')
  })

  it('counts arrays and objects alike: 64 levels of metadata are stored, 65 are refused', async () => {
    // metadata is level 1, as in the rule for metadata itself: {"a": …} puts `a`'s value at level 2.
    const mixed = (levels: number) => `${'[{"k":'.repeat(levels / 2)}1${'}]'.repeat(levels / 2)}`
    const ok = await request('POST', '/processes', { token: a.token, body: `{"type":"nest_ok","metadata":{"a":${mixed(62)},"b":${arrays(63)}}}` })
    expect(ok.status).toBe(201)
    const refused = await request('POST', '/processes', { token: a.token, body: `{"type":"nest_no","metadata":{"a":${mixed(64)}}}` })
    expectError(refused, 422, 'invalid_request')
    expect(refused.body.error.message).toBe('Invalid body /metadata: nested deeper than 64 levels')
  })

  it('does not count brackets inside strings, escaped quotes included', async () => {
    // JSON text: an escaped quote, 5000 brackets, another escaped quote, an escaped backslash before the end.
    const text = `\\"${'['.repeat(5000)}{\\"\\\\`
    const res = await request('POST', '/processes', { token: a.token, body: `{"type":"nest_strings","metadata":{"${'{'.repeat(100)}":"${text}"}}` })
    expect(res.status).toBe(201)
    expect(res.body.metadata['{'.repeat(100)]).toBe(JSON.parse(`"${text}"`))
  })

  it('keeps answering other requests while it refuses a 200 KB nest', async () => {
    const p = await createPending(request, a.token)
    const auth = { authorization: `Bearer ${a.token}`, 'content-type': 'application/json' }
    const started = performance.now()
    const timed = async (response: Promise<Response>) => {
      const r = await response
      return { status: r.status, ms: performance.now() - started, body: await r.text() }
    }
    const [refused, other] = await Promise.all([
      timed(fetch(`${server.url}/processes`, { method: 'POST', headers: auth, body: `{"type":"csv_import","metadata":${arrays(100_000)}}` })),
      Bun.sleep(5).then(() => timed(fetch(`${server.url}/processes/${p.id}`, { headers: auth }))),
    ])
    expect(refused.status).toBe(422)
    expect(other.status).toBe(200)
    // Generous bounds for a loaded machine: before, the nest held the event loop for ~9 s.
    expect(refused.ms).toBeLessThan(1000)
    expect(other.ms).toBeLessThan(1000)
  })
})

describe('bodies: JSON whatever the Content-Type', () => {
  const body = (type: string) => JSON.stringify({ type, metadata: { n: 1 } })

  it('creates a process from a JSON body sent with any Content-Type or none', async () => {
    for (const contentType of [
      null,
      'application/json',
      'application/json; charset=utf-8',
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'garbage',
    ]) {
      const type = `ct_${(contentType ?? 'none').replace(/[^a-z]/g, '_')}`
      const headers = new Headers({ authorization: `Bearer ${a.token}` })
      if (contentType) headers.set('content-type', contentType)
      const res = await handle(new Request('http://test.local/processes', { method: 'POST', headers, body: body(type) }))
      expect({ contentType, status: res.status }).toEqual({ contentType, status: 201 })
      expect((await res.json()).metadata).toEqual({ n: 1 })
    }
  })

  it('works as `curl -d` sends it (form-urlencoded), over a socket', async () => {
    const res = await fetch(`${server.url}/processes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: body('curl_d'),
    })
    expect(res.status).toBe(201)
    expect((await res.json()).type).toBe('curl_d')
  })

  it('answers 400 bad_request to an empty body or one that is not JSON, whatever the Content-Type', async () => {
    const form = new FormData()
    form.set('type', 'bad_form')
    const cases: Array<[BodyInit, string | null]> = [
      ['', 'application/json'],
      ['', null],
      ['   ', 'application/json'],
      ['type=bad_form', 'application/x-www-form-urlencoded'],
      [form, null],
      ['{"type":"bad_text"', 'text/plain'],
      ['not json', 'application/json'],
    ]
    for (const [sent, contentType] of cases) {
      const headers = new Headers({ authorization: `Bearer ${a.token}` })
      if (contentType) headers.set('content-type', contentType)
      const response = await handle(new Request('http://test.local/processes', { method: 'POST', headers, body: sent }))
      const res = { status: response.status, body: await response.json() }
      expectError(res, 400, 'bad_request')
    }
    const p = await processIn(sql, request, a.token, 'waiting_review')
    expectError(
      await request('POST', `/processes/${p.id}/review`, {
        token: a.token,
        body: 'decision=approve',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      }),
      400,
      'bad_request',
    )
    expectError(
      await request('POST', `/processes/${p.id}/review`, { token: a.token, body: '', headers: { 'content-type': 'application/json' } }),
      400,
      'bad_request',
    )
    expect(await countOfType('bad_form')).toBe(0)
  })

  it('still answers an anonymous caller 401 before looking at the body', async () => {
    for (const body of ['', 'not json', `{"type":${arrays(20_000)}}`]) {
      expectError(await request('POST', '/processes', { body, headers: { 'content-type': 'text/plain' } }), 401, 'unauthenticated')
    }
  })

  it('ignores any body on retry and cancel', async () => {
    const failed = await processIn(sql, request, a.token, 'failed')
    const retried = await request('POST', `/processes/${failed.id}/retry`, {
      token: a.token,
      body: 'not json',
      headers: { 'content-type': 'application/json' },
    })
    expect(retried.status).toBe(200)
    expect(retried.body.status).toBe('pending')
    const cancelled = await request('POST', `/processes/${failed.id}/cancel`, {
      token: a.token,
      body: arrays(100_000),
      headers: { 'content-type': 'text/plain' },
    })
    expect(cancelled.status).toBe(200)
    expect(cancelled.body.status).toBe('cancelled')
  })
})

describe('numbers in paths, queries and bodies', () => {
  let id: number
  beforeAll(async () => {
    id = (await createPending(request, a.token)).id
  })

  /** The same number as Number() would read it, but not as a plain decimal. */
  const variants = (n: number) => [
    `0x${n.toString(16)}`,
    `0b${n.toString(2)}`,
    `0o${n.toString(8)}`,
    `${n}e0`,
    `${n}.0`,
    `+${n}`,
    `0${n}`,
    `%20${n}`,
    `${n}%20`,
    `%09${n}`,
  ]

  it('answers 422 naming /id to an id that is not a plain decimal, on every id route', async () => {
    expect((await request('GET', `/processes/${id}`, { token: a.token })).status).toBe(200)
    for (const odd of variants(id)) {
      for (const [method, path, body] of [
        ['GET', `/processes/${odd}`],
        ['GET', `/processes/${odd}/events`],
        ['GET', `/processes/${odd}/stream`],
        ['POST', `/processes/${odd}/retry`],
        ['POST', `/processes/${odd}/cancel`],
        ['POST', `/processes/${odd}/review`, { decision: 'approve' }],
      ] as const) {
        const res = await request(method, path, { token: a.token, body })
        expect({ path, status: res.status }).toEqual({ path, status: 422 })
        expect(res.body.error.code).toBe('invalid_request')
        expect(res.body.error.message).toStartWith('Invalid path parameter /id: ')
        expect(res.body.error.details[0].path).toBe('/id')
      }
    }
    expect((await request('GET', `/processes/${id}`, { token: a.token })).body.status).toBe('pending')
  })

  it('answers 422 naming the field to a numeric query value that is not a plain decimal, or out of bounds', async () => {
    const cases: Array<[string, string]> = [
      ['/processes?limit=0x10', '/limit'],
      ['/processes?limit=1e1', '/limit'],
      ['/processes?limit=+5', '/limit'],
      ['/processes?limit=05', '/limit'],
      ['/processes?limit=%205', '/limit'],
      ['/processes?limit=0', '/limit'],
      ['/processes?limit=201', '/limit'],
      [`/processes?workspace_id=0x${a.workspaceId.toString(16)}`, '/workspace_id'],
      [`/processes?workspace_id=${a.workspaceId}.0`, '/workspace_id'],
      ['/processes?before=1e3', '/before'],
      ['/processes?before=0', '/before'],
      [`/processes/stream?workspace_id=+${a.workspaceId}`, '/workspace_id'],
      [`/processes/${id}/events?after=0x1`, '/after'],
      [`/processes/${id}/events?after=00`, '/after'],
      [`/processes/${id}/events?after=-1`, '/after'],
      [`/processes/${id}/events?limit=1001`, '/limit'],
    ]
    for (const [path, field] of cases) {
      const res = await request('GET', path, { token: a.token })
      expect({ path, status: res.status }).toEqual({ path, status: 422 })
      expect(res.body.error.message).toStartWith(`Invalid query parameter ${field}: must be a decimal integer from `)
      expect(res.body.error.details).toEqual([{ path: field, message: expect.stringMatching(/^must be a decimal integer from \d+ to \d+$/) }])
    }
  })

  it('accepts plain decimals within the bounds, and 0 where the minimum is 0', async () => {
    for (const path of [
      '/processes?limit=1',
      '/processes?limit=200',
      `/processes?workspace_id=${a.workspaceId}&before=${id + 1}`,
      `/processes/${id}/events?after=0&limit=1000`,
    ]) {
      expect({ path, status: (await request('GET', path, { token: a.token })).status }).toEqual({ path, status: 200 })
    }
    const page = await request('GET', `/processes?limit=1&before=${id + 1}`, { token: a.token })
    expect(page.body.map((p: { id: number }) => p.id)).toEqual([id])
  })

  it('takes workspace_id in a body as a JSON integer only', async () => {
    for (const workspace_id of [String(a.workspaceId), `0x${a.workspaceId}`, a.workspaceId + 0.5, [a.workspaceId]]) {
      const res = await request('POST', '/processes', { token: a.token, body: { type: 'ws_typed', workspace_id } })
      expectError(res, 422, 'invalid_request')
      expect(res.body.error.details[0].path).toBe('/workspace_id')
    }
    expect(await countOfType('ws_typed')).toBe(0)
    const ok = await request('POST', '/processes', { token: a.token, body: `{"type":"ws_typed","workspace_id":${a.workspaceId}}` })
    expect(ok.status).toBe(201)
    expect(ok.body.workspace_id).toBe(a.workspaceId)
  })

  it('documents ids, limits and integer fields as integers in the OpenAPI document', async () => {
    const doc = (await request('GET', '/openapi/json')).body
    const param = (path: string, name: string) => doc.paths[path].get.parameters.find((p: { name: string }) => p.name === name).schema
    expect(param('/processes/{id}', 'id')).toEqual({ type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER })
    expect(param('/processes', 'limit')).toEqual({ type: 'integer', minimum: 1, maximum: 200, default: 50 })
    expect(param('/processes', 'before')).toEqual({ type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER })
    expect(param('/processes/{id}/events', 'after')).toEqual({ type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER })
    const process = doc.paths['/processes/{id}'].get.responses['200'].content['application/json'].schema
    expect(process.properties.id).toEqual({ type: 'integer' })
    expect(process.properties.progress).toEqual({ type: 'integer', minimum: 0, maximum: 100 })
    expect(JSON.stringify(doc)).not.toContain('"format":"numeric"')
    const create = doc.paths['/processes'].post.requestBody.content
    expect(Object.keys(create)).toEqual(['application/json'])
    expect(create['application/json'].schema.properties.workspace_id).toEqual({ type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER })
    expect(Object.keys(doc.paths['/processes/{id}/review'].post.requestBody.content)).toEqual(['application/json'])
  })
})

describe('query parameters', () => {
  /** Reads an SSE response up to its first `data:` line, then lets it go. */
  async function firstData(response: Response) {
    expect(response.headers.get('content-type')).toStartWith('text/event-stream')
    const reader = response.body!.getReader()
    let text = ''
    while (!text.includes('\ndata: ')) {
      const { value, done } = await reader.read()
      if (done) break
      text += new TextDecoder().decode(value)
    }
    await reader.cancel()
    return text
  }
  const get = (path: string, headers: Record<string, string> = {}) =>
    handle(new Request(`http://test.local${path}`, { headers: { authorization: `Bearer ${a.token}`, ...headers } }))

  it('ignores unknown query parameters on every route, like an EventSource cache-buster', async () => {
    const p = await createPending(request, a.token)
    for (const path of ['/processes', `/processes/${p.id}`, `/processes/${p.id}/events`]) {
      const res = await get(`${path}?_=1712345678901&utm_source=x`)
      expect({ path, status: res.status }).toEqual({ path, status: 200 })
    }
    for (const path of [`/processes/${p.id}/stream`, '/processes/stream']) {
      const res = await get(`${path}?_=123`)
      expect({ path, status: res.status }).toEqual({ path, status: 200 })
      expect(await firstData(res)).toContain(`"id":${p.id}`)
    }
  })

  it('still validates the known ones next to unknown ones', async () => {
    const p = await createPending(request, a.token)
    for (const path of ['/processes?_=1&limit=0', `/processes/${p.id}/events?_=1&after=x`, '/processes/stream?_=1&status=bogus']) {
      expect({ path, status: (await get(path)).status }).toEqual({ path, status: 422 })
    }
  })

  it('answers any last_event_id, however long or odd, with the snapshot', async () => {
    const p = await createPending(request, a.token)
    for (const value of ['x'.repeat(500), '9'.repeat(65), '1'.repeat(200), '-1', '%00']) {
      const res = await get(`/processes/${p.id}/stream?last_event_id=${encodeURIComponent(value)}`)
      expect({ value: value.slice(0, 10), status: res.status }).toEqual({ value: value.slice(0, 10), status: 200 })
      expect(await firstData(res)).toContain(`"version":${p.version}`)
      const all = await get(`/processes/stream?last_event_id=${encodeURIComponent(value)}`)
      expect(all.status).toBe(200)
      await all.body!.cancel()
    }
  })
})

describe('HEAD', () => {
  const openStreams = async () => {
    const text = await (await fetch(server.metricsUrl!)).text()
    return Number(/^processes_sse_streams_open (\d+)$/m.exec(text)![1])
  }

  it('answers HEAD on an SSE stream at once, with its headers and no body, and leaves no stream open', async () => {
    const p = await createPending(request, a.token)
    await waitFor(async () => (await openStreams()) === 0, 5000, 'no stream open before')
    const started = performance.now()
    // SSE_MAX_MS is the default 25 s: a HEAD held for the window would time out here.
    const res = await fetch(`${server.url}/processes/${p.id}/stream`, {
      method: 'HEAD',
      headers: { authorization: `Bearer ${a.token}` },
      signal: AbortSignal.timeout(5000),
    })
    expect(performance.now() - started).toBeLessThan(1000)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toStartWith('text/event-stream')
    expect(await res.text()).toBe('')
    await waitFor(async () => (await openStreams()) === 0, 2000, 'the HEAD stream to close')
  })

  it('answers HEAD on the JSON routes with the GET status and headers and no body, errors included', async () => {
    const p = await createPending(request, a.token)
    const head = (path: string, token: string | null = a.token) =>
      handle(new Request(`http://test.local${path}`, { method: 'HEAD', headers: token ? { authorization: `Bearer ${token}` } : {} }))
    const one = await head(`/processes/${p.id}`)
    expect(one.status).toBe(200)
    expect(one.headers.get('etag')).toBe(`"${p.version}"`)
    expect(one.headers.get('content-type')).toStartWith('application/json')
    expect(await one.text()).toBe('')
    for (const [path, token, status] of [
      ['/processes', a.token, 200],
      ['/processes/987654321', a.token, 404],
      ['/processes/0x1', a.token, 422],
      [`/processes/${p.id}`, null, 401],
      ['/health', null, 200],
    ] as const) {
      const res = await head(path, token)
      expect({ path, status: res.status }).toEqual({ path, status })
      expect(await res.text()).toBe('')
    }
    const over = await fetch(`${server.url}/processes/${p.id}`, { method: 'HEAD', headers: { authorization: `Bearer ${a.token}` } })
    expect(over.status).toBe(200)
    expect(over.headers.get('etag')).toBe(`"${p.version}"`)
  })
})

describe('odd Host headers, over raw TCP', () => {
  /** One request on its own connection, as written; the response parsed (chunked bodies joined). */
  function rawRequest(text: string): Promise<{ status: number; headers: Record<string, string>; body: string }> {
    return new Promise((resolve, reject) => {
      const socket = connect(Number(new URL(server.url).port), '127.0.0.1', () => socket.write(text))
      const chunks: Buffer[] = []
      socket.on('data', (chunk: Buffer) => chunks.push(chunk))
      socket.on('error', reject)
      socket.setTimeout(5000, () => socket.destroy(new Error('no answer within 5 s')))
      socket.on('close', () => {
        const raw = Buffer.concat(chunks).toString()
        const split = raw.indexOf('\r\n\r\n')
        const [statusLine, ...lines] = raw.slice(0, split).split('\r\n')
        const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]))
        let body = raw.slice(split + 4)
        if (headers['transfer-encoding'] === 'chunked') {
          let joined = ''
          for (let at = 0; ; ) {
            const eol = body.indexOf('\r\n', at)
            const size = parseInt(body.slice(at, eol), 16)
            if (!size) break
            joined += body.slice(eol + 2, eol + 2 + size)
            at = eol + 2 + size + 2
          }
          body = joined
        }
        resolve({ status: Number(statusLine!.split(' ')[1]), headers, body })
      })
    })
  }

  const hosts: Array<[string, string]> = [
    ['no Host (HTTP/1.0)', ''],
    ['an empty Host', 'Host: \r\n'],
    ['Host: [::1', 'Host: [::1\r\n'],
    ['Host: a b', 'Host: a b\r\n'],
    ['Host: a:b', 'Host: a:b\r\n'],
    ['Host: x', 'Host: x\r\n'],
    ['Host: :80', 'Host: :80\r\n'],
  ]

  it('routes a request by its path whatever its Host: 401 without a token, 200 with one', async () => {
    const p = await createPending(request, a.token)
    for (const [name, host] of hosts) {
      const anonymous = await rawRequest(`GET /processes/${p.id} HTTP/1.0\r\n${host}\r\n`)
      expect({ name, status: anonymous.status }).toEqual({ name, status: 401 })
      expect(JSON.parse(anonymous.body).error.code).toBe('unauthenticated')
      const res = await rawRequest(`GET /processes/${p.id}?x=1 HTTP/1.0\r\n${host}Authorization: Bearer ${a.token}\r\n\r\n`)
      expect({ name, status: res.status }).toEqual({ name, status: 200 })
      expect(JSON.parse(res.body).id).toBe(p.id)
    }
  })

  it('keeps the query, builds the Link header and takes a body behind an odd Host', async () => {
    await createPending(request, a.token)
    await createPending(request, a.token)
    for (const [name, host] of hosts) {
      const list = await rawRequest(`GET /processes?limit=1 HTTP/1.0\r\n${host}Authorization: Bearer ${a.token}\r\n\r\n`)
      expect({ name, status: list.status }).toEqual({ name, status: 200 })
      expect(JSON.parse(list.body)).toHaveLength(1)
      expect(list.headers.link).toMatch(/^<\/processes\?limit=1&before=\d+>; rel="next"$/)
      const body = JSON.stringify({ type: 'odd_host' })
      const created = await rawRequest(`POST /processes HTTP/1.0\r\n${host}Authorization: Bearer ${a.token}\r\nContent-Length: ${body.length}\r\n\r\n${body}`)
      expect({ name, status: created.status }).toEqual({ name, status: 201 })
      const chunked = await rawRequest(
        `POST /processes HTTP/1.1\r\n${host}Authorization: Bearer ${a.token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`,
      )
      // HTTP/1.1 without a Host is refused by Bun itself (400), before the app.
      expect({ name, status: chunked.status }).toEqual({ name, status: host === '' ? 400 : 201 })
    }
  })
})

describe('CORS', () => {
  it('exposes every response header the README documents to a cross-origin caller', async () => {
    const res = await request('POST', '/processes', {
      token: a.token,
      body: { type: 'cors' },
      headers: { origin: ORIGIN, 'idempotency-key': `cors-${Date.now()}` },
    })
    expect(res.status).toBe(201)
    expect(res.headers.get('access-control-allow-origin')).toBe(ORIGIN)
    const exposed = res.headers
      .get('access-control-expose-headers')!
      .split(',')
      .map((h) => h.trim().toLowerCase())
    for (const header of ['etag', 'link', 'location', 'x-request-id', 'idempotent-replayed']) expect(exposed).toContain(header)
  })
})

// ── What a user reads when a request is wrong ──────────────────────────────
// In their words: the allowed values of an enum, a missing field said once, what a pattern means (never the
// regex), the wrong kind of token named, 405 with `Allow` for a wrong method, the stats window's one default,
// and a cross-origin refusal the operator can see.

const as = (method: string, path: string, body?: unknown) => request(method, path, { token: a.token, body })

/** 422 invalid_request whose message and single detail say `reason` about `path`. */
async function expectInvalid(response: Promise<{ status: number; body: any }>, where: string, path: string, reason: string) {
  const { status, body } = await response
  expect({ status, code: body.error.code }).toEqual({ status: 422, code: 'invalid_request' })
  expect(body.error.message).toBe(`Invalid ${where} ${path}: ${reason}`)
  expect(body.error.details).toEqual([{ path, message: reason }])
  expect(body.error.message).not.toMatch(/[\^$]|\{0,|\[a-z/) // no regex
}

describe('validation messages', () => {
  it('lists the allowed statuses for a bad ?status=', async () => {
    const reason = 'must be one of pending, running, waiting_review, completed, failed, cancelled (or several, comma-separated)'
    await expectInvalid(as('GET', '/processes?status=done'), 'query parameter', '/status', reason)
    await expectInvalid(as('GET', '/processes/stream?status=running,done'), 'query parameter', '/status', reason)
  })

  it('says what a type may be, not its pattern', async () => {
    const reason = 'must be lowercase letters, digits, _ . -, starting with a letter, ≤ 64 chars'
    await expectInvalid(as('POST', '/processes', { type: 'CSV Import' }), 'body', '/type', reason)
    await expectInvalid(as('GET', '/processes?type=Bad'), 'query parameter', '/type', reason)
  })

  it('reports a missing field once, at its path', async () => {
    await expectInvalid(as('POST', '/processes', {}), 'body', '/type', 'is required')
    await expectInvalid(as('POST', '/processes/batch', { processes: [{ type: 'ok' }, {}] }), 'body', '/processes/1/type', 'is required')
  })

  it('lists the decisions a review takes', async () => {
    await expectInvalid(as('POST', '/processes/1/review', { decision: 'maybe' }), 'body', '/decision', 'must be one of approve, discard')
    await expectInvalid(as('POST', '/processes/1/review', {}), 'body', '/decision', 'is required')
  })

  it('lists the stats windows, and answers 24h without one, as the README says', async () => {
    await expectInvalid(as('GET', '/processes/stats?window=2h'), 'query parameter', '/window', 'must be one of 1h, 6h, 24h, 7d')
    const { status, body } = await as('GET', '/processes/stats')
    expect(status).toBe(200)
    expect({ window: body.window, bucket_seconds: body.bucket_seconds, buckets: body.buckets.length }).toEqual({
      window: '24h',
      bucket_seconds: 3600,
      buckets: 24,
    })
  })

  it('names the expected JSON type and unknown fields', async () => {
    await expectInvalid(as('POST', '/processes', { type: 'ok', metadata: 3 }), 'body', '/metadata', 'must be a JSON object')
    await expectInvalid(as('POST', '/processes', { type: 'ok', colour: 'red' }), 'body', '/colour', 'is not a field this route takes')
    await expectInvalid(as('POST', '/processes', { type: 'ok', max_attempts: 101 }), 'body', '/max_attempts', 'must be at most 100')
  })
})

describe('the wrong kind of token', () => {
  it('a worker token on a REST route: 401 saying it is a worker token and REST needs an API token', async () => {
    const { status, body, headers } = await request('GET', '/processes', { token: await workerToken(sql) })
    expect(status).toBe(401)
    expect(headers.get('www-authenticate')).toBe('Bearer')
    expect(body.error.message).toContain('This is a worker token')
    expect(body.error.message).toContain('REST routes need an API token')
  })

  it('an API token on /workers/ws: 401 saying /workers/ws needs a worker token', async () => {
    const response = await fetch(`${server.url}/workers/ws`, { headers: { authorization: `Bearer ${a.token}` } })
    expect(response.status).toBe(401)
    const body = (await response.json()) as any
    expect(body.error.message).toContain('This is an API token')
    expect(body.error.message).toContain('/workers/ws needs a worker token')
  })
})

describe('a wrong method on a known path', () => {
  it('is 405 method_not_allowed with Allow, not "No such route"', async () => {
    const cases: Array<[string, string, string]> = [
      ['DELETE', '/processes/1', 'GET, HEAD'],
      ['GET', '/processes/1/cancel', 'POST'],
      ['PUT', '/processes', 'GET, HEAD, POST'],
      ['POST', '/health', 'GET, HEAD'],
      ['GET', '/auth/session', 'DELETE, POST'],
    ]
    for (const [method, path, allow] of cases) {
      const { status, body, headers } = await request(method, path)
      expect({ method, path, status, code: body.error.code, allow: headers.get('allow') }).toEqual({
        method,
        path,
        status: 405,
        code: 'method_not_allowed',
        allow,
      })
      expect(body.error.message).toBe(`${method} is not allowed here; this path takes ${allow}`)
    }
    expect((await request('GET', '/no/such/path')).status).toBe(404)
  })
})

describe('a cross-origin request from an origin CORS_ORIGINS does not list', async () => {
  const lines: string[] = []
  const { services } = await buildServices(testConfig({ CORS_ORIGINS: 'https://app.example.com' }), {
    db,
    log: new Logger('warn', (text) => lines.push(...text.trimEnd().split('\n'))),
  })
  afterAll(() => services.audit.stop())
  const handle = createHandler(services)
  const cross = requester(handle)
  const refusals = () => lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'cross-origin request refused')

  it('is logged naming the origin and CORS_ORIGINS, and a preflight is 403 saying why', async () => {
    const origin = 'https://evil.example.net'
    const preflight = await cross('OPTIONS', '/processes/1/stream', { headers: { origin, 'access-control-request-method': 'GET' } })
    expect(preflight.status).toBe(403)
    expect(preflight.headers.get('access-control-allow-origin')).toBeNull()
    expect(preflight.body.error.message).toBe(`Origin ${origin} is not allowed cross-origin (CORS_ORIGINS is "https://app.example.com")`)
    services.log.flush()
    expect(refusals()).toEqual([
      expect.objectContaining({ level: 'warn', origin, method: 'OPTIONS', route: '/processes/:id/stream', CORS_ORIGINS: 'https://app.example.com' }),
    ])
    expect(refusals()[0].hint).toContain(`add ${origin} to CORS_ORIGINS`)

    // The actual request from another refused origin is answered (without CORS headers) and logged once a minute.
    for (let i = 0; i < 3; i++) {
      const simple = await cross('GET', '/health', { headers: { origin: 'http://localhost:5173' } })
      expect(simple.status).toBe(200)
      expect(simple.headers.get('access-control-allow-origin')).toBeNull()
    }
    services.log.flush()
    expect(refusals().map((l) => [l.origin, l.method])).toEqual([
      [origin, 'OPTIONS'],
      ['http://localhost:5173', 'GET'],
    ])
  })

  it('says nothing about listed origins or same-origin requests', async () => {
    const before = refusals().length
    expect((await cross('OPTIONS', '/processes', { headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST' } })).status).toBe(204)
    expect((await cross('GET', '/health', { headers: { origin: 'http://test.local', host: 'test.local' } })).status).toBe(200)
    services.log.flush()
    expect(refusals().length).toBe(before)
  })
})
